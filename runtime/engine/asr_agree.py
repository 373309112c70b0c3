"""What a streaming recognizer commits from successive decodings of one window.

Whisper decodes a window's audio again each time more of it has been heard; the text it gives
for the same words can change with the audio that follows them (tiny models most). `Agreement`
decides which words are final: whisper-streaming's LocalAgreement-2 (Machacek et al., 2023:
commit the longest prefix on which two consecutive hypotheses agree), over token ids, cut where
a word starts, limited to words a decoding has heard to their utterance's end, with a lag bound.
It is pure (token lists and sample counts in, token lists out), so its rules are tested alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Agreement", "word_starts"]


class Agreement:
    """What to commit from successive hypotheses of one window (whisper-streaming's
    LocalAgreement-2, over token ids cut where a word starts). A hypothesis is the decoding of
    the window's audio so far after the committed text (forced); the rest of it is `pending`
    and is decoded again, with more audio, by the next hypothesis. Only *ripe* words can be
    committed: the first `owed` words, those a final's hypothesis heard to their utterance's
    end (a partial's or the latest utterance's words are not, so nothing is committed from
    what Whisper heard without the audio that follows it). A ripe word is committed once the
    next hypothesis agrees with the previous one on it and every word before it, and at the
    latest by the first hypothesis that heard `lag` samples past the final's audio (then in
    that newer hypothesis' words, agreeing or not). Committed tokens are never returned again;
    `flush` commits all that is pending."""

    def __init__(self, starts_word: Callable[[int], bool], lag: int) -> None:
        self.starts_word = starts_word
        self.lag = lag
        self.reset()

    def reset(self) -> None:
        self.pending: list[int] = []  # the last hypothesis after what is committed
        self.owed = 0  # words of `pending` that are due at `deadline`
        self.deadline = 0

    def hypothesis(self, tokens: list[int], end: int, final: bool) -> list[int]:
        """The tokens to commit now, given a hypothesis that heard the audio up to `end`."""
        ripe = self._cut(tokens, self.owed)
        n = ripe if end >= self.deadline else min(self._agreed(tokens), ripe)
        done, self.pending = list(tokens[:n]), list(tokens[n:])
        self.owed = max(0, self.owed - self._words(done))
        if final:
            if not self.owed:
                self.deadline = end + self.lag
            self.owed = self._words(self.pending)
        return done

    def flush(self) -> list[int]:
        done = self.pending
        self.reset()
        return done

    def _agreed(self, tokens: list[int]) -> int:
        """The common prefix with the previous hypothesis, ended where a word starts."""
        prev, common = self.pending, 0
        while common < min(len(prev), len(tokens)) and prev[common] == tokens[common]:
            common += 1
        if common == len(tokens) == len(prev):
            return common  # the same words twice, up to the end
        while common > 0 and not (common < len(tokens) and self.starts_word(tokens[common])):
            common -= 1
        return common

    def _words(self, tokens: list[int]) -> int:
        return sum(1 for i, t in enumerate(tokens) if i == 0 or self.starts_word(t))

    def _cut(self, tokens: list[int], words: int) -> int:
        """The length of the first `words` words of `tokens`."""
        seen = 0
        for i, t in enumerate(tokens):
            if i == 0 or self.starts_word(t):
                if seen == words:
                    return i
                seen += 1
        return len(tokens)


def word_starts(tokenizer: Any) -> Callable[[int], bool]:
    """Whether a token starts a word (its text begins with a space), cached per token."""
    cache: dict[int, bool] = {}

    def starts(token: int) -> bool:
        if token not in cache:
            cache[token] = tokenizer.decode([token]).startswith(" ")
        return cache[token]

    return starts

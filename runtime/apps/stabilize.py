"""Captions that do not flicker: commit words once they are stable across ASR updates.

Each partial ASR result is a fresh hypothesis of the whole utterance so far. A word is
committed (shown in the final style, never changed again) once the last `agree` hypotheses
agree on it and on every word before it; the rest is shown as tentative (dimmer). The final
result of the utterance replaces everything.

Retractions, what a reader sees as flicker, are counted: a tentative word that was on screen
and is not in the next hypothesis at the same place is one retracted word; a committed word
that the final result changes is counted too (`retracted_committed`), and should stay near 0.
Words are whitespace-separated tokens, or single characters for CJK text (no spaces there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.io.layout import is_cjk

__all__ = ["Stabilizer", "words"]


def words(text: str) -> list[str]:
    out: list[str] = []
    for token in text.split():
        cur = ""
        for ch in token:
            if is_cjk(ch):
                if cur:
                    out.append(cur)
                    cur = ""
                out.append(ch)
            else:
                cur += ch
        if cur:
            out.append(cur)
    return out


def join(ws: list[str]) -> str:
    text = ""
    for w in ws:
        if text and not (is_cjk(w[0]) or is_cjk(text[-1])):
            text += " "
        text += w
    return text


@dataclass
class Stabilizer:
    agree: int = 2
    committed: list[str] = field(default_factory=list)
    tentative: list[str] = field(default_factory=list)
    retracted: int = 0
    retracted_committed: int = 0
    shown_words: int = 0
    _history: list[list[str]] = field(default_factory=list)

    def update(self, hypothesis: str) -> tuple[str, str]:
        """A partial result; returns (committed text, tentative text) to show."""
        hyp = words(hypothesis)
        self._count_retractions(hyp)
        self._history = [*self._history[-(self.agree - 1) :], hyp] if self.agree > 1 else [hyp]
        if len(self._history) >= self.agree:
            stable = _common_prefix(self._history)
            if (
                len(stable) > len(self.committed)
                and stable[: len(self.committed)] == self.committed
            ):
                self.committed = stable
        n = len(self.committed)
        self.tentative = hyp[n:]  # committed words stay as shown even if this one differs
        self.shown_words = max(self.shown_words, len(self.committed) + len(self.tentative))
        return join(self.committed), join(self.tentative)

    def final(self, text: str) -> str:
        """The utterance's final result: replaces what is shown; resets for the next one."""
        hyp = words(text)
        self._count_retractions(hyp)
        for a, b in zip(self.committed, hyp, strict=False):
            if a != b:
                self.retracted_committed += 1
        self.retracted_committed += max(0, len(self.committed) - len(hyp))
        self.committed, self.tentative, self._history = [], [], []
        return join(hyp)

    def _count_retractions(self, hyp: list[str]) -> None:
        n = len(self.committed)
        for i, w in enumerate(self.tentative):
            if n + i >= len(hyp) or hyp[n + i] != w:
                self.retracted += 1


def _common_prefix(seqs: list[list[str]]) -> list[str]:
    out = []
    for items in zip(*seqs, strict=False):
        if all(x == items[0] for x in items):
            out.append(items[0])
        else:
            break
    return out

"""Prompt-lookup drafts for greedy speculative decoding.

A draft is a guess at the next tokens that costs nothing to make: the continuation of the most
recent earlier occurrence of the context's last n-gram (n from `ngram` down to `min_ngram`), or, while
the output so far equals a caller-supplied draft (the previous translation of a sentence that
grew), that draft's next tokens. The generator verifies a draft with one graph run over
its positions and keeps the longest prefix that greedy decoding would have produced, so the
output is the same with or without drafts; only the number of graph runs changes.

The n-gram index is updated per token (a dict per n from n-gram to the position where it last
ended): a proposal costs a few dict lookups, whatever the context length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LookupConfig", "PromptLookup"]


@dataclass(frozen=True)
class LookupConfig:
    """`max_draft` tokens per verify (at most 15), n-grams of `ngram` down to `min_ngram`."""

    max_draft: int = 8
    ngram: int = 3
    min_ngram: int = 2

    def __post_init__(self) -> None:
        from runtime.engine.errors import EngineUsageError

        if not 1 <= self.max_draft <= 15:
            raise EngineUsageError(f"max draft must be 1..15 tokens, got {self.max_draft}")
        if not 1 <= self.min_ngram <= self.ngram <= 8:
            raise EngineUsageError(
                f"n-gram sizes must satisfy 1 <= min_ngram <= ngram <= 8, got "
                f"{self.min_ngram}..{self.ngram}"
            )


class PromptLookup:
    """Drafts from the context (optional caller draft, prompt, generated tokens)."""

    def __init__(
        self,
        config: LookupConfig,
        prompt: Sequence[int],
        draft: Sequence[int] = (),
    ) -> None:
        self.config = config
        self._draft = list(draft)
        self._ctx: list[int] = []
        self._index: list[dict[tuple[int, ...], int]] = [{} for _ in range(config.ngram + 1)]
        self._add(self._draft)
        self._add(prompt)
        self._aligned = bool(self._draft)  # the output so far equals the draft's start
        self._out = 0  # generated tokens so far

    def generated(self, ids: Sequence[int]) -> None:
        """Generated tokens, in order, as they enter the context."""
        draft = self._draft
        for t in ids:
            if self._aligned:
                self._aligned = self._out < len(draft) and draft[self._out] == t
            self._out += 1
        self._add(ids)

    def _add(self, ids: Sequence[int]) -> None:
        ctx, index = self._ctx, self._index
        top, low = self.config.ngram, self.config.min_ngram
        for t in ids:
            end = len(ctx) - 1  # index the n-grams that end at the current last token
            for n in range(low, min(top, end + 1) + 1):
                index[n][tuple(ctx[end - n + 1 : end + 1])] = end
            ctx.append(t)

    def propose(self, k: int) -> list[int]:
        """Up to k draft tokens to follow the context (empty when nothing matches)."""
        if self._aligned and self._out < len(self._draft):
            return self._draft[self._out : self._out + k]
        ctx = self._ctx
        for n in range(self.config.ngram, self.config.min_ngram - 1, -1):
            if n > len(ctx):
                continue
            end = self._index[n].get(tuple(ctx[-n:]))
            if end is not None:
                return ctx[end + 1 : end + 1 + k]
        return []

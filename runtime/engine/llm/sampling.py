"""Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty.

The order is Hugging Face's (so greedy output and the meaning of each knob match transformers):
repetition penalty on the raw logits of every token already in the context (divide positive
logits, multiply negative ones), then temperature, then top-k, then top-p (keep the smallest set
of most likely tokens whose probability reaches p), then a draw from a seeded generator.

Costs are kept per token and small: greedy is one argmax; top-p first looks at the 256 most
likely tokens (argpartition, no full sort of a 150k vocabulary) and falls back to a full sort
only when those do not reach p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from runtime.engine.errors import EngineUsageError

__all__ = ["Sampler", "SamplingParams"]

F32 = npt.NDArray[np.float32]
_TOP_P_WINDOW = 256


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy; top_k 0 and top_p 1.0 mean off; seed None is random."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and 0.0 <= self.temperature <= 100.0):
            raise EngineUsageError(
                f"temperature must be between 0 (greedy) and 100, got {self.temperature}"
            )
        if self.top_k < 0:
            raise EngineUsageError(f"top-k must be >= 0 (0 turns it off), got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise EngineUsageError(f"top-p must be in (0, 1] (1 turns it off), got {self.top_p}")
        if not (math.isfinite(self.repetition_penalty) and 0.0 < self.repetition_penalty <= 10):
            raise EngineUsageError(
                f"repetition penalty must be in (0, 10] (1 turns it off), "
                f"got {self.repetition_penalty}"
            )
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise EngineUsageError(f"seed must be a non-negative 64-bit integer, got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    def __init__(self, params: SamplingParams, vocab_size: int) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)
        self._seen = np.zeros(vocab_size, dtype=bool)
        self._seen_ids: list[int] = []

    def observe(self, ids: npt.ArrayLike) -> None:
        """Tokens that enter the context (prompt and generated) for the repetition penalty."""
        if self.params.repetition_penalty == 1.0:
            return
        for t in np.asarray(ids).reshape(-1).tolist():
            if not self._seen[t]:
                self._seen[t] = True
                self._seen_ids.append(t)

    def __call__(self, logits: F32) -> int:
        p = self.params
        if p.repetition_penalty != 1.0 and self._seen_ids:
            idx = np.asarray(self._seen_ids)
            v = logits[idx]
            logits = logits.copy()
            logits[idx] = np.where(v < 0, v * p.repetition_penalty, v / p.repetition_penalty)
        if p.greedy:
            return int(np.argmax(logits))
        return self._draw(logits.astype(np.float64) / p.temperature)

    def _draw(self, z: npt.NDArray[np.float64]) -> int:
        p = self.params
        vocab = z.size
        if p.top_k and p.top_k < vocab:
            cand = np.argpartition(z, -p.top_k)[-p.top_k :]
        elif p.top_p < 1.0 and vocab > _TOP_P_WINDOW:
            cand = np.argpartition(z, -_TOP_P_WINDOW)[-_TOP_P_WINDOW:]
        else:
            cand = np.arange(vocab)
        zc = z[cand]
        order = np.argsort(-zc, kind="stable")
        cand, zc = cand[order], zc[order]
        top = zc[0]
        if p.top_p < 1.0:
            # Normalise over the set top-k kept (HF applies top-p after top-k), or the whole
            # vocabulary when top-k is off.
            norm = np.exp(zc - top).sum() if p.top_k else np.exp(z - top).sum()
            cum = np.cumsum(np.exp(zc - top)) / norm
            if cum[-1] < p.top_p and not p.top_k and cand.size < vocab:
                cand = np.argsort(-z, kind="stable")
                zc = z[cand]
                cum = np.cumsum(np.exp(zc - top)) / norm
            keep = int(np.searchsorted(cum, p.top_p)) + 1
            cand, zc = cand[:keep], zc[:keep]
        w = np.exp(zc - top)
        w /= w.sum()
        return int(cand[self._rng.choice(w.size, p=w)])

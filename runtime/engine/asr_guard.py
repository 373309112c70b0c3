"""When a Whisper window's decoding has failed, and what to try next (openai/whisper's policy).

Whisper loops: on short or trimmed audio a greedy decoder can repeat a phrase until the
448-token limit. openai/whisper and faster-whisper judge every attempt on a window by

- the compression ratio of its text (zlib; a loop compresses well): above 2.4 it failed;
- its average log-probability per token: below -1.0 it failed;
- the no-speech probability (the `<|nospeech|>` token's softmax at the start-of-transcript
  position): above 0.6 *and* a failed log-probability, the window is silence: no text;

and retry a failed attempt at a higher temperature (sampling). `Guard` holds the thresholds and
the schedule; `Decoding` asks it after every token (`looping`: the ratio of the text so far is
already past the threshold, so the attempt stops there instead of running to the limit) and at
the end of an attempt (`verdict`).

What each decoder head can give: the fp32 logits head gives every signal. The re-scoring head
returns the greedy token only (no logits, so no log-probability, no no-speech probability and
no sampling); there the guard uses the compression ratio alone, and the fallback of a trimmed
window is the same window untrimmed (trimming is what makes short clips loop), then the
longest loop-free prefix of the last attempt (`strip_loop`). Token ids come from the manifest
and the tokenizer, never from constants here.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from runtime.engine.errors import EngineUsageError

__all__ = ["Guard", "compression_ratio", "log_softmax_at", "strip_loop"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Guard:
    """openai/whisper's defaults; `None` turns a check off."""

    compression_ratio: float | None = 2.4
    logprob: float | None = -1.0
    no_speech: float | None = 0.6
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    check_every: int = 8  # tokens between two loop checks while decoding
    seed: int = 0  # sampling at a temperature > 0 is reproducible

    def __post_init__(self) -> None:
        if not self.temperatures or self.temperatures[0] != 0.0:
            raise EngineUsageError("guard temperatures must start at 0.0 (greedy)")
        if any(t < 0 for t in self.temperatures):
            raise EngineUsageError(f"guard temperatures must be >= 0, got {self.temperatures}")
        if self.check_every < 1:
            raise EngineUsageError(f"guard check_every must be >= 1, got {self.check_every}")

    def looping(self, text: str) -> bool:
        """The text so far already compresses past the threshold (a loop in progress)."""
        return self.compression_ratio is not None and (
            compression_ratio(text) > self.compression_ratio
        )

    def verdict(
        self, text: str, avg_logprob: float | None, no_speech: float | None
    ) -> tuple[bool, bool]:
        """(failed, silent) for a finished attempt: `failed` asks for a fallback; `silent`
        means the window holds no speech (its text is dropped, no fallback)."""
        low = self.logprob is not None and avg_logprob is not None and avg_logprob < self.logprob
        sure = self.logprob is not None and avg_logprob is not None and not low
        if (
            self.no_speech is not None
            and no_speech is not None
            and no_speech > self.no_speech
            and not sure
        ):
            return False, True
        return self.looping(text) or low, False


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def log_softmax_at(logits: F32, index: int, temperature: float = 1.0) -> float:
    """log softmax(logits / temperature)[index], over the finite entries."""
    x = logits / temperature if temperature > 0 else logits
    m = float(np.max(x))
    return float(x[index]) - m - float(np.log(np.sum(np.exp(x - m))))


def strip_loop(tokens: Sequence[int], min_repeats: int = 3, max_period: int = 64) -> list[int]:
    """`tokens` without the repeats of a trailing loop: a unit repeated at least `min_repeats`
    times at the end (a partial copy after it aside) keeps its first copy only."""
    toks = list(tokens)
    best = len(toks)
    for p in range(1, max_period + 1):
        for shift in range(p):  # the attempt may have stopped in the middle of a copy
            n = len(toks) - shift
            if n < min_repeats * p:
                break
            reps = 1
            while (reps + 1) * p <= n and toks[n - (reps + 1) * p : n - reps * p] == toks[
                n - p : n
            ]:
                reps += 1
            if reps >= min_repeats:
                best = min(best, n - (reps - 1) * p)
    return toks[:best]

"""Whisper decoding with the logits of every greedy decision, for cross-architecture parity.

The engine has no public logits API, so this wraps `Whisper.logits_filter` on one instance
(the engine calls it on the decoder's logits, after which it takes the argmax): the recorded
rows are exactly what each decision saw, suppressed tokens included (as -1e30). Used by the
host reference and by the device test alike; if the hook point goes away, both say so.
"""

from __future__ import annotations

import math
from typing import Any

SUPPRESSED = -1e30


def transcribe_with_logits(model: Any, audio: Any, **options: Any) -> tuple[Any, list[list[float]]]:
    """(the engine's `transcribe` result, one logits row per decoder decision); an artifact
    with the re-scoring head (tokens out, no logits) is refused by the engine."""
    model.require_logits("cross-architecture parity (arm64/device_tests/asr_probe.py)")
    if not callable(getattr(model, "logits_filter", None)):
        raise AssertionError(
            "runtime.engine.asr.Whisper has no logits_filter any more; "
            "update arm64/device_tests/asr_probe.py to where the decoder's logits are taken"
        )
    rows: list[list[float]] = []
    inner = model.logits_filter

    def recording(logits: Any, first: bool) -> Any:
        out = inner(logits, first)
        rows.append([float(x) if math.isfinite(x) else SUPPRESSED for x in out.tolist()])
        return out

    model.logits_filter = recording
    try:
        result = model.transcribe(audio, **options)
    finally:
        del model.logits_filter
    return result, rows

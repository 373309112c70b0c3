"""Whisper decoding on aarch64 gives the x86_64 run's tokens exactly (see `parity.py`).

The int8 encoder quantizes its activations at run time (MatMulInteger); aarch64 and x86_64
kernels round differently, so the decoder's logits differ slightly; the test model transcribes
any audio as its corpus's opening, by top-1/top-2 margins far wider than that difference.
"""

from __future__ import annotations

from asr_probe import transcribe_with_logits
from parity import TOLERANCE, check_tokens

from runtime.engine.asr import Whisper
from runtime.engine.audio import read_wav


def test_asr_int8_tokens_equal_x86(ctx) -> None:
    host = ctx.expect["asr"]
    model = Whisper.from_artifact(ctx.work / host["artifact"])
    audio = read_wav(ctx.work / host["wav"], model.sample_rate)
    result, logits = transcribe_with_logits(
        model, audio, language=host["language"], max_new_tokens=host["max_new_tokens"]
    )
    tol = TOLERANCE["asr-int8"]
    check_tokens(ctx, "int8", result.tokens, logits, host["tokens"], host["logits"], tol)
    assert result.text == host["text"]

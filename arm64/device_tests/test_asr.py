"""Whisper decoding on aarch64 equals the x86_64 run, token for token, within float tolerance.

The int8 encoder quantizes its activations at run time (MatMulInteger); aarch64 and x86_64
kernels round differently, so the decoder's logits differ slightly (~0.1 measured on
tiny-whisper, whose random weights give flat logits; the int8-vs-fp32 error itself is ~0.2).
Tokens and logits are compared as `parity.py` says, within LOGIT_TOL.
"""

from __future__ import annotations

from asr_probe import transcribe_with_logits
from parity import check_tokens

from runtime.engine.asr import Whisper
from runtime.engine.audio import read_wav

LOGIT_TOL = 0.25


def test_asr_int8_tokens_equal_x86(ctx) -> None:
    host = ctx.expect["asr"]
    model = Whisper.from_artifact(ctx.work / host["artifact"])
    audio = read_wav(ctx.work / host["wav"], model.sample_rate)
    result, logits = transcribe_with_logits(
        model, audio, language=host["language"], max_new_tokens=host["max_new_tokens"]
    )
    check_tokens(ctx, "int8", result.tokens, logits, host["tokens"], host["logits"], LOGIT_TOL)
    if result.tokens == host["tokens"]:
        assert result.text == host["text"]

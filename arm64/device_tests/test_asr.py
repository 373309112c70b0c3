"""Whisper decoding on aarch64 equals the x86_64 run, token for token, within float tolerance.

The int8 encoder quantizes its activations at run time (MatMulInteger); aarch64 and x86_64
kernels round differently, so the decoder's logits differ slightly (~0.1 measured on
tiny-whisper, whose random weights give flat logits; the int8-vs-fp32 error itself is ~0.2).
The logits of every decision taken on the same prefix must agree within LOGIT_TOL, and the
tokens must be equal; where they part, it must be at a decision that x86_64 itself took by less
than that tolerance (a near tie), after which the two runs decode different prefixes.
"""

from __future__ import annotations

from asr_probe import transcribe_with_logits

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
    mine, theirs = result.tokens, host["tokens"]
    equal = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
    equal = min(len(mine), len(theirs)) if equal is None else equal
    # Decisions taken on the same prefix: every step up to and including the first difference.
    steps = min(equal + 1, len(logits), len(host["logits"]))
    diff = max(
        abs(a - b) for i in range(steps) for a, b in zip(logits[i], host["logits"][i], strict=True)
    )
    ctx.note(
        f"{equal} of {len(theirs)} tokens equal; max |logit diff| {diff:.3f} over {steps} steps"
    )
    assert diff <= LOGIT_TOL, f"logits differ from x86_64 by {diff:.3f} > {LOGIT_TOL}"
    if mine == theirs:
        return
    row = host["logits"][equal]
    choice = max(range(len(logits[equal])), key=logits[equal].__getitem__)
    gap = max(row) - row[choice]
    assert gap <= LOGIT_TOL, (
        f"at token {equal} aarch64 chose {choice}, which x86_64 scored {gap:.3f} below its "
        f"choice (more than the {LOGIT_TOL} tolerance):\n  aarch64 {mine}\n  x86_64  {theirs}"
    )
    ctx.note(f"tokens part at {equal}, a near tie on x86_64 (its top two {gap:.4f} apart)")

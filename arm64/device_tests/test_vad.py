"""Silero VAD on aarch64: the fixture's spoken parts found, and the x86_64 run reproduced."""

from __future__ import annotations

import json

from runtime.engine.audio import read_wav
from runtime.engine.vad import Vad, speech_segments

RATE = 16000
EDGE_S = 0.15  # the same tolerance the x86_64 tests allow against the known truth
PROB_TOL = 1e-3  # ARM and x86 kernels round differently; a speech decision never hinges on it


def test_vad_segments_match_the_truth_and_the_x86_run(ctx) -> None:
    host = ctx.expect["vad"]
    truth = json.loads((ctx.work / host["truth"]).read_text())["segments"]
    vad = Vad.from_artifact(ctx.work / "vad")
    segments = speech_segments(vad, read_wav(ctx.work / host["wav"], RATE))
    found = [s.seconds() for s in segments]
    for t0, t1 in truth:
        inside = [s for s in found if s[1] > t0 - EDGE_S and s[0] < t1 + EDGE_S]
        assert inside, f"no segment for the speech at {t0}-{t1} s; found {found}"
        assert abs(inside[0][0] - t0) <= EDGE_S and abs(inside[-1][1] - t1) <= EDGE_S, (
            inside,
            t0,
            t1,
        )
    probs = vad.probabilities
    assert len(probs) == len(host["probabilities"])
    worst = max(abs(a - b) for a, b in zip(probs, host["probabilities"], strict=True))
    assert worst <= PROB_TOL, f"speech probabilities differ from x86_64 by up to {worst:.2e}"
    assert [[s.start, s.end] for s in segments] == host["segments"]

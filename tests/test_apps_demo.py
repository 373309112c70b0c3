"""`ocula demo` end to end: flash to a simulated board, run both apps, write the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.artifacts import asr_artifact, llm_artifact
from tests.conftest import run_ocula


def test_demo_writes_frames_traces_and_a_report(tmp_path: Path) -> None:
    """`--toy`: the tiny random models (the real ones are the default of `make demo`; their
    exports are tested in test_export_asr and test_fused_smollm2)."""
    out = tmp_path / "demo-out"
    # seed the tiny models (the demo reuses what DIR holds; building them is tested elsewhere)
    for kind, src in (
        ("llm", llm_artifact("tiny-qwen2", quant="int4")),
        ("asr", asr_artifact("tiny-whisper", quant="int8")),
    ):
        shutil.copytree(
            src, out / "artifacts-toy" / kind, ignore=shutil.ignore_patterns(".ocula-cache")
        )
    r = run_ocula("demo", "--toy", "--out", str(out), env={"OCULA_SIM_DIR": str(tmp_path / "sim")})
    assert r.code == 0, r.err[-2000:]
    assert "RANDOM WEIGHTS" in r.out and "Qwen/Qwen2.5-0.5B-Instruct" in r.out
    assert "health check passed" in r.out and "installed on the simulated board" in r.out
    assert "Trains to Central" in r.out  # look read the demo's English sign
    assert "spoken:     Excuse me, where is the train station?" in r.out
    assert "transcript:" in r.out and "word error rate:" in r.out
    assert "speech end -> caption: p50" in r.out and "frame -> answer: p50" in r.out
    # the flashed slot carries the glyph atlas, where the board's runtime looks for it
    assert [p.relative_to(out / "sim").parts[-2:] for p in (out / "sim").rglob("glyphs.npz")] == [
        ("artifacts", "glyphs.npz")
    ]
    for app in ("translate", "look"):
        trace = json.loads((out / f"trace-{app}.json").read_text())
        assert any(e["ph"] == "X" and e["name"] == "display" for e in trace["traceEvents"])
        assert (out / "display" / app / "preview.png").is_file()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 3 and "speech_end_to_first_translation_s" in page

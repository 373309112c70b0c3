"""Running an app on the board itself (the agent's `run` request): devices from the profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from board import bundle as bundles
from board import profiles
from board.errors import BoardError
from export.packaged import export_packaged
from ocula.glyphatlas import cached_atlas
from runtime.apps.device import board_atlas, run_on_board
from runtime.apps.errors import MissingModel
from runtime.io.screen import CaptionScreen
from tests.apps_helpers import models_dir


def test_look_runs_on_a_board_without_camera_or_atlas_and_says_so(tmp_path: Path) -> None:
    arts = models_dir(tmp_path / "artifacts", ("llm", "vision"))
    reply = run_on_board(
        "look",
        2.0,
        artifacts=arts,
        profile=profiles.find("sim"),
        traces=tmp_path / "traces",
        work=tmp_path / "apps",
    )
    trace = json.loads((tmp_path / "traces" / reply["trace"]).read_text())
    assert any(e.get("name") == "display" and e["ph"] == "X" for e in trace["traceEvents"])
    assert reply["counters"]["ticks.display"] >= 30
    assert any("synthetic pattern camera" in n for n in reply["notes"])
    assert any("glyphs.npz" in n for n in reply["notes"])
    assert (tmp_path / "apps" / "display" / "frames.json").is_file()


def test_a_bundle_without_the_model_is_a_clear_error(tmp_path: Path) -> None:
    arts = models_dir(tmp_path / "artifacts", ("vision",))
    with pytest.raises(MissingModel, match="app 'look' needs a 'llm' model"):
        run_on_board(
            "look",
            1.0,
            artifacts=arts,
            profile=profiles.find("sim"),
            traces=tmp_path / "t",
            work=tmp_path / "w",
        )


def test_a_bundle_carries_the_glyph_atlas_and_the_board_draws_chinese_with_it(
    tmp_path: Path,
) -> None:
    vad = tmp_path / "vad"
    export_packaged("vad", vad)
    out = tmp_path / "b.bundle"
    summary = bundles.build(profiles.find("sim"), out, {"vad": vad}, glyphs=cached_atlas(28))
    assert summary["glyphs"]
    slot = tmp_path / "slot"
    bundles.Bundle.open(out).extract(slot)
    assert (slot / "artifacts" / "glyphs.npz").is_file()
    notes: list[str] = []
    atlas = board_atlas(slot / "artifacts", notes)  # where the board's runtime looks
    assert notes == []
    screen = CaptionScreen(480, 640, atlas)
    screen.commit("你好，世界。今天天气很好。")
    frame, _ = screen.render(0.0)
    assert atlas.missing == 0 and frame.max() == 255
    # the same text without the atlas: boxes, counted and said
    notes = []
    bare = board_atlas(tmp_path / "nothing", notes)
    assert any("glyphs.npz" in n for n in notes)
    bare_screen = CaptionScreen(480, 640, bare)
    bare_screen.commit("你好")
    bare_screen.render(0.0)
    assert bare.missing_by_script == {"CJK (Han)": 2}


def test_a_glyph_atlas_that_is_not_one_is_refused_at_bundle_time(tmp_path: Path) -> None:
    vad = tmp_path / "vad"
    export_packaged("vad", vad)
    bad = tmp_path / "glyphs.npz"
    bad.write_bytes(b"not an atlas")
    with pytest.raises(BoardError, match=r"glyphs.npz.*not a glyph atlas.*cached_atlas"):
        bundles.build(profiles.find("sim"), tmp_path / "b.bundle", {"vad": vad}, glyphs=bad)

"""Running an app on the board itself (the agent's `run` request): devices from the profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from board import profiles
from runtime.apps.device import run_on_board
from runtime.apps.errors import MissingModel
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

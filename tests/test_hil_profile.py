"""`ocula profile` end to end on a sim board: the fixture firmware under MicroPython samples the
sim board's rail, marker edges sync the clocks, and the report folder has what it promises."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.conftest import run_ocula


def test_profile_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "prof"
    r = run_ocula(
        "profile", "--port", "sim://sim", "--app", "requests", "--out", str(out), "--seconds", "1.5"
    )
    assert r.code == 0, r.err
    assert "report:" in r.out and "drift" in r.out
    summary = json.loads((out / "power.json").read_text())
    assert summary["clock"]["method"] == "gpio markers" and summary["clock"]["pairs"] == 6
    assert summary["samples"] > 0 and summary["period_us"] == 500
    assert summary["spans"]["request"]["count"] + summary["spans"]["request"]["incomplete"] > 10
    states = summary["mean_power_by_state_w"]
    assert states["busy"] > states["idle"] > 0  # the rail follows the board's CPU
    with (out / "power.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["samples"] and set(rows[0]) == {
        "t_us",
        "seq",
        "volts",
        "amps",
        "watts",
    }
    trace = json.loads((out / "trace.json").read_text())["traceEvents"]
    assert any(e["ph"] == "C" and e["name"] == "power" for e in trace)
    assert any(e["ph"] == "X" and e["name"] == "request" for e in trace)
    assert (out / "power.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (out / "index.html").read_text()


def test_profile_of_an_app_the_board_cannot_run(tmp_path: Path) -> None:
    r = run_ocula(
        "profile",
        "--port",
        "sim://sim",
        "--app",
        "captions",
        "--out",
        str(tmp_path / "p"),
        "--seconds",
        "0.5",
    )
    assert r.code == 1
    assert "did not run app 'captions'" in r.err and "--app requests" in r.err
    assert "Traceback" not in r.err

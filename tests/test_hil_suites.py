"""`ocula hil` as a user runs it: the suites against a sim board, and a port that is not there
(the test fails with the reason, classified as a link failure, and the run goes on)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_ocula


def test_ocula_hil_runs_the_suites_on_a_sim_board(tmp_path: Path) -> None:
    out = tmp_path / "report"
    r = run_ocula(
        "hil", "--port", "sim://sim", "--report", str(out), "--", "-k", "hello or rolls_back", "-q"
    )
    assert r.code == 0, r.out + r.err
    tests = json.loads((out / "report.json").read_text())["tests"]
    names = {t["nodeid"].split("::")[1]: t for t in tests}
    assert set(names) == {"test_hello", "test_broken_bundle_rolls_back"}
    chain = names["test_broken_bundle_rolls_back"]["chain"]
    assert chain["health"].startswith("failed: health check failed: vision")
    assert (out / "junit.xml").read_text().count("<testcase") == 2
    assert "report:" in r.out


def test_a_missing_port_fails_each_test_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "report"
    r = run_ocula(
        "hil",
        "--port",
        str(tmp_path / "ttyNOPE"),
        "--report",
        str(out),
        "--",
        "-k",
        "hello or info",
    )
    assert r.code == 1
    tests = json.loads((out / "report.json").read_text())["tests"]
    assert len(tests) == 2
    for t in tests:
        assert t["outcome"] == "failed" and t["category"] == "link"
        assert "ttyNOPE: no such port" in t["reason"]


def test_hil_needs_a_port() -> None:
    r = run_ocula("hil")
    assert r.code == 2 and "needs --port PORT" in r.err


CUT_MID_SUITE = """
import pytest
from hil.cable import Cable
from hil.targets import BoardUnderTest


@pytest.fixture(scope="module")
def cabled(tmp_path_factory):
    cable = Cable(baud=921600)
    but = BoardUnderTest("sim://cut", tmp_path_factory.mktemp("cut"), "sim", timeout=3, cable=cable)
    yield but, cable
    but.close()
    cable.close()


def test_before(cabled, hil_record):
    assert cabled[0].hello(deadline=30)["board"] == "sim"


def test_during_cut(cabled, hil_record):
    board, cable = cabled
    cable.cut()
    try:
        board.call("info")
    finally:
        cable.restore()


def test_after(cabled, hil_record):
    assert cabled[0].hello(deadline=30)["board"] == "sim"
"""


def test_a_cut_mid_suite_fails_that_test_and_the_suite_goes_on(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "test_cut.py").write_text(CUT_MID_SUITE)
    out = tmp_path / "report"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tmp_path / "test_cut.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--hil-report",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert "1 failed, 2 passed" in r.stdout, r.stdout
    tests = {
        t["nodeid"].split("::")[1]: t
        for t in json.loads((out / "report.json").read_text())["tests"]
    }
    cut = tests["test_during_cut"]
    assert cut["category"] == "link" and "no reply within 3 s" in cut["reason"]
    assert tests["test_after"]["outcome"] == "passed"

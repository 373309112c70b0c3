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
    assert chain["health"].startswith("failed: health check failed: llm")
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

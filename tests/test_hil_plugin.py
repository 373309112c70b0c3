"""The HIL pytest plugin as a user runs it: pytest on a test file, options, triage, retries of
infrastructure failures only, reports (JUnit + self-contained HTML), board locks per worker."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


def _pytest(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_rig.py"
    test.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )


def test_board_tests_skip_naming_the_option(tmp_path: Path) -> None:
    r = _pytest(tmp_path, "def test_x(board):\n    pass\n", "-rs")
    assert r.returncode == 0, r.stdout
    assert "needs a board: pass --board-port PORT" in r.stdout
    r = _pytest(tmp_path, "def test_p(power):\n    pass\n", "-rs")
    assert "pass --fixture-port PORT" in r.stdout


TRIAGE = """
    import pytest
    from hil.errors import BootHang, FlashFailure, LinkFailure, PowerFailure

    def test_link(hil_record):
        raise LinkFailure("line cut")

    def test_flash(hil_record):
        raise FlashFailure("bundle refused")

    def test_power(hil_record):
        raise PowerFailure("gap in samples")

    def test_boot(hil_record):
        raise BootHang("no hello")

    def test_assert(hil_record):
        hil_record.latencies_ms["caption"] = [120.0, 130.0, 180.0, 150.0, 140.0]
        assert 1 + 1 == 3

    def test_ok(hil_record):
        hil_record.steps.append(("warm-up", 0.01))
"""


def test_failures_are_triaged_into_the_reports(tmp_path: Path) -> None:
    out = tmp_path / "report"
    r = _pytest(tmp_path, TRIAGE, "--hil-report", str(out))
    assert r.returncode == 1
    data = json.loads((out / "report.json").read_text())
    cats = {t["nodeid"].split("::")[1]: (t["outcome"], t["category"]) for t in data["tests"]}
    assert cats == {
        "test_link": ("failed", "link"),
        "test_flash": ("failed", "flash"),
        "test_power": ("failed", "power"),
        "test_boot": ("failed", "boot"),
        "test_assert": ("failed", "assertion"),
        "test_ok": ("passed", ""),
    }
    page = (out / "index.html").read_text()
    assert "line cut" in page and "warm-up" in page
    assert "data:image/png;base64," in page  # the latency histogram, embedded
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    junit = (out / "junit.xml").read_text()
    assert 'failures="5"' in junit and "test_link" in junit


RETRY = """
    from pathlib import Path
    from hil.errors import LinkFailure

    def _count(name):
        p = Path(__file__).with_name(name)
        n = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(n))
        return n

    def test_flaky_link(hil_record):
        if _count("link.count") < 3:
            raise LinkFailure("line cut")

    def test_real_bug(hil_record):
        _count("bug.count")
        assert False, "wrong answer"
"""


def test_only_infrastructure_failures_are_retried_and_only_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "report"
    r = _pytest(tmp_path, RETRY, "--hil-retries", "2", "--hil-report", str(out))
    assert "1 failed, 1 passed" in r.stdout, r.stdout
    assert (tmp_path / "link.count").read_text() == "3"
    assert (tmp_path / "bug.count").read_text() == "1"
    tests = {
        t["nodeid"].split("::")[1]: t
        for t in json.loads((out / "report.json").read_text())["tests"]
    }
    assert tests["test_flaky_link"]["attempts"] == 3
    for name in ("link.count", "bug.count"):
        (tmp_path / name).unlink()
    r = _pytest(tmp_path, RETRY)
    assert "2 failed" in r.stdout
    assert (tmp_path / "link.count").read_text() == "1"


LOCKS = """
    import os, threading, time
    from pathlib import Path

    def test_holds_one_board(board, worker_id):
        here = Path(__file__).parent
        (here / f"seen-{worker_id}").write_text(board.url)
        deadline = time.monotonic() + 60
        while len(list(here.glob("seen-*"))) < 2 and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        from hil import inventory
        from hil.errors import InventoryError
        try:
            mine = [b.name for b in inventory.load(here / "rig.toml") if b.port == board.url]
            inventory.acquire(here / "rig.toml", want=mine[0])
        except InventoryError as e:
            assert worker_id in str(e)
        else:
            raise AssertionError("the held board was free")
"""


def test_xdist_workers_each_lock_their_own_board(tmp_path: Path) -> None:
    import os

    ptys = [os.openpty() for _ in range(2)]  # two ports that exist (nobody opens them here)
    ports = [os.ttyname(slave) for _, slave in ptys]
    (tmp_path / "rig.toml").write_text(
        f'[[board]]\nname = "b1"\nport = "{ports[0]}"\nprofile = "sim"\n'
        f'[[board]]\nname = "b2"\nport = "{ports[1]}"\nprofile = "sim"\n'
    )
    body = textwrap.dedent(LOCKS) + "\n".join(
        f"\ndef test_{i}(board, worker_id):\n    test_holds_one_board(board, worker_id)\n"
        for i in range(2)
    )
    try:
        r = _pytest(tmp_path, body, "-n", "2", "--hil-inventory", str(tmp_path / "rig.toml"))
    finally:
        for fds in ptys:
            for fd in fds:
                os.close(fd)
    assert r.returncode == 0, r.stdout + r.stderr
    seen = {p.name: p.read_text() for p in tmp_path.glob("seen-*")}
    assert len(seen) == 2 and set(seen.values()) == set(ports)


MARKERS = """
    import pytest

    @pytest.mark.boards("rpi5")
    def test_only_rpi5(board):
        pass

    @pytest.mark.boards("sim")
    def test_budget_met(board, objectives):
        objectives.check("power.average_w", 0.5)

    def test_budget_missed(board, objectives):
        objectives.check("power.burst_w", 99.0)
"""


def test_board_markers_and_profile_objectives(tmp_path: Path) -> None:
    out = tmp_path / "report"
    r = _pytest(tmp_path, MARKERS, "--board-port", "sim://sim", "--hil-report", str(out), "-rs")
    assert "1 failed, 1 passed, 1 skipped" in r.stdout, r.stdout
    assert "only for boards ['rpi5']; this is sim" in r.stdout
    assert "objective power.burst_w missed: measured 99 W, target <= 6 W" in r.stdout
    tests = {
        t["nodeid"].split("::")[1]: t
        for t in json.loads((out / "report.json").read_text())["tests"]
    }
    met = tests["test_budget_met"]["objectives"][0]
    assert met["name"] == "power.average_w" and met["target"] == 3.0
    assert tests["test_budget_missed"]["category"] == "assertion"
    page = (out / "index.html").read_text()
    assert 'class="missed"' in page and 'class="met"' in page

"""The sim board's lifelines: its store lock, its host watch, its agent's death signal, and the
restart back-off of its boot ROM; real processes, the real ROM and agent."""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from board.client import Board
from hil import simlock
from hil.errors import PortError
from hil.sim import SimBoard
from hil.transport import open_port
from runtime.agent.lifeline import Backoff
from tests.conftest import BIN, ROOT

DEADLINE_S = 60.0  # for things a loaded host does in well under a second


def _hello(board: SimBoard) -> dict[str, object]:
    client = Board(lambda: open_port(board.port), name=board.port)
    try:
        client.reconnect(DEADLINE_S)
        return client.call("hello")[0]
    finally:
        client.close()


def _exits(pid: int, seconds: float) -> bool:
    """Whether process `pid` exits within `seconds` (its pidfd, not a sleep)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _agent_of(board: SimBoard) -> int:
    assert board.proc is not None
    kids = _children(board.proc.pid)
    assert len(kids) == 1, kids
    return kids[0]


def _board_in_helper(
    tmp_path: Path, name: str, then: str = ""
) -> tuple[subprocess.Popen[str], int]:
    """Another process (a host) with a sim board up and answering, which then runs `then`
    (Python, with the board as `b`); the ROM's pid."""
    helper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from tests.test_sim_lifeline import _hello; "
            f"from hil.sim import SimBoard; b = SimBoard({name!r}, base=Path({str(tmp_path)!r})); "
            f"b.start(); _hello(b); rom = b.proc.pid; {then or 'pass'}; print(rom, flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert helper.stdout is not None
    return helper, int(helper.stdout.readline())


def test_a_stale_lock_is_taken_over_and_said_once(tmp_path: Path, caplog) -> None:
    helper, rom = _board_in_helper(tmp_path, "stale")
    os.killpg(rom, signal.SIGKILL)  # host and board die at once: nobody lets go of the lock
    helper.kill()
    helper.wait()
    assert _exits(rom, DEADLINE_S)
    assert (tmp_path / "stale" / ".lock").read_text() == str(rom)
    with caplog.at_level(logging.INFO, logger="hil"), SimBoard("stale", base=tmp_path) as b:
        _hello(b)
    said = [r.getMessage() for r in caplog.records if "taking the store over" in r.getMessage()]
    assert len(said) == 1 and f"process {rom} held its store" in said[0]
    # a clean stop lets go of the lock: the next start says nothing
    assert (tmp_path / "stale" / ".lock").read_text() == ""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hil"), SimBoard("stale", base=tmp_path) as b:
        b.power_cut()  # within a command, a power cut keeps the store the command's
        b.boot()
        _hello(b)
    assert not [r for r in caplog.records if "taking" in r.getMessage()]
    assert (tmp_path / "stale" / ".lock").read_text() == ""


def test_a_live_holder_is_busy_and_named(tmp_path: Path, ocula) -> None:
    env = {**os.environ, "OCULA_SIM_DIR": str(tmp_path)}
    holder = subprocess.Popen(
        [str(BIN / "ocula"), "board", "sim", "--name", "held"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().startswith("/dev/pts/")
        r = ocula("run", "look", "--port", "sim://held", "--duration", "1", env=env)
        assert r.code == 1 and "Traceback" not in r.err
        assert re.search(rf"busy: its store .* held by process {holder.pid} \(.*board sim", r.err)
        assert "close that command or use another board name" in r.err
    finally:
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(timeout=DEADLINE_S) == 0


def test_a_board_power_cut_inside_a_live_command_is_still_busy(tmp_path: Path) -> None:
    """The command keeps its store while its board is off: the lock names the dead ROM, and
    the busy message names the command that holds the file."""
    helper, _rom = _board_in_helper(tmp_path, "cut", then="b.power_cut()")
    try:
        with pytest.raises(PortError, match=rf"busy: .* held by process {helper.pid} \("):
            SimBoard("cut", base=tmp_path).start()
    finally:
        helper.kill()
        helper.wait()


def test_the_agent_dies_with_its_rom(tmp_path: Path) -> None:
    with SimBoard("rom", base=tmp_path) as board:
        _hello(board)
        agent = _agent_of(board)
        assert board.proc is not None
        os.kill(board.proc.pid, signal.SIGKILL)  # the ROM alone, not its process group
        assert _exits(agent, DEADLINE_S), "the agent outlived its boot ROM"
        board.proc.wait()
        board.boot()  # and the board powers on again
        assert _hello(board)["board"] == "sim"


def test_a_board_started_from_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* exits: the ROM does not rely on it."""
    boards: list[SimBoard] = []
    t = threading.Thread(target=lambda: boards.append(SimBoard("t", base=tmp_path).start()))
    t.start()
    t.join()
    with boards[0] as board:
        assert _hello(board)["board"] == "sim" and board.running()


def test_a_board_whose_host_is_gone_but_lingers_is_ended(tmp_path: Path, monkeypatch, caplog):
    """A board process left by a dead host that does not power off (stopped here, like one of
    an older Ocula) is given its grace, then killed, and its store taken over, said once."""
    helper, rom = _board_in_helper(tmp_path, "orphan")
    os.killpg(rom, signal.SIGSTOP)  # ROM and agent frozen: nothing watches the host now
    helper.kill()
    helper.wait()
    monkeypatch.setattr(simlock, "ORPHAN_GRACE_S", 1.0)
    try:
        with (
            caplog.at_level(logging.INFO, logger="hil"),
            SimBoard("orphan", base=tmp_path) as board,
        ):
            assert _hello(board)["board"] == "sim"
    finally:
        if not _exits(rom, 0):
            os.killpg(rom, signal.SIGKILL)
    said = [r.getMessage() for r in caplog.records if "outlived the command" in r.getMessage()]
    assert len(said) == 1 and f"board process {rom}" in said[0]


def test_a_crashing_agent_is_restarted_with_a_bounded_back_off(tmp_path: Path) -> None:
    """The agent cannot open its port, so it exits at once, over and over; a ROM without
    --parent-pid (a real board's) keeps restarting it after the process that started it dies."""
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', "
            f"'runtime.agent.boot', '--store', {str(tmp_path / 'crash')!r}, '--port', "
            f"{str(tmp_path / 'ttyNOPE')!r}], start_new_session=True); "
            "print(p.pid, flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert launcher.stdout is not None and launcher.stderr is not None
    rom = int(launcher.stdout.readline())
    delays: list[float] = []
    try:
        for line in launcher.stderr:
            found = re.search(r"restarting in ([\d.]+) s", line)
            if found:
                delays.append(float(found.group(1)))
                if len(delays) == 2:
                    launcher.kill()  # the ROM's parent dies; an unwatched ROM goes on
                    launcher.wait()
                if len(delays) == 4:
                    break
    finally:
        os.killpg(rom, signal.SIGKILL)
        launcher.kill()
        launcher.wait()
    assert delays == [0.2, 0.4, 0.8, 1.6]


def test_back_off_doubles_to_a_bound_and_resets() -> None:
    b = Backoff()
    seen = [b.after(ran_s=0.1, asked=False) for _ in range(12)]
    assert seen[:4] == [0.2, 0.4, 0.8, 1.6] and max(seen) == Backoff.MOST == seen[-1]
    assert b.after(ran_s=0.1, asked=True) == 0.0  # a reboot the agent asked for
    assert b.after(ran_s=0.1, asked=False) == Backoff.FIRST
    b.after(ran_s=0.1, asked=False)
    assert b.after(ran_s=Backoff.STABLE_S, asked=False) == Backoff.FIRST  # it ran long enough


def test_a_rom_whose_host_is_already_gone_does_not_start(tmp_path: Path) -> None:
    """--parent-pid names a process that is not the ROM's parent: to the ROM, its host is gone
    before it started (the race of a host killed while it starts its board)."""
    rom = subprocess.run(
        [
            *(sys.executable, "-m", "runtime.agent.boot", "--store", str(tmp_path / "s")),
            *("--port", str(tmp_path / "ttyNOPE"), "--parent-pid", str(os.getpid() + 1)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=DEADLINE_S,
    )
    assert rom.returncode == 0 and "is gone before the board started" in rom.stderr
    assert not (tmp_path / "s" / ".lock").exists()

"""Dead hosts: `kill -9` of every command that holds a sim:// port, at seeded moments.

Each case runs a real `ocula` command on a sim board and SIGKILLs it at a seeded moment: a
delay after launch (the board may not exist yet), or a delay after the board boots (the
command's own debug line "sim board NAME booting (pid N)", read from its stderr as it comes).
The delay is waited on the command's exit (a pidfd), so a command that finishes first is not
killed and the case says so. Then every process whose command line names the board's store, or
whose environment carries the case's tag (whatever the killed command started), must exit
before a deadline (waited on their pidfds), and `ocula flash` on the same board must work, with
no "busy". `make test` runs KILLS=2 cases per command; `make faults` runs more
(OCULA_DEADHOST_KILLS=10) and prints the tally written to OCULA_FAULT_TALLY:
`python tests/test_faults_deadhost.py TALLY_FILE`.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from board import bundle as bundles
from board import profiles
from export.packaged import export_packaged

BIN = Path(sys.executable).parent  # the venv's `ocula`
KILLS = int(os.environ.get("OCULA_DEADHOST_KILLS", "2"))
GONE_S = 60.0  # deadline for the board's processes to exit after the kill (a loaded host)
BOOT_S = 120.0  # deadline for a command to start its board
TAG = "OCULA_DEADHOST_TAG"

# argv of each command that holds a sim:// port, given the port URL, and the spread (s) of the
# kill moment after the board boots: about the command's own length on an idle host
Argv = Callable[[str, Path], list[str]]
COMMANDS: dict[str, tuple[Argv, float]] = {
    "flash": (lambda port, tmp: ["flash", str(tmp / "w.bundle"), "--port", port], 4.0),
    "run": (lambda port, tmp: ["run", "look", "--port", port, "--duration", "3"], 3.0),
    "profile": (
        lambda port, tmp: [
            "profile", "--port", port, "--app", "requests", "--out", str(tmp / "prof"),
            "--seconds", "3",
        ],
        6.0,
    ),
    "hil": (
        lambda port, tmp: [
            "hil", "--port", port, "--", "-k", "hello or info or power_cycle", "-q", "-s",
        ],
        8.0,
    ),
    "board sim": (lambda port, tmp: ["board", "sim", "--profile", "sim", "--name", "w"], 3.0),
}  # fmt: skip
BOOTING = re.compile(r"sim board \S+ booting \(pid (\d+)\)")


@pytest.fixture(scope="module")
def work_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("deadhost")
    art = tmp / "vad"
    export_packaged("vad", art)
    out = tmp / "w.bundle"
    bundles.build(profiles.find("sim"), out, {"vad": art}, version="w")
    return out


class Stderr:
    """Reads a command's stderr as it comes (so it never blocks on a full pipe) and sets
    `booted` when the board's boot line appears."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.text = ""
        self.booted = threading.Event()
        self.rom: int | None = None
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            self.text += line
            found = BOOTING.search(line)
            if found and not self.booted.is_set():
                self.rom = int(found.group(1))
                self.booted.set()
        self.booted.set()  # EOF: the command is gone, booted or not

    def join(self) -> str:
        self._thread.join(timeout=GONE_S)
        return self.text


def exits_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether `proc` exits within `seconds` (waited on its pidfd, not slept)."""
    fd = os.pidfd_open(proc.pid)
    try:
        return bool(select.select([fd], [], [], max(0.0, seconds))[0])
    finally:
        os.close(fd)


def board_processes(store: Path, tag: str) -> dict[int, str]:
    """pid -> command line of every process naming `store`, or carrying `tag` in its env."""
    found = {}
    needle, marker = str(store).encode(), f"{TAG}={tag}\0".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in cmd or marker in env:
            found[int(pid)] = cmd.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def wait_gone(store: Path, tag: str, deadline: float) -> dict[int, str]:
    """Waits until no process names `store` or carries `tag`; what is left at the deadline."""
    while True:
        left = board_processes(store, tag)
        if not left or time.monotonic() >= deadline:
            return left
        fds = []
        for pid in left:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                continue
        try:
            if fds:  # wakes as soon as one of them exits
                select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
        finally:
            for fd in fds:
                os.close(fd)


def record(entry: dict[str, object]) -> None:
    tally = os.environ.get("OCULA_FAULT_TALLY")
    if tally:
        with open(tally, "a") as f:
            f.write(json.dumps(entry) + "\n")


CASES = [(cmd, i) for cmd in COMMANDS for i in range(KILLS)]


@pytest.mark.parametrize(("command", "case"), CASES, ids=[f"{c}-{i}" for c, i in CASES])
def test_kill_9_of_the_host_leaves_no_board_behind(
    command: str, case: int, work_bundle: Path, tmp_path: Path
) -> None:
    from tests.conftest import run_ocula

    rng = random.Random(f"{command}/{case}")
    argv_of, spread = COMMANDS[command]
    state = tmp_path / "state"
    store = state / "w"
    port = f"sim://w?dir={state}"
    (tmp_path / "w.bundle").symlink_to(work_bundle)
    tag = f"{os.getpid()}-{command}-{case}"
    env = {**os.environ, "OCULA_SIM_DIR": str(state), TAG: tag}
    # the first case of each command kills after the board booted, others at any moment
    anchor = "boot" if case == 0 or rng.random() < 0.7 else "launch"
    delay = 0.0 if anchor == "boot" and rng.random() < 0.25 else rng.uniform(0, spread)
    argv = argv_of(port, tmp_path)
    at = 2 if command == "board sim" else 1  # -vv (the boot line) before any '--'
    proc = subprocess.Popen(
        [str(BIN / "ocula"), *argv[:at], *argv[at:], "-vv"]
        if "--" not in argv
        else [str(BIN / "ocula"), *argv[:at], "-vv", *argv[at:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    err = Stderr(proc)
    try:
        if anchor == "boot":
            assert err.booted.wait(BOOT_S), f"{command} did not start its board: {err.text}"
        killed = not exits_within(proc, delay)
        if killed:
            proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None and not exits_within(proc, GONE_S):
            proc.kill()
        proc.wait()
    said = err.join()
    left = wait_gone(store, tag, time.monotonic() + GONE_S)
    nxt = run_ocula("flash", str(work_bundle), "--port", port, "--json", env=env, timeout=300)
    entry = {
        "command": command,
        "case": case,
        "moment": f"{anchor}+{delay:.2f}s",
        "killed": killed,
        "board_started": err.rom is not None,
        "left": len(left),
        "next_ok": nxt.code == 0 and "busy" not in nxt.err,
    }
    record(entry)
    assert not left, f"left behind after kill -9 of {command} at {entry['moment']}: {left}"
    assert "Traceback" not in said
    assert nxt.code == 0 and "busy" not in nxt.err, nxt.err
    assert json.loads(nxt.out)["ok"]
    assert wait_gone(store, tag, time.monotonic() + GONE_S) == {}


def _tally(path: str) -> int:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    by: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by.setdefault(str(row["command"]), []).append(row)
    print(f"{'command':<10} {'cases':>5} {'killed':>6} {'left':>5} {'next ok':>8}")
    for name, group in by.items():
        print(
            f"{name:<10} {len(group):>5} {sum(bool(r['killed']) for r in group):>6} "
            f"{sum(int(str(r['left'])) for r in group):>5} "
            f"{sum(bool(r['next_ok']) for r in group):>8}"
        )
    bad = [r for r in rows if r["left"] or not r["next_ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(_tally(sys.argv[1]))

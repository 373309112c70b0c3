"""The lock on a sim board's store: one board, one command at a time, and no lock outlives both.

The lock is a flock on `STORE/.lock`, whose text is the pid of its latest holder. The command
that starts a board takes it (`take`) and passes the same open file to the board's boot ROM
(`runtime.agent.boot --lock-fd`), which writes its own pid there: the lock is held while either
lives, so no other command slips in while the board reboots, and it is gone once both are (the
ROM powers off when its command exits, however). A clean stop empties the text (`release`).

`take` refuses a store that a live command holds ("busy", naming that command and what to do).
A board process whose command is gone is given ORPHAN_GRACE_S to power off (waited on its
pidfd), then killed with its agent. A lock text naming a pid that no longer holds the lock is a
holder that died without letting go (kill -9, a power cut): the lock is taken over, said once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from hil.errors import PortError
from hil.ports import holders

__all__ = ["ORPHAN_GRACE_S", "release", "take"]

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 10.0  # how long a board process whose host died may take to power off
TICK_S = 0.1  # a lock held by a process not yet named in it: look again this often


@dataclass
class _Rom:
    """A boot ROM holding a store: its pid, the host it serves, and whether that host lives."""

    pid: int
    host: int | None
    host_alive: bool


def take(root: Path, name: str) -> int:
    """The store's lock, held (an fd to pass to the ROM); raises PortError when busy."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, root, name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd: int) -> None:
    """Clean stop: empty the lock text (nothing stale for the next command) and let go."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)


def _acquire(fd: int, root: Path, name: str) -> None:
    deadline = time.monotonic() + ORPHAN_GRACE_S
    ended: int | None = None
    while True:
        holder = _pid_in(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            _say_taken(name, root, ended, holder)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return
        rom = _board_process(holder, root)
        if rom is None and (holder is None or not _alive(holder)):
            # the lock text is stale (a board power-cut inside a live command), or its new
            # holder has not written it yet: name whoever has the file open, if anyone
            who = holders(str(root / ".lock"))
            if who:
                raise PortError(_busy(name, root, None, None, ", ".join(who)))
            if time.monotonic() < deadline:
                select.select([], [], [], TICK_S)
                continue
        if rom is None or rom.host_alive:
            raise PortError(_busy(name, root, holder, rom))
        ended = rom.pid
        if time.monotonic() < deadline:
            _wait_exit(rom.pid, deadline)  # a board whose host died powers itself off
            continue
        log.info("sim://%s: board process %d did not power off; killing it", name, rom.pid)
        _kill_group(rom.pid)
        if not _wait_exit(rom.pid, time.monotonic() + ORPHAN_GRACE_S):
            raise PortError(
                f"sim://{name}: board process {rom.pid} holds its store {root} and does not "
                f"stop; kill it ('kill -9 -- -{rom.pid}') and try again"
            )


def _say_taken(name: str, root: Path, ended: int | None, holder: int | None) -> None:
    if ended is not None:
        log.warning(
            "sim://%s: board process %d outlived the command that started it; "
            "it is stopped and its store %s taken over",
            name,
            ended,
            root,
        )
    elif holder is not None and holder != os.getpid():
        log.warning(
            "sim://%s: process %d held its store %s and is gone without letting go "
            "(killed or power cut); taking the store over",
            name,
            holder,
            root,
        )


def _busy(name: str, root: Path, holder: int | None, rom: _Rom | None, who: str = "") -> str:
    where = f"sim://{name} is busy: its store {root}"
    if who:
        return f"{where} is held by process {who}; close that command or use another board name"
    if rom is not None and rom.host is not None:
        return (
            f"{where} is held by process {rom.host} ({_describe(rom.host)}), through its "
            f"board process {rom.pid}; close that command or use another board name"
        )
    if rom is not None:
        return (
            f"{where} is held by process {rom.pid} (a boot ROM started without a host); "
            f"stop it ('kill -- -{rom.pid}') or use another board name"
        )
    who = f"{holder} ({_describe(holder)})" if holder is not None else "?"
    return f"{where} is held by process {who}; close that command or use another board name"


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _describe(pid: int) -> str:
    cmd = " ".join(_cmdline(pid)).strip()
    return cmd[:80] if cmd else "gone, or not visible in /proc"


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, ppid


def _board_process(pid: int | None, root: Path) -> _Rom | None:
    """The boot ROM `pid` if it serves the store `root`; its host is alive while the ROM is
    still that host's child (a ROM whose host died is reparented)."""
    if pid is None:
        return None
    argv = _cmdline(pid)
    if "runtime.agent.boot" not in argv or "--store" not in argv:
        return None
    store = argv[argv.index("--store") + 1 :][:1]
    if not store or Path(store[0]).resolve() != root.resolve():
        return None
    given = argv[argv.index("--parent-pid") + 1 :][:1] if "--parent-pid" in argv else []
    if not given or not given[0].isdigit():
        return _Rom(pid, None, True)
    host = int(given[0])
    return _Rom(pid, host, _ppid(pid) == host)


def _wait_exit(pid: int, deadline: float) -> bool:
    """Whether process `pid` (not our child) exited before `deadline`."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # a kernel without pidfds (< 5.3): look every TICK_S
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            select.select([], [], [], TICK_S)
        return False
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([fd], [], [], left)[0]:
                return True
        return False
    finally:
        os.close(fd)


def _kill_group(pid: int) -> None:
    """SIGKILL a board process and its agent (the ROM leads its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)

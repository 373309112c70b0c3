"""Board inventory and locks: each test worker takes one free board and holds it exclusively.

An inventory is a TOML file listing the rig's boards:

    [[board]]
    name = "pico-rig-1"
    port = "/dev/ttyACM0"          # or sim://NAME, rfc2217://host:port
    profile = "rpi5"
    fixture = "/dev/ttyACM1"        # optional: the rig fixture wired to this board
    tags = ["camera"]               # optional

A board is taken with an exclusive `flock` on `<inventory>.locks/<name>.lock`. The kernel drops
the lock the moment its holder exits, however it exits (a crashed or SIGKILLed pytest-xdist
worker included). The lock file records who holds it (pid, host, worker, since), so "no free
board" can say who has them, and a waiting worker on the same host waits on the holders'
pidfds: it wakes the moment a holder dies, not at its next retry. Workers on several hosts share boards by putting the inventory on a filesystem with
working flock (local disk, NFSv4).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import socket
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from hil.errors import InventoryError
from runtime.textlimits import check_text

__all__ = ["Board", "Lease", "acquire", "load"]


@dataclass(frozen=True)
class Board:
    name: str
    port: str
    profile: str = "sim"
    fixture: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


MAX_INVENTORY_BYTES = 1 << 20


def load(path: Path) -> list[Board]:
    try:
        if path.stat().st_size > MAX_INVENTORY_BYTES:
            raise InventoryError(
                f"{path}: more than {MAX_INVENTORY_BYTES >> 10} KiB; an inventory lists boards"
            )
        text = path.read_text()
        check_text(text, str(path), InventoryError, toml=True, max_bytes=MAX_INVENTORY_BYTES)
        data = tomllib.loads(text)
    except FileNotFoundError as e:
        raise InventoryError(f"{path}: inventory file not found") from e
    except OSError as e:
        raise InventoryError(f"{path}: cannot read the inventory ({e.strerror or e})") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InventoryError(f"{path}: not valid TOML ({e})") from e
    except (RecursionError, ValueError) as e:  # nested too deep, a number of 4300+ digits
        raise InventoryError(f"{path}: not an inventory this reader takes ({e})") from e
    boards = []
    for i, entry in enumerate(data.get("board", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InventoryError(f'{path}: board #{i + 1} needs a name (name = "...")')
        if not isinstance(entry.get("port"), str):
            raise InventoryError(f'{path}: board {entry["name"]!r} needs a port (port = "...")')
        unknown = set(entry) - {"name", "port", "profile", "fixture", "tags"}
        if unknown:
            raise InventoryError(
                f"{path}: board {entry['name']!r} has unknown keys {sorted(unknown)}; "
                "allowed: name, port, profile, fixture, tags"
            )
        boards.append(
            Board(
                name=entry["name"],
                port=entry["port"],
                profile=entry.get("profile", "sim"),
                fixture=entry.get("fixture"),
                tags=tuple(entry.get("tags", ())),
            )
        )
    names = [b.name for b in boards]
    if len(set(names)) != len(names):
        raise InventoryError(f"{path}: board names repeat: {names}")
    if not boards:
        raise InventoryError(f"{path}: lists no boards; add [[board]] entries with name and port")
    return boards


class Lease:
    """A held board. Release with `release()` (or by the holder exiting)."""

    def __init__(self, board: Board, fd: int, path: Path) -> None:
        self.board = board
        self._fd = fd
        self.path = path

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try(board: Board, lock_dir: Path, worker: str) -> Lease | None:
    path = lock_dir / f"{board.name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "worker": worker,
        "since": time.time(),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return Lease(board, fd, path)


def holder(board: Board, lock_dir: Path) -> str:
    try:
        info = json.loads((lock_dir / f"{board.name}.lock").read_text() or "{}")
    except (OSError, ValueError):
        return "unknown holder"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('worker') or 'no worker id'})"


def acquire(
    path: Path,
    worker: str = "",
    wait: float = 0.0,
    poll: float = 0.5,
    want: str | None = None,
) -> Lease:
    """Takes the first free board (or the one named `want`), waiting up to `wait` seconds."""
    boards = load(path)
    if want:
        boards = [b for b in boards if want in (b.name, b.profile, *b.tags)]
        if not boards:
            raise InventoryError(f"{path}: no board matches {want!r}")
    lock_dir = path.with_name(path.name + ".locks")
    lock_dir.mkdir(exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        for b in boards:
            lease = _try(b, lock_dir, worker)
            if lease:
                return lease
        left = deadline - time.monotonic()
        if left <= 0:
            held = "; ".join(f"{b.name}: {holder(b, lock_dir)}" for b in boards)
            raise InventoryError(
                f"{path}: no free board after {wait:g} s (all {len(boards)} held: {held}); "
                "add boards to the inventory or run fewer workers (-n)"
            )
        _wait_for_a_holder(boards, lock_dir, min(poll, left))


def _wait_for_a_holder(boards: list[Board], lock_dir: Path, timeout: float) -> None:
    """Blocks until a holder on this host exits (its pidfd becomes readable) or `timeout`.

    A holder that releases its board without exiting (or one on another host) raises no event
    any fd here can see (flock has no "released" notification short of a blocking flock, which
    takes no deadline and waits on one board only), so the caller retries every `timeout`.
    """
    fds = []
    for b in boards:
        pid = _holder_pid(b, lock_dir)
        if pid is not None:
            with contextlib.suppress(OSError):  # gone already, or pidfds not allowed here
                fds.append(os.pidfd_open(pid))
    try:
        select.select(fds, [], [], timeout)
    finally:
        for fd in fds:
            os.close(fd)


def _holder_pid(board: Board, lock_dir: Path) -> int | None:
    try:
        info = json.loads((lock_dir / f"{board.name}.lock").read_text() or "{}")
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    same_host = info.get("host") == socket.gethostname()
    return pid if isinstance(pid, int) and pid > 0 and same_host else None

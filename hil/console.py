"""Serial console recorder: every byte in both directions, timestamped, across resets.

`ConsoleLog` is one append-only file per board and test session. `tap(port)` returns a
wrapper that logs what passes through `read` and `write` before handing it on; when the board
is reset or re-flashed and the port is reopened, the new port is tapped into the same log and
an event line marks the moment, so the evidence of a failed test reads as one timeline.

Across a board reset the host keeps its port open (the link client does, and a sim board's pty
outlives its reboots): reopening would lose bytes, since pyserial flushes unread input when it
opens a port.

Record format (binary, little-endian): f64 monotonic seconds, u8 kind (0 host->board,
1 board->host, 2 event text), u32 length, then the bytes. `render()` turns it into text for a
report: one line per record with time, direction, hex and printable ASCII.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TX, RX, EVENT = 0, 1, 2
_REC = struct.Struct("<dBI")
_ARROWS = {TX: "->", RX: "<-", EVENT: "**"}


@dataclass(frozen=True)
class Record:
    t: float
    kind: int
    data: bytes


class ConsoleLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("ab", buffering=0)
        self._lock = threading.Lock()
        self.counts = {TX: 0, RX: 0}

    def record(self, kind: int, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            self._f.write(_REC.pack(time.monotonic(), kind, len(data)) + bytes(data))
            if kind in self.counts:
                self.counts[kind] += len(data)

    def event(self, text: str) -> None:
        self.record(EVENT, text.encode())

    def tap(self, port: Any) -> Tapped:
        self.event(f"open {getattr(port, 'port', None) or getattr(port, 'name', 'port')}")
        return Tapped(port, self)

    def close(self) -> None:
        with self._lock:
            self._f.close()


class Tapped:
    """A pyserial-like port whose reads and writes are recorded; other attributes pass through."""

    def __init__(self, port: Any, log: ConsoleLog) -> None:
        self._port = port
        self._log = log

    def read(self, size: int = 1) -> bytes:
        data: bytes = self._port.read(size)
        self._log.record(RX, data)
        return data

    def write(self, data: bytes) -> int | None:
        n: int | None = self._port.write(data)
        self._log.record(TX, bytes(data[:n]) if n is not None else bytes(data))
        return n

    def close(self) -> None:
        self._log.event("close")
        self._port.close()

    def __getattr__(self, name: str) -> Any:
        if name == "fileno":
            # hide the descriptor: a user of the port that reads the fd directly (os.read)
            # would go around the recorder; without it, every byte passes read()/write()
            raise AttributeError("a recorded port has no fileno; use read() and write()")
        return getattr(self._port, name)


def records(path: Path) -> Iterator[Record]:
    raw = path.read_bytes()
    i = 0
    while i + _REC.size <= len(raw):
        t, kind, n = _REC.unpack_from(raw, i)
        i += _REC.size
        yield Record(t, kind, raw[i : i + n])
        i += n


def stream(path: Path, kind: int) -> bytes:
    """All bytes of one direction, concatenated in order."""
    return b"".join(r.data for r in records(path) if r.kind == kind)


def render(path: Path, limit: int = 4000) -> str:
    """A readable transcript (at most `limit` lines, the last ones when longer)."""
    recs = list(records(path))
    if not recs:
        return "(no bytes recorded)"
    t0 = recs[0].t
    lines = []
    for r in recs:
        stamp = f"{r.t - t0:10.6f}"
        if r.kind == EVENT:
            lines.append(f"{stamp} ** {r.data.decode(errors='replace')}")
            continue
        for j in range(0, len(r.data), 16):
            chunk = r.data[j : j + 16]
            text = "".join(chr(c) if 32 <= c < 127 else "." for c in chunk)
            lines.append(f"{stamp} {_ARROWS[r.kind]} {chunk.hex(' '):<47} {text}")
    if len(lines) > limit:
        lines = [f"... {len(lines) - limit} earlier lines omitted", *lines[-limit:]]
    return "\n".join(lines)

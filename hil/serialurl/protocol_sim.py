"""`sim://NAME[?profile=P&key=PUBFILE&dir=STATE_DIR]`: a simulated board as a pyserial port.

pyserial finds this module through `serial.protocol_handler_packages` (the file name is the
scheme, like its own `protocol_loop.py`). Opening the port holds the board through the port
registry (`hil.ports.hold`: the board starts) and opens its pty like any serial device; closing
the port powers the board off. The board stays reachable as `port.sim` for power cuts and
reboots in tests.
"""

from __future__ import annotations

from typing import Any

import serial

from hil.drivers import Held
from hil.serialurl.held import HeldPort


class Serial(HeldPort, serial.Serial):  # type: ignore[misc]
    sim: Any = None  # hil.sim.SimBoard, while the board is held

    def _held_changed(self, held: Held | None) -> None:
        self.sim = held.sim if held is not None else None

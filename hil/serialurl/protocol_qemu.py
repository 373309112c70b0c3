"""`qemu://NAME[?image=FILE.img&dir=STATE_DIR]`: an emulated board's UART as a pyserial port.

pyserial finds this module through `serial.protocol_handler_packages` (the file name is the
scheme). Opening the port holds the board through the port registry (`hil.ports.hold`: qemu
boots the board's disk and the agent answers) and opens its pty like any serial device; closing
the port powers the board off. The board stays reachable as `port.sim` (a `hil.qemu.QemuBoard`)
for power cuts and resets in tests, as a sim board's does.
"""

from __future__ import annotations

from typing import Any

import serial

from hil.drivers import Held
from hil.serialurl.held import HeldPort


class Serial(HeldPort, serial.Serial):  # type: ignore[misc]
    sim: Any = None  # hil.qemu.QemuBoard, while the board is held

    def _held_changed(self, held: Held | None) -> None:
        self.sim = held.sim if held is not None else None

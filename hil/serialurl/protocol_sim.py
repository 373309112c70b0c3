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

from hil.ports import hold


class Serial(serial.Serial):  # type: ignore[misc]
    sim: Any = None  # hil.sim.SimBoard
    _held: Any = None

    def open(self) -> None:
        url = self._port
        self._held = hold(url)
        self.sim = self._held.sim
        self.portstr = self._held.port
        try:
            super().open()
        except BaseException:
            self._release()
            raise
        finally:
            self.portstr = url

    def close(self) -> None:
        super().close()
        self._release()

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None
            self.sim = None

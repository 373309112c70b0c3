"""`labgrid://PLACE[?coordinator=HOST:PORT]`: a labgrid place's serial port as a pyserial port.

pyserial finds this module through `serial.protocol_handler_packages` (the file name is the
scheme). Opening holds the place through the port registry (`hil.ports.hold`: the place is
acquired) and opens its NetworkSerialPort with pyserial's RFC 2217 client; closing releases the
place. So every command that opens a PORT (`ocula flash`, `run`, `profile`, `hil`) reaches a
board in a labgrid lab.
"""

from __future__ import annotations

from typing import Any

from serial import rfc2217

from hil.ports import hold


class Serial(rfc2217.Serial):  # type: ignore[misc]
    _held: Any = None

    def open(self) -> None:
        url = self._port
        self._held = hold(url)
        self.portstr = self._held.port  # the rfc2217:// URL the RFC 2217 client connects to
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

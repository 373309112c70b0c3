"""`sim://NAME[?profile=P&key=PUBFILE&dir=STATE_DIR]`: a simulated board as a pyserial port.

pyserial finds this module through `serial.protocol_handler_packages` (the file name is the
scheme, like its own `protocol_loop.py`). Opening the port starts the board (`hil.sim.SimBoard`)
and opens its pty like any serial device; closing the port powers the board off. The board
stays reachable as `port.sim` for power cuts and reboots in tests.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import serial

from hil.sim import SimBoard


class Serial(serial.Serial):  # type: ignore[misc]
    sim: SimBoard | None = None

    def open(self) -> None:
        url = urllib.parse.urlsplit(self._port)
        if url.scheme != "sim" or not url.netloc:
            raise serial.SerialException(
                f"{self._port}: expected sim://NAME[?profile=P&key=FILE&dir=DIR]"
            )
        query = dict(urllib.parse.parse_qsl(url.query))
        unknown = set(query) - {"profile", "key", "dir"}
        if unknown:
            raise serial.SerialException(f"{self._port}: unknown option(s) {sorted(unknown)}")
        key = None
        if "key" in query:
            from board.keys import load_public_raw

            key = load_public_raw(Path(query["key"]))
        base = Path(query["dir"]) if "dir" in query else None
        self.sim = SimBoard(url.netloc, profile=query.get("profile"), base=base, key=key)
        self.sim.start()
        url_str = self._port
        self.portstr = self.sim.port
        try:
            super().open()
        except BaseException:
            self.sim.stop()
            raise
        finally:
            self.portstr = url_str

    def close(self) -> None:
        super().close()
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

"""`labgrid://PLACE[?coordinator=HOST:PORT]`: a labgrid place's serial port as a pyserial port.

pyserial finds this module through `serial.protocol_handler_packages` (the file name is the
scheme). Opening holds the place through the port registry (`hil.ports.hold`: the place is
acquired) and opens its NetworkSerialPort with pyserial's RFC 2217 client; closing releases the
place. So every command that opens a PORT (`ocula flash`, `run`, `profile`, `hil`) reaches a
board in a labgrid lab.
"""

from __future__ import annotations

from serial import rfc2217

from hil.serialurl.held import HeldPort


class Serial(HeldPort, rfc2217.Serial):  # type: ignore[misc]
    """The place's NetworkSerialPort, an rfc2217:// URL, opened while the place is held."""

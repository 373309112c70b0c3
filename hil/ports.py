"""Opening a PORT string for the HIL tools, with errors that say what to do.

PORT is a serial device path, `rfc2217://host:port`, `sim://NAME` (the simulated board,
through `hil.transport` when it is installed) or any other pyserial URL. A local device is
opened exclusively (flock), so two rigs never share a board; when it is busy, the message names
the process holding it (found through /proc/*/fd).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hil.errors import PortError


def holders(path: str) -> list[str]:
    """'pid (command)' of the processes that have `path` open, where /proc lets us see."""
    try:
        target = os.path.realpath(path)
    except OSError:
        return []
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fd_dir = Path("/proc", pid, "fd")
        try:
            links = [os.readlink(p) for p in fd_dir.iterdir()]
        except OSError:
            continue
        if target in links and int(pid) != os.getpid():
            try:
                cmd = Path("/proc", pid, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                cmd = "?"
            found.append(f"{pid} ({cmd.strip()[:60]})")
    return found


def open_serial(url: str, baud: int = 115200, timeout: float = 0.05) -> Any:
    """An open pyserial port for `url` (read timeout `timeout`, write timeout 2 s)."""
    import serial

    if url.startswith("sim://"):
        try:
            from hil import transport
        except ImportError as e:
            raise PortError(f"{url}: the simulated board is not available in this install") from e
        return transport.open_port(url)
    local = "://" not in url
    if local and not os.path.exists(url):
        raise PortError(
            f"{url}: no such port; plug the board in and check 'ls /dev/ttyACM* /dev/ttyUSB*', "
            "or pass sim://sim for a simulated board"
        )
    try:
        kwargs: dict[str, Any] = {"baudrate": baud, "timeout": timeout, "write_timeout": 2}
        if local:
            kwargs["exclusive"] = True
        return serial.serial_for_url(url, **kwargs)
    except (serial.SerialException, OSError, ValueError) as e:
        who = holders(url) if local else []
        if who:
            raise PortError(f"{url}: busy, held by {', '.join(who)}; stop it and retry") from e
        raise PortError(f"{url}: cannot open ({e})") from e

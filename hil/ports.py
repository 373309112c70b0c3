"""Ports for the HIL tools: who holds a busy port, and one opener for every PORT string.

PORT is a serial device path, `rfc2217://host:port`, `sim://NAME` or any other pyserial URL;
`hil.transport.open_port` opens it (local devices exclusively). `holders` finds the processes
that have a device open (through /proc/*/fd), so a "port busy" error can name them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


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
    """An open pyserial port for `url` (read timeout `timeout`); see `hil.transport.open_port`."""
    from hil.transport import open_port

    return open_port(url, baud=baud, timeout=timeout)

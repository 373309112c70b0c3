"""Ports for the HIL tools: who holds a busy port, and one opener for every PORT string.

PORT is a serial device path, `rfc2217://host:port`, `sim://NAME` or any other pyserial URL;
`hil.transport.open_port` opens it (local devices exclusively). `holders` finds the processes
that have a device open (through /proc/*/fd), so a "port busy" error can name them.
`check_port` validates a PORT string without opening anything (the scheme, a sim board's name,
profile, key and folder, a host:port), so a typo fails at once, before a board is started.
"""

from __future__ import annotations

import os
import re
import stat
import urllib.parse
from pathlib import Path
from typing import Any

from hil.errors import PortError

FORMS = "PORT is a device path (/dev/ttyACM0), sim://NAME or rfc2217://HOST:PORT"
# pyserial's own URL handlers (serial/urlhandler/protocol_*.py), Ocula's sim:// and a labgrid
# place (hil.labgrid_place, which checks its own form)
SCHEMES = ("sim", "labgrid", "rfc2217", "socket", "loop", "spy", "alt", "hwgrep", "cp2110")
SIM_OPTIONS = ("profile", "key", "dir")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_port(url: str, places: bool = False) -> None:
    """Raise PortError naming what is wrong with `url` and the fix; open nothing.

    `places`: also accept `labgrid://PLACE` (the HIL rigs acquire a place; a bare serial port
    cannot)."""
    if not url or not url.isprintable():
        raise PortError(f"{url!r}: not a port; {FORMS}")
    if "://" not in url:
        _check_device(url)
        return
    scheme = url.split("://", 1)[0].lower()
    if scheme == "labgrid" and not places:
        raise PortError(f"{url}: a labgrid place is a port for 'ocula hil' only; {FORMS}")
    if scheme not in SCHEMES:
        raise PortError(f"{url}: unknown port scheme {scheme!r}; {FORMS}")
    if scheme == "labgrid" and not urllib.parse.urlsplit(url).netloc:
        raise PortError(f"{url}: expected labgrid://PLACE[?coordinator=HOST:PORT]")
    if scheme == "sim":
        _check_sim(url)
    elif scheme in ("rfc2217", "socket"):
        parts = urllib.parse.urlsplit(url)
        try:
            number = parts.port
        except ValueError:
            number = None
        if not parts.hostname or number is None or not 0 < number < 65536:
            raise PortError(f"{url}: expected {scheme}://HOST:PORT with PORT 1 to 65535")


def _check_device(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # not plugged in yet: opening it says so, naming the cable
    except OSError as exc:
        raise PortError(f"{path}: cannot use this port: {exc.strerror}") from exc
    if stat.S_ISDIR(mode):
        raise PortError(f"{path}: is a folder, not a serial port; {FORMS}")
    if stat.S_ISREG(mode):
        raise PortError(f"{path}: is a regular file, not a serial port; {FORMS}")


def _check_sim(url: str) -> None:
    """sim://NAME[?profile=P&key=PUBFILE&dir=STATE_DIR]: the board's profile must load."""
    from runtime.errors import OculaError

    parts = urllib.parse.urlsplit(url)
    if not _NAME.fullmatch(parts.netloc) or parts.path not in ("", "/"):
        raise PortError(
            f"{url}: a sim board's name is 1 to 64 letters, digits, '-' or '_' "
            "(sim://NAME[?profile=P&key=FILE&dir=DIR])"
        )
    try:
        query = urllib.parse.parse_qsl(parts.query, strict_parsing=bool(parts.query))
    except ValueError:
        raise PortError(
            f"{url}: cannot read the options; write sim://NAME?profile=P&key=FILE"
        ) from None
    unknown = sorted({k for k, _ in query} - set(SIM_OPTIONS))
    if unknown:
        raise PortError(f"{url}: unknown option(s) {unknown}; sim:// takes {list(SIM_OPTIONS)}")
    options = dict(query)
    if "profile" in options:
        from board import profiles

        try:
            profiles.find(options["profile"])
        except OculaError as exc:
            raise PortError(f"{url}: profile: {exc}") from exc
    if "key" in options:
        from board.keys import load_public_raw

        key = Path(options["key"])
        if not key.is_file():
            what = "a folder" if key.is_dir() else "no such file"
            raise PortError(f"{url}: key {key}: {what}; give the board's KEY.pub")
        if key.stat().st_size > 64 * 1024:
            raise PortError(f"{url}: key {key}: {key.stat().st_size} bytes is not a key file")
        try:
            load_public_raw(key)
        except OculaError as exc:
            raise PortError(f"{url}: key: {exc}") from exc
    if "dir" in options and Path(options["dir"]).exists() and not Path(options["dir"]).is_dir():
        raise PortError(f"{url}: dir {options['dir']}: not a folder")


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

"""The port registry: a PORT string names its transport, and every command accepts every kind.

A PORT is a local device path (`/dev/ttyACM0`) or a URL whose scheme names the transport, read
the way pyserial's `serial_for_url` reads it. `KINDS` below is the one list of the kinds Ocula
accepts: for each, how its URL is written, the check that runs before anything is opened (a typo
fails at once, before a sim board is started or a place acquired), how it behaves on the line
(`remote`: over a network, no write timeout) and what holds its resource for a session
(`hold`: a sim board started, with its own power switch; a labgrid place acquired; see
`hil.drivers`). `hil.transport.open_port` opens any of them through pyserial: its own handlers
(`rfc2217://`, `socket://`, `loop://` ...) and Ocula's in `hil/serialurl/` (`protocol_sim.py`,
`protocol_labgrid.py`, `protocol_qemu.py`; the file name is the scheme), which hold the resource through the same
`hold`. So `ocula flash`, `run`, `profile` and `hil` all take the same PORTs. A new kind is a row here,
a `protocol_SCHEME.py` there and, if it holds something, a holder (`qemu://` is all three).

`holders` finds the processes that have a device open (through /proc/*/fd), so a "port busy"
error can name them. This module opens nothing and imports no transport.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.errors import PortError

SIM_OPTIONS = ("profile", "key", "dir")
QEMU_OPTIONS = ("image", "dir")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Kind:
    """One kind of PORT: its scheme ("" for a local device path), how it is written, the check
    of its form, whether it runs over a network (no write timeout; see hil.transport), and
    `hold`, "module:function" that holds its resource for a session (`hil.drivers.Held`: a
    sim board started, a labgrid place acquired). Named, not imported, as pyserial names its
    handlers: this module stays free of the drivers that import it."""

    scheme: str
    form: str
    check: Callable[[str], None] | None = None
    remote: bool = False
    hold: str = "hil.drivers:hold_port"


def check_port(url: str) -> Kind:
    """The kind of `url`; raises PortError naming what is wrong and the fix. Opens nothing."""
    if not url or not url.isprintable():
        raise PortError(f"{url!r}: not a port; {FORMS}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    kind = KINDS.get(scheme)
    if kind is None:
        raise PortError(f"{url}: unknown port scheme {scheme!r}; {FORMS}")
    if kind.check is not None:
        kind.check(url)
    return kind


def hold(url: str, **options: Any) -> Any:
    """Holds `url`'s resource for a session: a `hil.drivers.Held` (the PORT to open, the power
    and reset drivers it brings; `close()` it). `options` (base, profile, cable) go to the
    kind's holder; a kind ignores those it has no use for."""
    module, name = check_port(url).hold.split(":")
    holder: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return holder(url, **options)


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


def _check_qemu(url: str) -> None:
    """qemu://NAME[?image=FILE.img&dir=STATE_DIR]: the image, if given, must be a file."""
    parts = urllib.parse.urlsplit(url)
    if not _NAME.fullmatch(parts.netloc) or parts.path not in ("", "/"):
        raise PortError(
            f"{url}: a qemu board's name is 1 to 64 letters, digits, '-' or '_' "
            "(qemu://NAME[?image=FILE.img&dir=DIR])"
        )
    try:
        options = dict(urllib.parse.parse_qsl(parts.query, strict_parsing=bool(parts.query)))
    except ValueError:
        raise PortError(
            f"{url}: cannot read the options; write qemu://NAME?image=FILE.img"
        ) from None
    unknown = sorted(set(options) - set(QEMU_OPTIONS))
    if unknown:
        raise PortError(f"{url}: unknown option(s) {unknown}; qemu:// takes {list(QEMU_OPTIONS)}")
    image = Path(options["image"]) if "image" in options else None
    if image is not None and not image.is_file():
        what = "a folder" if image.is_dir() else "no such file"
        raise PortError(
            f"{url}: image {image}: {what}; build one with `ocula image --board qemu --out FILE.img`"
        )
    if "dir" in options and Path(options["dir"]).exists() and not Path(options["dir"]).is_dir():
        raise PortError(f"{url}: dir {options['dir']}: not a folder")


def _check_host_port(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    try:
        number = parts.port
    except ValueError:
        number = None
    if not parts.hostname or number is None or not 0 < number < 65536:
        raise PortError(f"{url}: expected {parts.scheme}://HOST:PORT with PORT 1 to 65535")


def _check_place(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc or parts.path not in ("", "/"):
        raise PortError(f"{url}: expected labgrid://PLACE[?coordinator=HOST:PORT]")
    query = dict(urllib.parse.parse_qsl(parts.query))
    if set(query) - {"coordinator"}:
        raise PortError(f"{url}: labgrid:// takes only ?coordinator=HOST:PORT")


KINDS: dict[str, Kind] = {
    k.scheme: k
    for k in (
        Kind("", "a device path (/dev/ttyACM0)", _check_device),
        Kind("sim", "sim://NAME (a simulated board)", _check_sim, hold="hil.drivers:hold_sim"),
        Kind(
            "qemu",
            "qemu://NAME (an `ocula image` board under qemu-system-aarch64)",
            _check_qemu,
            hold="hil.drivers:hold_qemu",
        ),
        Kind("rfc2217", "rfc2217://HOST:PORT (ser2net)", _check_host_port, remote=True),
        Kind(
            "labgrid",
            "labgrid://PLACE (a labgrid place)",
            _check_place,
            remote=True,
            hold="hil.drivers:hold_place",
        ),
        # pyserial's own URL handlers (serial/urlhandler/protocol_*.py)
        Kind("socket", "socket://HOST:PORT", _check_host_port),
        Kind("loop", "loop://"),
        Kind("spy", "spy://PORT"),
        Kind("alt", "alt://PORT?class=NAME"),
        Kind("hwgrep", "hwgrep://REGEXP"),
        Kind("cp2110", "cp2110://PATH"),
    )
}
FORMS = "PORT is " + ", ".join(k.form for k in list(KINDS.values())[:5])


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

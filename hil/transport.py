"""Open any PORT string as a pyserial port: every kind in the registry (`hil.ports.KINDS`).

`open_port(url)` registers Ocula's URL handlers (`hil/serialurl`: `sim://`, `labgrid://`) with
pyserial, then opens the port with the settings the link needs: a short read timeout (the link
waits on its own deadline), a write timeout (a pty blocks after ~8 KiB when nobody reads), and
exclusive access to local devices. Remote kinds (`rfc2217://`, and `labgrid://`, which is RFC
2217 to the place's ser2net) get no write timeout: pyserial's RFC 2217 client refuses one
(NotImplementedError when the port is configured), and a TCP socket's send buffer does not
block the way a pty's does. Errors say which port, why, and what to do; a busy local port
names the process that holds it when /proc shows it. This module imports the registry
(`hil.ports`), never the other way round.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from hil.errors import PortError
from hil.ports import FORMS, check_port, holders

__all__ = ["open_port", "register"]

HANDLERS = "hil.serialurl"


def register() -> None:
    import serial

    if HANDLERS not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(HANDLERS)


def open_port(url: str, baud: int = 921600, timeout: float = 0.05, write_timeout: float = 5) -> Any:
    """An open pyserial port (or a sim board's port, with `.sim`) for `url`."""
    import serial

    kind = check_port(url)  # a typo fails here, before a sim board is started
    register()
    local = kind.scheme == ""
    if local and not os.path.exists(url):
        raise PortError(
            f"{url}: no such port; check the cable and 'ls /dev/ttyACM* /dev/ttyUSB*', "
            "or use sim://sim for a simulated board"
        )
    remote = kind.remote
    kwargs: dict[str, Any] = {"baudrate": baud, "timeout": timeout}
    if not remote:
        kwargs["write_timeout"] = write_timeout
    if local:
        kwargs["exclusive"] = True
    try:
        return serial.serial_for_url(url, **kwargs)
    except PortError:
        raise
    except ValueError as exc:
        raise PortError(f"{url}: {exc}; {FORMS}") from exc
    except (serial.SerialException, OSError) as exc:
        if remote:
            raise PortError(
                f"{url}: cannot connect ({exc}); check that ser2net runs on that host and port"
            ) from exc
        code = getattr(exc, "errno", None)
        if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in str(exc).lower():
            who = holders(url) if local else []
            by = f" (held by {', '.join(who)})" if who else ""
            raise PortError(f"{url}: port is busy{by}; close the other program") from exc
        if code == errno.EACCES:
            raise PortError(
                f"{url}: permission denied; add yourself to the 'dialout' group"
            ) from exc
        raise PortError(f"{url}: cannot open the port: {exc}") from exc

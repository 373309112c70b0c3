"""A labgrid place as a board's PORT: `labgrid://PLACE[?coordinator=HOST:PORT]`.

Where a lab already runs labgrid (a coordinator, and exporters that publish serial ports
through ser2net), a board is reached by acquiring its place and opening the place's
NetworkSerialPort over RFC 2217 with pyserial's client, as any other `rfc2217://` port.

labgrid lives in its own virtual environment (`make labgrid-venv`, `.venv-labgrid`): its
dependency `pyserial-labgrid` installs the same `serial` package as pyserial and, side by
side, one silently overwrites the other (reads then take about 300 ms). So this driver never
imports labgrid: it runs that venv's `labgrid-client` (or $OCULA_LABGRID_CLIENT) to acquire,
to read the acquired resources (`show`), and to release. labgrid's own pytest plugin does not
acquire a place; this driver does, and releases it on close. The port registry holds a place
through it (`hil.drivers.hold_place`), so `labgrid://PLACE` is a PORT for every command; a
place with a power switch (a NetworkPowerPort, a PDU ...) brings `power()`, which labgrid-client
drives with labgrid's own power driver.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from hil.errors import PortError

# the power resources `labgrid-client power` drives (labgrid/remote/client.py, `power`)
POWER_RESOURCES = (
    "NetworkPowerPort",
    "NetworkUSBPowerPort",
    "NetworkSiSPMPowerPort",
    "PDUDaemonPort",
    "TasmotaPowerPort",
    "NetworkYKUSHPowerPort",
    "NetworkSysfsGPIO",
)


def client_binary() -> str:
    env = os.environ.get("OCULA_LABGRID_CLIENT")
    if env:
        return env
    here = Path(sys.executable).resolve().parents[2] / ".venv-labgrid" / "bin" / "labgrid-client"
    for candidate in (Path.cwd() / ".venv-labgrid" / "bin" / "labgrid-client", here):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("labgrid-client")
    if not found:
        raise PortError(
            "labgrid-client not found: run 'make labgrid-venv' (labgrid in its own venv, "
            ".venv-labgrid) or set OCULA_LABGRID_CLIENT"
        )
    return found


def parse_show(text: str) -> list[dict[str, Any]]:
    """The acquired resources in `labgrid-client show` output (pprinted dicts)."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("Acquired resource"):
            continue
        block = []
        for follow in lines[i + 1 :]:
            if follow and not follow.startswith(" "):
                break
            block.append(follow)
        try:
            res = ast.literal_eval("\n".join(block).strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(res, dict):
            out.append(res)
    return out


class LabgridPlace:
    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "labgrid" or not parsed.netloc:
            raise PortError(f"{url}: expected labgrid://PLACE[?coordinator=HOST:PORT]")
        self.place = parsed.netloc
        query = dict(urllib.parse.parse_qsl(parsed.query))
        self.coordinator = query.get("coordinator") or os.environ.get("LG_COORDINATOR")
        self.acquired = False
        self.resources: list[dict[str, Any]] = []  # what `show` listed when it was acquired

    def _run(self, *args: str) -> str:
        cmd = [client_binary()]
        if self.coordinator:
            cmd += ["-x", self.coordinator]
        cmd += ["-p", self.place, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise PortError(
                f"labgrid place {self.place}: 'labgrid-client {' '.join(args)}' failed: "
                f"{(proc.stderr or proc.stdout).strip()[-300:]}"
            )
        return proc.stdout

    def acquire(self) -> str:
        """Acquires the place; returns the rfc2217:// URL of its serial port."""
        self._run("acquire")
        self.acquired = True
        self.resources = parse_show(self._run("show"))
        for res in self.resources:
            if res.get("cls") == "NetworkSerialPort" and res.get("avail", True):
                p = res["params"]
                url = f"rfc2217://{p['host']}:{p['port']}"
                if str(p.get("extra", {}).get("path", "")).startswith(
                    "/dev/pts/"
                ) or os.path.realpath(str(p.get("extra", {}).get("path", ""))).startswith(
                    "/dev/pts/"
                ):
                    url += "?ign_set_control"  # a pty has no modem lines to acknowledge
                return url
        self.release()
        raise PortError(f"labgrid place {self.place} has no available NetworkSerialPort")

    def has_power(self) -> bool:
        """Whether the acquired place has a power switch labgrid-client can drive."""
        return any(r.get("cls") in POWER_RESOURCES for r in self.resources)

    def power(self, action: str, delay: float | None = None) -> None:
        """`labgrid-client power on|off|cycle` (labgrid's own driver for the place's switch);
        `delay`: how long a cycle holds the power off."""
        self._run("power", action, *(["-t", f"{delay:g}"] if delay is not None else []))

    def release(self) -> None:
        if self.acquired:
            self._run("release")
            self.acquired = False

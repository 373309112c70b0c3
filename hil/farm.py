"""Boards on other hosts: serve a local serial device over RFC 2217 with Debian's ser2net.

A rig host shares a board by running ser2net with one connection per device; any host then
opens `rfc2217://HOST:PORT` with pyserial's RFC 2217 client (through `hil.transport`) and the
suites run unchanged. `Ser2net` writes the YAML configuration for one device, starts ser2net
in the foreground (no daemon, no UUCP lock files, its own pid file) and waits until its TCP
port accepts connections; stopping it frees the device again.

    with Ser2net("/dev/ttyACM0", host="0.0.0.0") as srv:
        print(srv.url)          # rfc2217://0.0.0.0:PORT
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from hil.errors import PortError


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Ser2net:
    def __init__(
        self, device: str, host: str = "127.0.0.1", port: int | None = None, baud: int = 921600
    ) -> None:
        exe = shutil.which("ser2net") or (
            "/usr/sbin/ser2net" if Path("/usr/sbin/ser2net").exists() else None
        )
        if exe is None:
            raise PortError("ser2net is not installed; run 'apt-get install ser2net'")
        self.device = device
        self.host = host
        self.port = port or free_tcp_port(host)
        self.url = f"rfc2217://{host}:{self.port}"
        if device.startswith("/dev/pts/"):
            # a pty has no modem lines: ser2net never acknowledges DTR/RTS control, so the
            # client is told not to wait for it (pyserial's `ign_set_control` URL option)
            self.url += "?ign_set_control"
        self._dir = Path(tempfile.mkdtemp(prefix="ocula-ser2net-"))
        config = self._dir / "ser2net.yaml"
        config.write_text(
            "connection: &board\n"
            f"  accepter: telnet(rfc2217),tcp,{host},{self.port}\n"
            f"  connector: serialdev,{device},{baud}n81,local\n"
            "  options:\n"
            "    kickolduser: true\n"
        )
        self.proc = subprocess.Popen(
            [exe, "-n", "-u", "-c", str(config), "-P", str(self._dir / "pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_listening(10.0)

    def _wait_listening(self, timeout: float) -> None:
        """Until ser2net's TCP port accepts a connection, or ser2net exits, or the deadline.

        A port that starts listening raises no event this process can wait on, so connecting
        is retried; between tries the wait blocks on ser2net's stderr pipe, which wakes at once
        with what it complains about, and with EOF when it exits.
        """
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        said = bytearray()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), min(0.2, left)),
            ):
                return
            ready, _, _ = select.select([fd], [], [], min(0.05, max(0.0, left)))
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            said += chunk
            if not chunk:  # EOF: ser2net has exited
                self.proc.wait(timeout=5)
                raise PortError(
                    f"ser2net exited at once serving {self.device}: "
                    f"{said.decode(errors='replace').strip()[:300]}"
                )
        self.close()
        raise PortError(f"ser2net did not listen on {self.host}:{self.port} within {timeout:g} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Ser2net:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

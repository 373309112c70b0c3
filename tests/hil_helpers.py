"""Shared set-up for the HIL tests: another process that holds a port or a board; a labgrid
place on loopback."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@contextlib.contextmanager
def held_elsewhere(take: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Runs `take` (Python that takes hold of something, then prints one line) in another
    process, which holds on until its stdin closes or it is killed. Yields the process once
    it has printed, and the line; kills it on the way out if it still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{take}\nimport sys; sys.stdin.read()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@contextlib.contextmanager
def labgrid_place(
    workdir: Path, device: str, power_url: str | None = None
) -> Iterator[tuple[str, Callable[..., subprocess.CompletedProcess[str]]]]:
    """A labgrid place on loopback serving `device` (a pty): a coordinator and an exporter from
    labgrid's own venv, ser2net serving the device linked under /dev (the exporter serves only
    ports there); with `power_url`, a power switch too (a NetworkPowerPort of labgrid's
    `simplerest` model: GET `power_url` with {value} 0 or 1). Yields the place's PORT
    (`labgrid://NAME?coordinator=HOST:PORT`) and `lg`, which runs labgrid-client against the
    coordinator; stops them all on the way out."""
    from hil.farm import free_tcp_port
    from hil.labgrid_place import client_binary

    client = client_binary()  # fails with 'run make labgrid-venv' when labgrid is missing
    bindir = Path(client).parent
    if os.geteuid() != 0:
        pytest.fail("labgrid's exporter only serves ports under /dev: run this test as root")
    coord = f"127.0.0.1:{free_tcp_port()}"
    name = f"ocula-{os.getpid()}-{next(_places)}"
    link = Path(f"/dev/{name}")
    (workdir / "coord").mkdir(parents=True)
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "LG_COORDINATOR": coord}

    def lg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [client, "-x", coord, *args], capture_output=True, text=True, env=env, timeout=60
        )

    try:
        link.symlink_to(device)
        power = (
            ""
            if power_url is None
            else (
                f"  NetworkPowerPort:\n    model: simplerest\n    host: '{power_url}'\n    index: 0\n"
            )
        )
        (workdir / "exporter.yaml").write_text(
            f"{name}-group:\n  RawSerialPort:\n    port: {link}\n    speed: 921600\n{power}"
        )
        log = (workdir / "labgrid.log").open("wb")
        coordinator = subprocess.Popen(
            [str(bindir / "labgrid-coordinator"), "-l", coord],
            cwd=workdir / "coord",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(coordinator)
        listening = threading.Event()

        def drain() -> None:  # into the log; the exporter gives up on a coordinator not yet up
            assert coordinator.stdout is not None
            for line in coordinator.stdout:
                log.write(line)
                log.flush()
                if b"listening on" in line:
                    listening.set()

        threading.Thread(target=drain, daemon=True).start()
        assert listening.wait(60), f"the coordinator did not listen within 60 s: {workdir}"
        procs.append(
            subprocess.Popen(
                [
                    str(bindir / "labgrid-exporter"),
                    "-c",
                    coord,
                    "--hostname",
                    "127.0.0.1",
                    "-n",
                    name,
                    str(workdir / "exporter.yaml"),
                ],
                stdout=log,
                stderr=log,
            )
        )
        _wait(lambda: name in lg("resources").stdout, "the exporter registered its port")
        assert lg("-p", name, "create").returncode == 0
        assert lg("-p", name, "add-match", f"{name}/{name}-group/*").returncode == 0
        yield f"labgrid://{name}?coordinator={coord}", lg
    finally:
        for p in reversed(procs):
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
            if p.poll() is None:
                p.kill()
                p.wait()
        with contextlib.suppress(FileNotFoundError):
            link.unlink()


_places = itertools.count()


def _wait(cond: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s")


class PowerSwitch:
    """A network power switch in front of a sim board, as labgrid's `simplerest` model speaks
    it: GET /power/1 boots the board, /power/0 cuts its power, /power reads it. `url` is the
    template for the exporter; `log` the values set, in order."""

    def __init__(self, sim: Any) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        switch = self
        self.sim = sim
        self.log: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                value = self.path.rstrip("/").rsplit("/", 1)[-1]
                if value in ("0", "1"):
                    switch.log.append(value)
                    if value == "1":
                        switch.sim.boot()
                    else:
                        switch.sim.power_cut()
                body = b"1" if switch.sim.running() else b"0"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/power/{{value}}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> PowerSwitch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

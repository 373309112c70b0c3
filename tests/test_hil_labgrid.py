"""A labgrid place on loopback: coordinator and exporter from labgrid's own venv, ser2net
serving a pty linked under /dev, the fixture reached through `labgrid://PLACE`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hil import fixture_sim
from hil.farm import free_tcp_port
from hil.fixture_link import Fixture
from hil.labgrid_place import LabgridPlace, client_binary, parse_show
from hil.transport import open_port


def _wait(cond, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s")


def test_parse_show_reads_acquired_resources() -> None:
    text = (
        "Place 'p':\n  acquired: vm/root\n"
        "Acquired resource 'RawSerialPort' (e/g/NetworkSerialPort/RawSerialPort):\n"
        "  {'acquired': 'p',\n   'avail': True,\n   'cls': 'NetworkSerialPort',\n"
        "   'params': {'extra': {'path': '/dev/x'}, 'host': '127.0.0.1', 'port': 4000}}\n"
    )
    (res,) = parse_show(text)
    assert res["cls"] == "NetworkSerialPort" and res["params"]["port"] == 4000


def test_fixture_through_a_labgrid_place(tmp_path: Path) -> None:
    client = client_binary()  # fails with 'run make labgrid-venv' when labgrid is missing
    bindir = Path(client).parent
    if os.geteuid() != 0:
        pytest.fail("labgrid's exporter only serves ports under /dev: run this test as root")
    coord = f"127.0.0.1:{free_tcp_port()}"
    name = f"ocula-{os.getpid()}"
    link = Path(f"/dev/{name}")
    (tmp_path / "coord").mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    sim = fixture_sim.SimFixture(tmp_path)
    env = {**os.environ, "LG_COORDINATOR": coord}
    try:
        link.symlink_to(sim.port or "")
        (tmp_path / "exporter.yaml").write_text(
            f"{name}-group:\n  RawSerialPort:\n    port: {link}\n    speed: 921600\n"
        )
        log = (tmp_path / "labgrid.log").open("wb")
        coordinator = subprocess.Popen(
            [str(bindir / "labgrid-coordinator"), "-l", coord],
            cwd=tmp_path / "coord",
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
        assert listening.wait(60), f"the coordinator did not listen within 60 s: {tmp_path}"
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
                    str(tmp_path / "exporter.yaml"),
                ],
                stdout=log,
                stderr=log,
            )
        )

        def lg(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [client, "-x", coord, *args], capture_output=True, text=True, env=env, timeout=60
            )

        _wait(lambda: name in lg("resources").stdout, "the exporter registered its port")
        assert lg("-p", name, "create").returncode == 0
        assert lg("-p", name, "add-match", f"{name}/{name}-group/*").returncode == 0
        place = LabgridPlace(f"labgrid://{name}?coordinator={coord}")
        url = place.acquire()
        try:
            assert url.startswith("rfc2217://127.0.0.1:")
            with Fixture(open_port(url), url) as fx:
                assert fx.hello()["sensor"] == "ina226"
        finally:
            place.release()
        assert (
            "acquired: None" in lg("-p", name, "show").stdout
            or "acquired:" not in lg("-p", name, "show").stdout
        )
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
        sim.close()

"""Boards on other hosts: Debian's ser2net serves a pty over RFC 2217 on loopback and pyserial's
client reaches it through the same PORT strings the suites take."""

from __future__ import annotations

import os
import select
import time
import tty
from pathlib import Path

import pytest

from hil import fixture_sim
from hil.errors import PortError
from hil.farm import Ser2net, free_tcp_port
from hil.fixture_link import Fixture
from hil.transport import open_port
from tests.hil_helpers import held_elsewhere


def _read_exactly(fd: int, n: int, timeout: float = 20.0) -> bytes:
    out = bytearray()
    while len(out) < n:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            break
        out += os.read(fd, n - len(out))
    return bytes(out)


def test_bytes_cross_rfc2217_unchanged_both_ways() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    try:
        with Ser2net(os.ttyname(slave)) as srv:
            port = open_port(srv.url)
            try:
                data = os.urandom(32 * 1024)
                port.write(data)
                assert _read_exactly(master, len(data)) == data
                back = bytes(range(256)) * 64  # every byte value, 0xFF (telnet IAC) included
                os.write(master, back)
                got = bytearray()
                deadline = time.monotonic() + 20
                while len(got) < len(back) and time.monotonic() < deadline:
                    got += port.read(max(1, port.in_waiting))
                assert bytes(got) == back
            finally:
                port.close()
    finally:
        os.close(master)
        os.close(slave)


def test_fixture_over_rfc2217(tmp_path: Path) -> None:
    sim = fixture_sim.SimFixture(tmp_path)
    with sim, Ser2net(sim.port or "") as srv, Fixture(open_port(srv.url), srv.url) as fx:
        assert fx.hello()["sensor"] == "ina226"
        sim.rail(2.5)
        fx.start(1000)
        fx.wait_samples(500)
        stats = fx.stop()
        s = fx.samples()
    assert len(s) == stats["samples"] > 0


def test_no_server_is_a_clear_error() -> None:
    url = f"rfc2217://127.0.0.1:{free_tcp_port()}"
    with pytest.raises(PortError, match="check that ser2net runs"):
        open_port(url)


def test_a_busy_port_names_its_holder() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    take = f"import serial\np = serial.Serial({path!r}, exclusive=True)\nprint('open', flush=True)"
    try:
        with held_elsewhere(take) as (holder, said):
            assert said == "open"
            with pytest.raises(PortError, match=rf"busy \(held by {holder.pid} "):
                open_port(path)
    finally:
        os.close(master)
        os.close(slave)


def test_flash_a_sim_board_over_rfc2217(tmp_path: Path) -> None:
    """The flasher's own opener (`open_port`, as `ocula flash --port rfc2217://...` uses it)
    reaches a board that ser2net serves: hello, a chunked transfer, reboot into the new slot."""
    from board import profiles
    from board.bundle import Bundle
    from board.client import Board
    from board.flash import flash
    from hil.sim import SimBoard
    from hil.suites import bundles
    from hil.transport import open_port

    path = bundles.build(profiles.find("sim"), tmp_path / "probe.bundle")
    with SimBoard("remote", base=tmp_path) as board, Ser2net(board.port) as srv:
        client = Board(lambda: open_port(srv.url), name=srv.url)
        try:
            client.reconnect(30)
            hello, _ = client.call("hello")
            assert hello["slot"] == "factory"
            result = flash(Bundle.open(path), client, reboot_timeout=30)
            assert result.ok and result.booted == "a" and result.bytes_sent > 0
            info, _ = client.call("info")
            assert info["active"] == "a"
        finally:
            client.close()

"""The console recorder on a real pty: every byte both ways, in order, across a reopen."""

from __future__ import annotations

import os
import time
import tty
from pathlib import Path

from hil import console
from hil.transport import open_port


def _read_n(port, n: int, timeout: float = 10.0) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += port.read(max(1, min(port.in_waiting, n - len(out))))
    return bytes(out)


def test_every_byte_is_recorded_across_a_board_reset(tmp_path: Path) -> None:
    master, slave = os.openpty()  # the pty outlives the board's reboots, as a sim board's does
    tty.setraw(slave)
    path = os.ttyname(slave)
    log = console.ConsoleLog(tmp_path / "serial.log")
    first, second = os.urandom(3000) + b"\x00\xff", os.urandom(5000)
    try:
        port = log.tap(open_port(path))
        assert not hasattr(port, "fileno")  # nobody can read around the recorder
        os.write(master, first)
        assert _read_n(port, len(first)) == first
        port.write(b"hello board")
        log.event("reset")  # the board restarts; the host keeps its port open
        for i in range(0, len(second), 1000):
            os.write(master, second[i : i + 1000])
        assert _read_n(port, len(second)) == second
        port.close()
    finally:
        os.close(master)
        os.close(slave)
        log.close()
    assert console.stream(log.path, console.RX) == first + second
    assert console.stream(log.path, console.TX) == b"hello board"
    events = [r.data for r in console.records(log.path) if r.kind == console.EVENT]
    assert b"reset" in events and events.count(b"close") == 1
    times = [r.t for r in console.records(log.path)]
    assert times == sorted(times)
    text = console.render(log.path)
    assert "-> 68 65 6c 6c 6f" in text and "** reset" in text


def test_nothing_the_cable_delivers_is_missing_from_the_log_across_a_cut(tmp_path: Path) -> None:
    from hil.cable import Cable

    log = console.ConsoleLog(tmp_path / "serial.log")
    sent = bytes(i % 251 for i in range(20000))
    with Cable(baud=921600) as cable:
        board = open_port(cable.b)
        host = log.tap(open_port(cable.a))
        try:
            board.write(sent[:8000])
            assert cable.wait_bytes("b>a", 4000, timeout=10)
            cable.cut()  # what is on the wire now, or sent while cut, is lost as on a real line
            log.event("cut")
            board.write(sent[8000:12000])
            assert cable.wait_for(lambda s: s["b>a"]["bytes_in"] >= 12000, timeout=20)
            cable.restore()
            board.write(sent[12000:])
            done = len(sent)
            assert cable.wait_for(
                lambda s: s["b>a"]["bytes_out"] + s["b>a"]["cut_bytes"] >= done, timeout=20
            )
            delivered = cable.stats()["b>a"]["bytes_out"]
            got = _read_n(host, delivered)
        finally:
            host.close()
            board.close()
    log.close()
    stats = cable.stats()["b>a"]
    assert stats["cut_bytes"] > 0 and len(got) == delivered == len(sent) - stats["cut_bytes"]
    assert console.stream(log.path, console.RX) == got

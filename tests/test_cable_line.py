"""The virtual cable, through pyserial on both ends, as a real port would be used."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from hil.cable import Cable, Fault, random_cuts


def open_end(path: str, write_timeout: float = 5.0) -> serial.Serial:
    return serial.Serial(path, baudrate=921600, timeout=0.05, write_timeout=write_timeout)


def read_exactly(port: serial.Serial, n: int, timeout: float = 10.0) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += port.read(max(1, min(port.in_waiting, n - len(out))))
    return bytes(out)


def pump(a: serial.Serial, b: serial.Serial, data: bytes, n: int | None = None) -> bytes:
    """Write `data` into `a` from a thread while reading `n` bytes (default: all) from `b`."""
    writer = threading.Thread(target=a.write, args=(data,))
    writer.start()
    got = read_exactly(b, len(data) if n is None else n)
    writer.join()
    return got


@pytest.fixture
def ends() -> Iterator[tuple[Cable, serial.Serial, serial.Serial]]:
    cable = Cable(spy=True)
    a, b = open_end(cable.a), open_end(cable.b)
    yield cable, a, b
    a.close()
    b.close()
    cable.close()
    assert cable.error is None


def test_bytes_cross_both_ways_unchanged_and_the_spy_sees_them(
    ends: tuple[Cable, serial.Serial, serial.Serial],
) -> None:
    cable, a, b = ends
    data = bytes(range(256)) * 64  # every byte value, 0x00 and XON/XOFF included
    assert pump(a, b, data) == data
    b.write(b"back\x00\x11\x13")
    assert read_exactly(a, 7) == b"back\x00\x11\x13"
    log = list(cable.spy_log)
    assert b"".join(d for _, way, d in log if way == "a>b") == data
    assert b"".join(d for _, way, d in log if way == "b>a") == b"back\x00\x11\x13"
    times = [t for t, _, _ in log]
    assert times == sorted(times) and times[0] >= 0
    assert cable.stats()["a>b"]["bytes_out"] == len(data)


def test_a_port_closed_and_opened_again_keeps_the_line(
    ends: tuple[Cable, serial.Serial, serial.Serial],
) -> None:
    cable, a, b = ends
    b.close()
    b2 = open_end(cable.b)
    a.write(b"after reopen")
    assert read_exactly(b2, 12) == b"after reopen"
    b2.close()


def test_throttled_line_is_never_faster_than_its_baud_rate() -> None:
    with Cable(baud=115200) as cable:
        a, b = open_end(cable.a), open_end(cable.b)
        n = 11520  # one second of line time at 115200 8N1
        start = time.monotonic()
        assert pump(a, b, b"\x55" * n) == b"\x55" * n
        assert time.monotonic() - start >= n / 11520 * 0.95  # a lower bound: never flaky
        a.close()
        b.close()


def test_bit_errors_are_seeded_counted_and_at_the_asked_rate() -> None:
    data = os.urandom(200_000)
    received = []
    for _ in range(2):
        with Cable(ber=1e-3, seed=42) as cable:
            a, b = open_end(cable.a), open_end(cable.b)
            got = pump(a, b, data)
            a.close()
            b.close()
            flipped = cable.stats()["a>b"]["flipped_bits"]
        diff = sum(bin(x ^ y).count("1") for x, y in zip(data, got, strict=True))
        assert diff == flipped
        assert 0.8 * 1600 < flipped < 1.2 * 1600  # 1e-3 of 1.6 Mbit
        received.append(bytes(x ^ y for x, y in zip(data, got, strict=True)))
    assert received[0] == received[1]  # same seed, same stream: same flipped bits


def test_drops_remove_bytes_and_are_counted() -> None:
    with Cable(drop=0.01, seed=3) as cable:
        a, b = open_end(cable.a), open_end(cable.b)
        got = pump(a, b, b"\xaa" * 50_000, n=49_300)
        assert cable.wait_for(lambda s: s["a>b"]["bytes_in"] == 50_000, 10)
        dropped = cable.stats()["a>b"]["dropped_bytes"]
        assert 350 < dropped < 650
        got += read_exactly(b, 50_000 - dropped - len(got))
        assert got == b"\xaa" * (50_000 - dropped)
        a.close()
        b.close()


def test_cut_and_restore_at_chosen_moments(tmp_path: Path) -> None:
    spy = tmp_path / "spy.txt"
    schedule = [Fault(after_bytes=1000, cut=True)]
    with Cable(schedule=schedule, spy_file=spy) as cable:
        a, b = open_end(cable.a), open_end(cable.b)
        a.write(b"1" * 1000)
        assert read_exactly(b, 1000) == b"1" * 1000
        assert cable.is_cut
        a.write(b"lost while cut")
        assert cable.wait_for(lambda s: s["a>b"]["cut_bytes"] >= 14, 5)
        assert cable.stats()["a>b"]["cut_bytes"] == 14
        cable.restore()
        a.write(b"back")
        assert read_exactly(b, 4) == b"back"
        assert b.in_waiting == 0
        a.close()
        b.close()
    lines = spy.read_text().splitlines()
    assert any(" cut " in line for line in lines) and any(" restore " in line for line in lines)
    assert bytes.fromhex(lines[0].split()[-1])[:1] == b"1"


def test_random_cuts_are_reproducible() -> None:
    first = random_cuts(7, 5, span=3.0, length=(0.1, 0.3))
    assert first == random_cuts(7, 5, span=3.0, length=(0.1, 0.3))
    assert sum(1 for f in first if f.cut) == 5
    assert [f.at for f in first] == sorted(f.at for f in first)


def test_a_flood_into_a_reader_that_never_reads_keeps_memory_bounded() -> None:
    with Cable(buffer=4096) as cable:
        a, b = open_end(cable.a, write_timeout=0.5), open_end(cable.b)
        chunk = b"\xff" * 65536
        with pytest.raises(serial.SerialTimeoutException):
            for _ in range(1000):  # 64 MB: far more than any buffer on the way
                a.write(chunk)
        d = cable._dirs[0]
        assert d.wire_bytes + len(d.out) <= 4096
        # the reader catches up and the line works again
        b.reset_input_buffer()
        a.reset_output_buffer()
        a.close()
        b.close()
        assert cable.error is None

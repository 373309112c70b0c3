"""The link over the virtual cable, pyserial on the host end, a raw fd on the device end:
a noisy line with random cuts still moves every byte, exactly once, in order."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import serial

from hil.cable import Cable, Fault, random_cuts
from runtime.link.endpoint import Endpoint
from runtime.link.errors import LinkError


@dataclass
class Device:
    """A device that stores the chunks it is sent and answers with their hash."""

    endpoint: Endpoint
    chunks: list[bytes] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def handle(self, payload: bytes) -> bytes:
        if payload == b"digest":
            return hashlib.sha256(b"".join(self.chunks)).digest()
        self.chunks.append(payload)
        return hashlib.sha256(payload).digest()[:8]

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.endpoint.serve, args=(self.handle, self.stop.is_set, 0.05), daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=5)
        self.endpoint.close()


@pytest.fixture
def line() -> Iterator[tuple[Cable, serial.Serial, int]]:
    cable = Cable(seed=11)
    host = serial.Serial(cable.a, baudrate=921600, timeout=0.05, write_timeout=5)
    dev_fd = os.open(cable.b, os.O_RDWR | os.O_NOCTTY)
    yield cable, host, dev_fd
    host.close()
    os.close(dev_fd)
    cable.close()
    assert cable.error is None


def transfer(host: Endpoint, data: bytes, chunk: int) -> None:
    for i in range(0, len(data), chunk):
        part = data[i : i + chunk]
        assert host.request(part, timeout=30) == hashlib.sha256(part).digest()[:8]


def test_a_noisy_line_with_random_cuts_moves_identical_bytes(
    line: tuple[Cable, serial.Serial, int],
) -> None:
    cable, port, dev_fd = line
    cable.configure(ber=1e-4)
    cable.add_faults(random_cuts(5, count=4, span=3.0, length=(0.05, 0.4), start=0.3))
    device = Device(Endpoint(dev_fd, name="device"))
    device.start()
    data = random.Random(1).randbytes(1 << 20)
    try:
        with Endpoint(port, name="host") as host:
            transfer(host, data, 16384)
            assert host.request(b"digest", timeout=30) == hashlib.sha256(data).digest()
            stats = host.stats()
    finally:
        device.close()
    assert b"".join(device.chunks) == data  # exactly once, in order
    line_stats = cable.stats()
    assert line_stats["a>b"]["flipped_bits"] > 100  # the line really was noisy
    assert stats["retransmits"] > 0 and stats["decoder_bad_crc"] + stats["decoder_malformed"] > 0


def test_a_throttled_noisy_line_at_921600_baud(line: tuple[Cable, serial.Serial, int]) -> None:
    cable, port, dev_fd = line
    cable.baud = 921600
    cable.configure(ber=1e-4)
    device = Device(Endpoint(dev_fd, name="device"))
    device.start()
    data = os.urandom(96 * 1024)
    try:
        with Endpoint(port, name="host") as host:
            transfer(host, data, 8192)
            cable.cut()
            with pytest.raises(LinkError):
                host.request(b"x" * 100, timeout=0.5)
            cable.restore()
            host.connect(timeout=10)  # a clean session after a failed request
            assert host.request(b"digest", timeout=30) == hashlib.sha256(data).digest()
    finally:
        device.close()
    assert b"".join(device.chunks) == data


def test_a_device_restart_is_seen_as_a_reset_and_a_reconnect_resumes(
    line: tuple[Cable, serial.Serial, int],
) -> None:
    _, port, dev_fd = line
    device = Device(Endpoint(dev_fd, name="device"))
    device.start()
    with Endpoint(port, name="host") as host:
        transfer(host, b"a" * 5000, 5000)
        device.close()  # power cut: the device's state is gone
        device = Device(Endpoint(dev_fd, name="device"), chunks=list(device.chunks))
        device.start()
        try:
            with pytest.raises(LinkError, match="restarted"):
                host.request(b"b" * 5000, timeout=5)
            host.connect(timeout=5)
            transfer(host, b"b" * 5000, 5000)
        finally:
            device.close()
    assert device.chunks == [b"a" * 5000, b"b" * 5000]


def test_a_cut_scheduled_mid_transfer_resumes_without_losing_a_byte(
    line: tuple[Cable, serial.Serial, int],
) -> None:
    cable, port, dev_fd = line
    cable.add_faults([Fault(after_bytes=300_000, cut=True)])
    device = Device(Endpoint(dev_fd, name="device"))
    device.start()
    data = os.urandom(600_000)
    restorer = threading.Thread(
        target=lambda: cable.wait_for(lambda s: cable.is_cut, 30) and cable.restore()
    )
    restorer.start()
    try:
        with Endpoint(port, name="host") as host:
            transfer(host, data, 32768)
    finally:
        restorer.join()
        device.close()
    assert b"".join(device.chunks) == data

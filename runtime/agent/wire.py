"""The agent's view of the link: `endpoint(io)` gives an object with send/recv/flush/close.

It is the link's blocking `Endpoint` (reliable, windowed) when `runtime.link.endpoint` is
present, else a plain framed channel over the same COBS+CRC framing (no retransmission; enough
for a clean pty). `io` is a file descriptor or a pyserial-like port.
"""

from __future__ import annotations

import os
import select
import time
from collections import deque
from typing import Any

from runtime.link import framing

__all__ = ["endpoint"]

MAX_PAYLOAD = 80 * 1024


def endpoint(io: Any) -> Any:
    try:
        from runtime.link.endpoint import Endpoint  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return FramedChannel(io)
    return Endpoint(io)


class FramedChannel:
    """Framed, checked, unreliable: payloads in order or not at all."""

    def __init__(self, io: Any) -> None:
        self.io = io
        self.decoder = framing.Decoder(MAX_PAYLOAD)
        self.queue: deque[bytes] = deque()

    def _read(self, timeout: float) -> bytes:
        if isinstance(self.io, int):
            ready, _, _ = select.select([self.io], [], [], max(timeout, 0))
            return os.read(self.io, 65536) if ready else b""
        waiting = self.io.in_waiting
        if waiting:
            return bytes(self.io.read(waiting))
        ready, _, _ = select.select([self.io.fileno()], [], [], max(timeout, 0))
        return bytes(self.io.read(self.io.in_waiting or 1)) if ready else b""

    def send(self, payload: bytes) -> None:
        data = memoryview(framing.encode(payload))
        if not isinstance(self.io, int):
            self.io.write(bytes(data))
            return
        while data:
            select.select([], [self.io], [], 1.0)
            data = data[os.write(self.io, data) :]

    def recv(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while not self.queue:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.queue.extend(self.decoder.feed(self._read(left)))
        return self.queue.popleft()

    def flush(self, timeout: float = 1.0) -> None:
        if not isinstance(self.io, int):
            self.io.flush()

    def close(self) -> None:
        return None

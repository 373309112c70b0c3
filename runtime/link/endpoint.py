"""The blocking adapter: a `Connection` pumped over a port, for the host and the device alike.

    ep = Endpoint(port)                  # an int fd, or an object with fileno() (a pyserial
                                         # Serial on POSIX, sim://), or read/write/in_waiting
    ep.connect(timeout=5)                # optional: the first send() connects by itself
    reply = ep.request(b"...", timeout=5)
    ep.send(b"..."); ep.recv(timeout=1)  # -> bytes, or None at the deadline
    ep.serve(handler)                    # device side: handler(bytes) -> bytes | None
    ep.flush(timeout=2)                  # wait until the peer acknowledged everything
    ep.abort()                           # from another thread: the blocked call raises

One thread drives an endpoint. Waiting is one `select` on the port and an abort pipe with the
nearest of the caller's deadline and the connection's next timer; nothing sleeps. Ports with a
file descriptor are read and written with os.read/os.write on it, non-blocking, so a peer that
stops reading can never block a write past the deadline. Objects without one (rfc2217://,
loop://) are read through their own `read` and written with `write`: open them with a short
read timeout (0.05 s, as `hil.transport.open_port` does) and a write timeout.

Which side speaks first does not matter: the side that sends first says hello; a side that
only answers (the agent) just waits in recv() or serve(). When the peer restarts, its reply
to our frames is a reset: a pending request() raises `LinkClosed`, recv() keeps waiting for
the peer to connect again. After a `LinkTimeout` or `LinkClosed`, call connect() to start a
clean session: it drops what was in flight both ways, so a late reply to an old request can
never be taken for the answer to a new one. Bulk transfers go on top as a sequence of
idempotent requests (chunk by content hash, resume from the offset the device reports).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from runtime.link.connection import (
    DEFAULT_MAX_MESSAGE,
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_WINDOW,
    NEED_DATA,
    Closed,
    Connected,
    Connection,
    Message,
    State,
)
from runtime.link.errors import LinkClosed, LinkTimeout, LinkUsage

__all__ = ["Endpoint", "PortLike"]

log = logging.getLogger(__name__)

READ_SIZE = 65536
HIGH_WATER = 1 << 20  # send() blocks while more than this is queued and unacknowledged


class PortLike(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...


class Endpoint:
    """One end of the link over one port. See the module docstring."""

    def __init__(
        self,
        port: int | Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        window: int = DEFAULT_WINDOW,
        max_message: int = DEFAULT_MAX_MESSAGE,
        name: str | None = None,
    ) -> None:
        self.port: Any = port
        self.clock = clock
        self.name = name or _port_name(port)
        self.conn = Connection(max_payload=max_payload, window=window, max_message=max_message)
        self._fd = _fileno(port)
        if self._fd is not None:
            os.set_blocking(self._fd, False)
        self._abort_r, self._abort_w = os.pipe()
        os.set_blocking(self._abort_w, False)
        self._inbox: deque[bytes] = deque()
        self._out = bytearray()
        self._closed: str | None = None  # reason of the last Closed event not yet reported
        self._shut = False
        self.connected: Connected | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    # -- public API ------------------------------------------------------------------------------
    def connect(self, timeout: float) -> Connected:
        """Start a new session (dropping anything in flight) and wait for the peer's answer."""
        self._check_open()
        self._inbox.clear()
        self._closed = None
        self.connected = None
        self.conn.connect(self.clock())
        deadline = self.clock() + timeout
        if not self._pump(deadline, lambda: self.connected is not None, raise_closed=True):
            raise LinkTimeout(
                f"{self.name}: no answer to the link hello within {timeout:g} s; check that the "
                "board is powered and runs the agent, and the cable"
            )
        assert self.connected is not None
        return self.connected

    def send(self, payload: bytes, timeout: float = 30.0) -> None:
        """Queue one message; returns once it is queued (not acknowledged: see flush())."""
        self._check_open()
        if self.conn.state in (State.IDLE, State.CLOSED):
            self._closed = None
            self.conn.connect(self.clock())
        self.conn.send(payload)
        deadline = self.clock() + timeout
        if not self._pump(deadline, lambda: self.conn.pending_bytes <= HIGH_WATER):
            raise LinkTimeout(f"{self.name}: the peer took nothing for {timeout:g} s")

    def recv(self, timeout: float) -> bytes | None:
        """The next message, or None when none arrived before the deadline."""
        self._check_open()
        deadline = self.clock() + timeout
        self._pump(deadline, lambda: bool(self._inbox))
        return self._inbox.popleft() if self._inbox else None

    def request(self, payload: bytes, timeout: float) -> bytes:
        """Send one message and return the next message received (the peer's reply)."""
        self._closed = None
        self.send(payload, timeout)
        deadline = self.clock() + timeout
        if not self._pump(deadline, lambda: bool(self._inbox), raise_closed=True):
            raise LinkTimeout(
                f"{self.name}: no reply within {timeout:g} s "
                f"({self._silence()}); check the cable and that the board is running"
            )
        return self._inbox.popleft()

    def serve(
        self,
        handler: Callable[[bytes], bytes | None],
        stop: Callable[[], bool] | None = None,
        tick: float = 0.25,
    ) -> None:
        """Answer each message with handler(message) until stop() is true (checked each tick)."""
        while stop is None or not stop():
            message = self.recv(tick)
            if message is not None:
                reply = handler(message)
                if reply is not None:
                    self.send(reply)

    def flush(self, timeout: float) -> bool:
        """Wait until the peer acknowledged everything sent; False at the deadline."""
        self._check_open()
        deadline = self.clock() + timeout
        return self._pump(deadline, lambda: self.conn.idle and not self._out)

    def abort(self) -> None:
        """Make the call blocked in another thread raise LinkClosed. Safe from any thread."""
        with contextlib.suppress(OSError):  # a full pipe already says "abort"
            os.write(self._abort_w, b"!")

    def close(self) -> None:
        """Release the abort pipe. The port itself belongs to the caller and stays open."""
        if not self._shut:
            self._shut = True
            os.close(self._abort_r)
            os.close(self._abort_w)

    def stats(self) -> dict[str, int]:
        return {
            **self.conn.stats,
            **{f"decoder_{k}": v for k, v in self.conn.decoder.stats().items()},
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pump --------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._shut:
            raise LinkUsage(f"{self.name}: the endpoint was closed")

    def _silence(self) -> str:
        heard = self.conn.last_heard
        if heard < 0:
            return "nothing heard from the peer yet"
        return f"last heard from the peer {self.clock() - heard:.1f} s ago"

    def _events(self, raise_closed: bool) -> None:
        while not self._inbox:
            ev = self.conn.next_event()
            if ev is NEED_DATA:
                break
            if isinstance(ev, Message):
                self._inbox.append(ev.data)
            elif isinstance(ev, Connected):
                self.connected = ev
                log.debug(
                    "%s: link open (session %04x, %d-byte frames)",
                    self.name,
                    ev.session,
                    ev.max_payload,
                )
            elif isinstance(ev, Closed):
                self.connected = None
                self._closed = ev.reason
                log.info("%s: link closed: %s", self.name, ev.reason)
        if raise_closed and self._closed is not None and not self._inbox:
            reason, self._closed = self._closed, None
            raise LinkClosed(f"{self.name}: {reason}")

    def _pump(
        self,
        deadline: float,
        done: Callable[[], bool],
        raise_closed: bool = False,
    ) -> bool:
        """Move bytes both ways until done() or the deadline; True when done() held."""
        conn = self.conn
        while True:
            now = self.clock()
            conn.poll(now)
            while len(self._out) < 2 * conn.frame_payload and conn.has_output:
                self._out += conn.data_to_send(now, limit=4 * conn.frame_payload)
                self._write_some()
            if self._out:
                self._write_some()
            self._events(raise_closed)
            if done():
                return True
            if now >= deadline:
                return False
            wake = conn.next_deadline()
            wait = deadline - now if wake is None else min(deadline, wake) - now
            self._wait(max(wait, 0.0))

    def _wait(self, wait: float) -> None:
        if self._fd is None:
            self._wait_object(wait)
            return
        writers = [self._fd] if self._out else []
        try:
            readable, writable, _ = select.select([self._fd, self._abort_r], writers, [], wait)
        except InterruptedError:
            return
        if self._abort_r in readable:
            os.read(self._abort_r, 64)
            raise LinkClosed(f"{self.name}: aborted")
        if self._fd in readable:
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                data = b""
            except OSError as exc:
                if exc.errno == errno.EIO:
                    raise LinkClosed(f"{self.name}: the other end of the port was closed") from exc
                raise LinkClosed(f"{self.name}: reading the port failed: {exc}") from exc
            if data:
                self.bytes_in += len(data)
                self.conn.receive_data(data, self.clock())
        if writable:
            self._write_some()

    def _write_some(self) -> None:
        if self._fd is None:
            self.port.write(bytes(self._out))  # blocks up to the port's write timeout
            self.bytes_out += len(self._out)
            self._out.clear()
            return
        try:
            n = os.write(self._fd, self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            raise LinkClosed(f"{self.name}: writing to the port failed: {exc}") from exc
        del self._out[:n]
        self.bytes_out += n

    def _wait_object(self, wait: float) -> None:
        """Ports without a file descriptor: their own read timeout paces the loop."""
        port = self.port
        readable, _, _ = select.select([self._abort_r], [], [], 0)
        if readable:
            os.read(self._abort_r, 64)
            raise LinkClosed(f"{self.name}: aborted")
        waiting = getattr(port, "in_waiting", 0)
        data = port.read(waiting or 1) if wait > 0 or waiting else b""
        if data:
            self.bytes_in += len(data)
            self.conn.receive_data(bytes(data), self.clock())


def _fileno(port: Any) -> int | None:
    if isinstance(port, int):
        return port
    fileno = getattr(port, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
    except (OSError, ValueError, AttributeError):
        return None
    return fd if isinstance(fd, int) else None


def _port_name(port: Any) -> str:
    if isinstance(port, int):
        return f"fd {port}"
    return str(getattr(port, "port", None) or getattr(port, "name", None) or port)

"""The host's one client of a board: the board API (`runtime.agent.api`) over an open port.

    board = Board(lambda: open_port("sim://sim"), name="sim://sim")
    hello, _ = board.request("hello")          # an error reply raises BoardRefused
    reply, blob = board.call("trace", {...})   # the reply as it came, ok or not

`opener()` returns an open port (anything pyserial-like, or a file descriptor); the client
opens it lazily and again after a failure, so it survives a board's reboot or a USB port that
re-enumerates. Every request carries an "_id" and waits for the reply with that id, up to
`timeout`; a late reply to an earlier request is skipped. Every reply is checked against its
op's declaration in the table.

Errors are mapped here, once: a timeout, a link error or a port error is `LinkLost` (a flash
then resumes); a port that cannot be opened before the board ever answered is
`PortUnavailable` (a wrong PORT, not retried); an error reply is `BoardRefused` (from `request`,
or `check` on a reply); a reply the table does not allow is `BadReply`; an op the table does not
declare is a `UsageError` before anything is sent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from board.errors import BadReply, BoardError, BoardRefused, LinkLost, PortUnavailable
from runtime.agent import api as board_api
from runtime.agent.api import API, Api
from runtime.errors import OculaError, UsageError
from runtime.link.messages import MessageError

__all__ = ["Board", "check"]

Call = tuple[str, dict[str, Any], bytes]
Reply = tuple[dict[str, Any], bytes]


def check(op: str, reply: dict[str, Any]) -> dict[str, Any]:
    """`reply` when the board did what `op` asked, else BoardRefused with its reason."""
    if not reply.get("ok"):
        error = reply.get("error", "no reason given")
        raise BoardRefused(f"the board refused '{op}': {error}", op, str(reply.get("kind", "")))
    return reply


class Board:
    """Requests to a board's agent over the link on a port."""

    def __init__(
        self,
        opener: Callable[[], Any],
        name: str = "",
        timeout: float = 10.0,
        api: Api = API,
    ) -> None:
        self.opener = opener
        self.name = name
        self.timeout = timeout
        self.api = api
        self.port: Any = None
        self.endpoint: Any = None
        self._next_id = 0
        self._wire = 0
        self.answered = False  # the board has answered at least once through this client

    def _connect(self) -> None:
        if self.port is None:
            try:
                self.port = self.opener()
            except Exception as exc:
                if not self.answered:  # a wrong or busy port: say so now, do not retry
                    raise PortUnavailable(str(exc)) from exc
                raise  # after a reboot a USB port may be gone for a moment: retry
        self.endpoint = board_api.endpoint(self.port)

    def call(self, op: str, fields: dict[str, Any] | None = None, blob: bytes = b"") -> Reply:
        """The reply (ok or not) and its blob."""
        return self.pipeline([(op, fields or {}, blob)])[0]

    def request(self, op: str, fields: dict[str, Any] | None = None, blob: bytes = b"") -> Reply:
        """The reply and its blob; BoardRefused when the board answered with an error."""
        reply, data = self.call(op, fields, blob)
        return check(op, reply), data

    def pipeline(self, calls: list[Call]) -> list[Reply]:
        """Send every request before waiting, then return the replies in order: the line stays
        busy while the board answers (requests are served in the order they are sent)."""
        for op, _, _ in calls:
            if op not in self.api.ops:
                known = ", ".join(self.api.ops)
                raise UsageError(f"{self.name}: no request {op!r} in the board API; known: {known}")
        try:
            return self._exchange(calls)
        except LinkLost:
            self._drop()
            raise
        except BoardError:
            raise
        except (OSError, OculaError) as exc:
            self._drop()
            text = str(exc)
            raise LinkLost(text if text.startswith(self.name) else f"{self.name}: {text}") from exc
        except Exception as exc:  # pyserial's SerialException is not an OSError subclass
            if type(exc).__name__ not in ("SerialException", "SerialTimeoutException"):
                raise
            self._drop(close_port=True)
            raise LinkLost(f"{self.name}: {exc}") from exc

    def _exchange(self, calls: list[Call]) -> list[Reply]:
        if self.endpoint is None:
            self._connect()
        ids = []
        for n, (op, fields, blob) in enumerate(calls):
            self._next_id += 1
            ids.append(self._next_id)
            request = board_api.encode({"op": op, "_id": self._next_id, **fields}, blob)
            if n < len(calls) - 1:
                self.endpoint.send(request, timeout=self.timeout)
            else:  # the first reply, raising at once if the board restarted meanwhile
                payload = self.endpoint.request(request, timeout=self.timeout)
        replies: dict[int, Reply] = {}
        deadline = time.monotonic() + self.timeout
        while True:
            header, data = board_api.decode(payload)
            if header.get("_id") in ids:  # else a late reply to an earlier request
                op = calls[ids.index(header["_id"])][0]
                try:
                    self.api.check_reply(op, header)
                except MessageError as exc:
                    raise BadReply(
                        f"{self.name}: the board's {exc}; its agent speaks another version of "
                        "the board API (docs/protocol.md): flash it with this version"
                    ) from exc
                replies[header["_id"]] = (header, data)
                self.answered = True
                deadline = time.monotonic() + self.timeout
            if len(replies) == len(ids):
                return [replies[i] for i in ids]
            left = deadline - time.monotonic()
            payload = self.endpoint.recv(timeout=left) if left > 0 else None
            if payload is None:
                op = calls[len(replies)][0]
                raise LinkLost(f"{self.name}: no reply to '{op}' within {self.timeout:.0f} s")

    @property
    def wire_bytes(self) -> int:
        """Bytes this client put on the line (frames, headers, retransmissions), so far."""
        return self._wire + (self.endpoint.bytes_out if self.endpoint is not None else 0)

    def _drop(self, close_port: bool = False) -> None:
        if self.endpoint is not None:
            self._wire += self.endpoint.bytes_out
            with contextlib.suppress(Exception):
                self.endpoint.close()
        self.endpoint = None
        if close_port and self.port is not None:
            with contextlib.suppress(Exception):
                self.port.close()
            self.port = None

    def reconnect(self, timeout: float) -> None:
        """Wait until the board answers hello again (after a reboot, a cut, a power cycle)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        saved = self.timeout
        self.timeout = 1.0
        try:
            while time.monotonic() < deadline:
                try:
                    self._drop()
                    self.call("hello")
                    return
                except PortUnavailable:
                    raise
                except (LinkLost, OSError) as exc:
                    last = exc
                    if self.port is None:
                        time.sleep(0.1)  # a USB port re-enumerating after a reset
        finally:
            self.timeout = saved
        raise LinkLost(f"{self.name}: the board did not answer within {timeout:.0f} s ({last})")

    def close(self) -> None:
        self._drop(close_port=True)

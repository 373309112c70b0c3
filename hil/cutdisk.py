"""A power-cut disk for emulated boards: an NBD server whose write cache dies with the power.

qemu (`-drive if=virtio,file=nbd+unix:///?socket=S,format=raw,cache=writeback`) or qemu-io
talks NBD to this server over a unix socket. A write lands in a volatile cache kept in this
process (4 KiB blocks, each with a mask of its dirty 512 B sectors); reads see it. NBD_CMD_FLUSH
writes every dirty block to the image and fsyncs; a write with FUA persists that request's sectors
before it is acknowledged. A cut is the power going: the cache is dropped and an open connection
closed. A disconnect alone is no cut (the disk keeps its power and its cache for the next
client): the holder calls `cut` when it kills a board. The image file is the only truth across
cuts: connections are served one after another (a second client waits in the backlog), and one
that comes after a cut sees just what was persisted.

What the two cut modes model, and what they do not:
- `cut()`: a device whose write-back cache wrote nothing back before the power went; everything
  acknowledged since the last flush is gone, everything flushed or FUA-written stays.
- `cut(torn=True)`: a cache caught mid write-back, in an order the host does not choose: each
  dirty sector independently reached the media or not (seeded; 50/50), kept sectors are written
  in sector order. Sectors are atomic (no half sectors); a sector rewritten since the last flush
  survives with its newest data only (a real cache may land an older one). Neither mode models
  a device that loses flushed data, nor a host crash (the image is fsynced on flush only).
The cache is bounded (`cache_mb`): when it fills, it is written back without a flush, as a
full device cache would; those sectors survive a later cut and are counted as `evicted`.

Tally, in 512 B sectors: `written` (sectors the client wrote, repeats counted), `flushed`
(persisted by flush/FUA/stop), `evicted`, `dropped` (lost at a cut), `kept` (torn survivors).
It goes to stderr at each disconnect and cut, and back to the holder as a JSON line.

Control: `CutDisk` starts `python -m hil.cutdisk IMAGE --socket S --control` and speaks lines on
its stdin/stdout (`status`, `cut`, `cut torn`, `stop`), each answered by one JSON line; the
control line closing (the holder died) is a cut. Run by hand, SIGUSR1 cuts, SIGUSR2 cuts torn,
SIGTERM/SIGINT stop cleanly.

Parts: `Cache` (the volatile cache over the image fd), `NbdServer` (the protocol, sans-IO: fed
bytes, it hands back events and the bytes to send), `Server` (one select loop over the
listener, the one client, the control line and signals) and `CutDisk` (the holder's handle).
The protocol is what qemu 7.2's client needs: fixed newstyle, NBD_OPT_GO/INFO/EXPORT_NAME/LIST/
ABORT, structured replies refused (simple replies only), READ/WRITE/FLUSH/TRIM/WRITE_ZEROES/
CACHE with FUA, DISC. Requests are bounded before anything is buffered (MAX_REQUEST); a bad
one gets an error reply, a broken stream a closed connection, and the server serves on. qemu
must pass flushes on: cache=writeback or none (cache=unsafe drops them, and so loses all).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, astuple, dataclass, replace
from pathlib import Path
from typing import IO, Any

from hil.errors import LinkFailure

__all__ = ["MAX_REQUEST", "CutDisk", "CutDiskError", "Tally"]

log = logging.getLogger(__name__)

SECTOR = 512
BLOCK = 4096
SPB = BLOCK // SECTOR  # sectors per block
FULL = (1 << SPB) - 1
MAX_REQUEST = 32 << 20  # bytes per READ/WRITE/WRITE_ZEROES, as qemu's own NBD server
MAX_OPTION = 4096 + 64  # option data: an export name of up to 4 KiB and its info requests
IO_TIMEOUT_S = 10.0  # a client that takes no reply for this long is dropped
RECV_CHUNK = 1 << 18

# NBD wire constants (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md)
OPT_MAGIC = 0x49484156454F5054  # "IHAVEOPT"
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP, REP_ERR_INVALID, REP_ERR_UNKNOWN = (1 << 31) | 1, (1 << 31) | 3, (1 << 31) | 6
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3
# HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_TRIM | SEND_WRITE_ZEROES
TX_FLAGS = 1 | 4 | 8 | 32 | 64
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES = range(7)
CMD_FLAG_FUA = 1
EIO, EINVAL, ENOSPC = 5, 22, 28
REQ = struct.Struct(">IHHQQI")


class CutDiskError(LinkFailure):
    """The cut disk could not start, answer or stop (the rig, not the board, is at fault)."""


@dataclass
class Tally:
    """Sector counts (512 B) since the server started; see the module docstring."""

    written: int = 0
    flushed: int = 0
    evicted: int = 0
    dropped: int = 0
    kept: int = 0
    connections: int = 0

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


class Cache:
    """The volatile write cache over an image fd. Not thread-safe; the server is one thread."""

    def __init__(self, fd: int, cache_mb: int, rng: random.Random) -> None:
        self.fd, self.size = fd, os.fstat(fd).st_size
        self.limit = max(1, cache_mb * (1 << 20) // BLOCK)
        self.rng, self.tally = rng, Tally()
        self.data: dict[int, bytearray] = {}
        self.mask: dict[int, int] = {}

    def read(self, off: int, ln: int) -> bytearray:
        buf = bytearray(ln)
        if os.preadv(self.fd, [buf], off) != ln:
            raise OSError(f"short read at {off}+{ln}: the image shrank under the server")
        if self.data:
            view = memoryview(buf)
            for b, lo, hi in _blocks(off, ln):
                blk = self.data.get(b)
                if blk is not None:
                    s = b * BLOCK
                    view[lo - off : hi - off] = memoryview(blk)[lo - s : hi - s]
        return buf

    def write(self, off: int, src: bytes | bytearray | memoryview, fua: bool) -> None:
        for b, lo, hi in _blocks(off, len(src)):
            s = b * BLOCK
            blk = self.data.get(b)
            if blk is None:
                if lo == s and hi - s == BLOCK:
                    self.data[b] = bytearray(src[lo - off : hi - off])
                    self.mask[b] = 0
                else:
                    blk = self.data[b] = bytearray(os.pread(self.fd, BLOCK, s))
                    self.mask[b] = 0
            if blk is not None:
                blk[lo - s : hi - s] = src[lo - off : hi - off]
            self.mask[b] |= _sectors(lo - s, hi - s)
        self.tally.written += -(-(off + len(src)) // SECTOR) - off // SECTOR
        if fua:
            self._persist_range(off, len(src))
        elif len(self.data) > self.limit:
            self.tally.evicted += self._writeback()
            log.info("cutdisk: cache full (%d blocks): written back without a flush", self.limit)

    def flush(self) -> None:
        self.tally.flushed += self._writeback()
        os.fsync(self.fd)

    def cut(self, torn: bool) -> None:
        """The power goes: drop the cache, or with `torn` land a seeded random subset of it."""
        kept = 0
        if torn:
            for b in sorted(self.data):
                m = self.mask[b]
                keep = sum(1 << i for i in range(SPB) if m >> i & 1 and self.rng.random() < 0.5)
                for i, j in _runs(keep):
                    blk, s = self.data[b], b * BLOCK
                    os.pwrite(self.fd, blk[i * SECTOR : j * SECTOR], s + i * SECTOR)
                kept += bin(keep).count("1")
            os.fsync(self.fd)
        total = sum(bin(m).count("1") for m in self.mask.values())
        self.tally.kept += kept
        self.tally.dropped += total - kept
        self.data.clear()
        self.mask.clear()

    def _writeback(self) -> int:
        """Write every dirty block to the image, in block order, coalesced; return its sectors."""
        n = sum(bin(m).count("1") for m in self.mask.values())
        order = sorted(self.data)
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and order[j] == order[j - 1] + 1 and j - i < 256:
                j += 1
            os.pwritev(self.fd, [self._tail(b) for b in order[i:j]], order[i] * BLOCK)
            i = j
        self.data.clear()
        self.mask.clear()
        return n

    def _tail(self, b: int) -> bytearray | memoryview:
        """Block b, cut short where the image ends inside it."""
        blk = self.data[b]
        end = self.size - b * BLOCK
        return blk if end >= BLOCK else memoryview(blk)[:end]

    def _persist_range(self, off: int, ln: int) -> None:
        """FUA: the request's sectors reach the image before the reply; other dirt stays dirty."""
        lo = off // SECTOR * SECTOR
        hi = min(self.size, -(-(off + ln) // SECTOR) * SECTOR)
        os.pwrite(self.fd, self.read(lo, hi - lo), lo)
        os.fsync(self.fd)
        for b, blo, bhi in _blocks(lo, hi - lo):
            m = self.mask[b] & ~_sectors(blo - b * BLOCK, bhi - b * BLOCK)
            self.tally.flushed += bin(self.mask[b] & ~m).count("1")
            if m:
                self.mask[b] = m
            else:
                del self.mask[b], self.data[b]


def _blocks(off: int, ln: int) -> Iterator[tuple[int, int, int]]:
    """(block, lo, hi): the byte range [lo, hi) of [off, off+ln) inside each block it touches."""
    end = off + ln
    for b in range(off // BLOCK, -(-end // BLOCK)):
        yield b, max(off, b * BLOCK), min(end, (b + 1) * BLOCK)


def _sectors(lo: int, hi: int) -> int:
    """The mask of the sectors that the byte range [lo, hi) of a block touches."""
    first, last = lo // SECTOR, -(-hi // SECTOR)
    return ((1 << last) - 1) & ~((1 << first) - 1)


def _runs(mask: int) -> Iterator[tuple[int, int]]:
    i = 0
    while i < SPB:
        if mask >> i & 1:
            j = i
            while j < SPB and mask >> j & 1:
                j += 1
            yield i, j
            i = j
        else:
            i += 1


# -- the wire: sans-IO, fed bytes, hands back events and the bytes to send ---------------------
@dataclass(frozen=True)
class Request:
    """A transmission request the server must carry out, then answer with `NbdServer.reply`."""

    kind: int  # CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_CACHE or CMD_WRITE_ZEROES
    handle: int
    offset: int
    length: int
    fua: bool
    payload: bytes | bytearray = b""


@dataclass(frozen=True)
class Refused:
    """A request answered with an error by the protocol itself (already queued to send)."""

    kind: int
    offset: int
    length: int
    errno: int


@dataclass(frozen=True)
class Closed:
    """The connection is over: the client left, or broke the protocol; close the socket."""

    reason: str


Event = Request | Refused | Closed


class NbdServer:
    """The server side of one fixed-newstyle NBD connection, simple replies only.

    States: "flags" (the greeting is queued; wait for the client's flags) -> "options" ->
    "transmission" -> "closed". The input buffer never holds more than one message: a request
    is parsed from its header before its payload is awaited, so an option over MAX_OPTION or a
    write over MAX_REQUEST ends the connection before any of it is buffered.
    """

    def __init__(self, size: int) -> None:
        self.size, self.state = size, "flags"
        self._in = bytearray()
        self._out: list[bytes | bytearray] = [
            b"NBDMAGICIHAVEOPT" + struct.pack(">H", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
        ]
        self._cflags, self._skip, self._closed = 0, 0, Closed("")
        self._write: Request | None = None  # a write whose payload is arriving in _body
        self._body, self._filled = bytearray(), 0

    def receive_data(self, data: bytes) -> None:
        if self.state == "closed":
            return
        view = memoryview(data)
        if self._write is not None:  # straight into the payload: one copy, not three
            n = min(len(view), len(self._body) - self._filled)
            self._body[self._filled : self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
        self._in += view

    def data_to_send(self) -> list[bytes | bytearray]:
        out, self._out = self._out, []
        return out

    def reply(self, handle: int, errno: int = 0, payload: bytes | bytearray = b"") -> None:
        self._out.append(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, errno, handle))
        if payload and not errno:
            self._out.append(payload)

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed."""
        while self.state != "closed":
            if self.state == "transmission":
                return self._request()
            need = 4 if self.state == "flags" else 16
            if len(self._in) < need:
                return None
            if self.state == "flags":
                (self._cflags,) = struct.unpack(">I", self._in[:4])
                del self._in[:4]
                if self._cflags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
                    return self._close(f"unknown client flags {self._cflags:#x}")
                self.state = "options"
                continue
            magic, opt, ln = struct.unpack(">QII", self._in[:16])
            if magic != OPT_MAGIC:
                return self._close(f"bad option magic {magic:#x}")
            if ln > MAX_OPTION:
                return self._close(f"option {opt} carries {ln} bytes (at most {MAX_OPTION})")
            if len(self._in) < 16 + ln:
                return None
            data = bytes(self._in[16 : 16 + ln])
            del self._in[: 16 + ln]
            closed = self._option(opt, data)
            if closed:
                return closed
        return self._closed

    def _option(self, opt: int, data: bytes) -> Closed | None:
        def rep(typ: int, payload: bytes = b"") -> None:
            self._out.append(struct.pack(">QIII", REP_MAGIC, opt, typ, len(payload)) + payload)

        if opt == OPT_EXPORT_NAME:
            if data:
                return self._close(f"export {data[:64]!r} asked for; this server has only ''")
            zeroes = b"" if self._cflags & FLAG_NO_ZEROES else bytes(124)
            self._out.append(struct.pack(">QH", self.size, TX_FLAGS) + zeroes)
            self.state = "transmission"
        elif opt in (OPT_INFO, OPT_GO):
            nlen = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else len(data)
            rest = data[4 + nlen :]
            if len(data) < 6 or len(rest) < 2 or len(rest) != 2 + 2 * rest[0] * 256 + 2 * rest[1]:
                rep(REP_ERR_INVALID, b"malformed NBD_OPT_INFO/GO")
            elif nlen:
                rep(REP_ERR_UNKNOWN, b"this server exports only the default (empty) name")
            else:
                asked = {rest[i] * 256 + rest[i + 1] for i in range(2, len(rest), 2)}
                rep(REP_INFO, struct.pack(">HQH", INFO_EXPORT, self.size, TX_FLAGS))
                if INFO_BLOCK_SIZE in asked:
                    rep(REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE, SECTOR, BLOCK, MAX_REQUEST))
                rep(REP_ACK)
                if opt == OPT_GO:
                    self.state = "transmission"
        elif opt == OPT_ABORT:
            rep(REP_ACK)
            return self._close("the client aborted the negotiation")
        elif opt == OPT_LIST:
            rep(REP_SERVER, struct.pack(">I", 0))
            rep(REP_ACK)
        else:
            rep(REP_ERR_UNSUP)
        return None

    def _request(self) -> Event | None:
        while True:
            if self._write is not None:
                if self._filled < len(self._body):
                    return None
                done, self._write, self._body = (
                    replace(self._write, payload=self._body),
                    None,
                    bytearray(),
                )
                return done
            if self._skip:  # the payload of a refused write
                n = min(self._skip, len(self._in))
                del self._in[:n]
                self._skip -= n
                if self._skip:
                    return None
            if len(self._in) < REQ.size:
                return None
            magic, flags, kind, handle, off, ln = REQ.unpack(self._in[: REQ.size])
            if magic != REQ_MAGIC:
                return self._close(f"bad request magic {magic:#x}")
            if kind == CMD_DISC:
                return self._close("the client disconnected")
            errno = self._check(kind, off, ln)
            if kind == CMD_WRITE and ln > MAX_REQUEST:
                self.reply(handle, EINVAL)
                return self._close(f"a write of {ln} bytes (at most {MAX_REQUEST}): disconnected")
            del self._in[: REQ.size]
            if kind == CMD_WRITE and not errno:
                self._write = Request(kind, handle, off, ln, bool(flags & CMD_FLAG_FUA))
                self._body, self._filled = bytearray(ln), min(ln, len(self._in))
                self._body[: self._filled] = memoryview(self._in)[: self._filled]
                del self._in[: self._filled]
                continue
            if not errno:
                return Request(kind, handle, off, ln, bool(flags & CMD_FLAG_FUA))
            self._skip = ln if kind == CMD_WRITE else 0
            self.reply(handle, errno)
            return Refused(kind, off, ln, errno)

    def _check(self, kind: int, off: int, ln: int) -> int:
        """0 for a request this disk serves, else the NBD error number to answer it with."""
        if kind not in (CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES):
            return EINVAL
        if kind in (CMD_READ, CMD_WRITE, CMD_WRITE_ZEROES) and ln > MAX_REQUEST:
            return EINVAL
        if kind == CMD_FLUSH or off + ln <= self.size:
            return 0
        return ENOSPC if kind in (CMD_WRITE, CMD_WRITE_ZEROES) else EINVAL  # as proto.md asks

    def _close(self, reason: str) -> Closed:
        self.state, self._closed = "closed", Closed(reason)
        self._in.clear()
        self._write, self._body = None, bytearray()
        return self._closed


# -- the server process ------------------------------------------------------------------------
class Server:
    """One listener, one client at a time, a control line and signals, in one select loop."""

    def __init__(self, image: Path, sockpath: Path, seed: int | None, cache_mb: int) -> None:
        self.fd = os.open(image, os.O_RDWR)
        self.cache = Cache(self.fd, cache_mb, random.Random(seed))
        self.sockpath = sockpath
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(sockpath))
        self.listener.listen(4)
        self.conn: socket.socket | None = None
        self.proto = NbdServer(self.cache.size)
        self.signals: list[int] = []

    def run(self, control: IO[bytes] | None) -> None:
        rpipe, wpipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wpipe)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, lambda n, _f: self.signals.append(n))
        ctl_fd, pending = (control.fileno() if control else -1), b""
        log.info(
            "cutdisk: serving %d bytes on nbd+unix:///?socket=%s", self.cache.size, self.sockpath
        )
        self._say(control, {"ready": str(self.sockpath), "size": self.cache.size})
        while True:
            watch: list[int | socket.socket] = [rpipe, self.conn or self.listener]
            watch += [ctl_fd] if ctl_fd >= 0 else []
            ready = select.select(watch, [], [])[0]
            if rpipe in ready:
                os.read(rpipe, 64)
            while self.signals:
                signum = self.signals.pop(0)
                if signum in (signal.SIGTERM, signal.SIGINT):
                    return self.stop()
                self.cut(torn=signum == signal.SIGUSR2)
            if ctl_fd in ready:
                chunk = os.read(ctl_fd, 4096)
                if not chunk:
                    log.info("cutdisk: the holder closed the control line: a power cut")
                    self.cut(torn=False)
                    return self.close()
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if self.command(line.decode(errors="replace").split(), control):
                        return None
            if self.conn is not None and self.conn in ready:
                self._serve()
            elif self.conn is None and self.listener in ready:
                self._accept()

    def command(self, words: list[str], control: IO[bytes] | None) -> bool:
        """One control line; True when it stopped the server."""
        if words == ["stop"]:
            self.stop()
            self._say(control, asdict(self.cache.tally))
            return True
        if words in (["cut"], ["cut", "torn"]):
            self.cut(torn=len(words) == 2)
        elif words != ["status"]:
            self._say(control, {"error": f"unknown command {' '.join(words)!r}"})
            return False
        self._say(control, asdict(self.cache.tally))
        return False

    def cut(self, torn: bool) -> None:
        self._drop_client("power cut")
        self.cache.cut(torn)
        log.info("cutdisk: %s; %s", "torn cut" if torn else "cut", self.cache.tally.line())

    def stop(self) -> None:
        self._drop_client("clean stop")
        self.cache.flush()
        log.info("cutdisk: stopped cleanly; %s", self.cache.tally.line())
        self.close()

    def close(self) -> None:
        self.listener.close()
        self.sockpath.unlink(missing_ok=True)
        os.close(self.fd)

    def _accept(self) -> None:
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(IO_TIMEOUT_S)  # bounds a send to a client that reads nothing
        self.proto = NbdServer(self.cache.size)
        self.cache.tally.connections += 1
        self._pump()

    def _serve(self) -> None:
        assert self.conn is not None
        try:
            chunk = self.conn.recv(RECV_CHUNK)
        except OSError as e:
            return self._drop_client(str(e))
        if not chunk:
            return self._drop_client("the client closed the connection")
        self.proto.receive_data(chunk)
        self._pump()
        return None

    def _pump(self) -> None:
        """Carry out the events of what was received; send what the protocol has to say."""
        while self.conn is not None:
            event = self.proto.next_event()
            try:
                for part in self.proto.data_to_send():
                    self.conn.sendall(part)
            except OSError as e:
                return self._drop_client(f"a reply could not be sent: {e}")
            if event is None:
                return None
            if isinstance(event, Closed):
                return self._drop_client(event.reason)
            if isinstance(event, Refused):
                log.info("cutdisk: request %d at %d+%d refused (errno %d)", *astuple(event))
                continue
            self.proto.reply(event.handle, *self._do(event))
        return None

    def _do(self, req: Request) -> tuple[int, bytes | bytearray]:
        """(errno, payload) of a request the protocol accepted."""
        try:
            if req.kind == CMD_READ:
                return 0, self.cache.read(req.offset, req.length)
            if req.kind == CMD_WRITE:
                self.cache.write(req.offset, req.payload, req.fua)
            elif req.kind == CMD_WRITE_ZEROES:
                self.cache.write(req.offset, bytes(req.length), req.fua)
            elif req.kind == CMD_FLUSH:
                self.cache.flush()
            # CMD_TRIM and CMD_CACHE are advisory: the data stays as it is
        except OSError as e:
            log.error("cutdisk: I/O on the image failed: %s", e)
            return EIO, b""
        return 0, b""

    def _drop_client(self, reason: str) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            log.info("cutdisk: connection closed (%s); %s", reason, self.cache.tally.line())

    @staticmethod
    def _say(control: IO[bytes] | None, obj: dict[str, Any]) -> None:
        if control is not None:
            sys.stdout.buffer.write(json.dumps(obj).encode() + b"\n")
            sys.stdout.buffer.flush()


def check_paths(image: Path, sockpath: Path) -> None:
    """A clear CutDiskError for an image or socket path this server cannot use."""
    if not image.is_file():
        raise CutDiskError(
            f"disk image {image} does not exist (make one: qemu-img create -f raw {image} 1G)"
        )
    size = image.stat().st_size
    if size == 0 or size % SECTOR:
        raise CutDiskError(
            f"disk image {image} is {size} bytes, not a whole number of {SECTOR} B sectors (fix: qemu-img resize -f raw {image} 1G)"
        )
    if len(os.fsencode(sockpath)) > 107:
        raise CutDiskError(
            f"socket path {sockpath} is longer than a unix socket allows (107 bytes): choose a shorter one"
        )
    if sockpath.exists():
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(sockpath))
        except OSError:
            sockpath.unlink()  # a socket left by a dead server
        else:
            raise CutDiskError(
                f"socket {sockpath} is served by another process: stop it or choose another path"
            )
        finally:
            probe.close()


# -- the holder's handle -----------------------------------------------------------------------
class CutDisk:
    """The server as a child process of the board holder; see the module docstring."""

    def __init__(
        self,
        image: Path | str,
        sockpath: Path | str,
        *,
        seed: int | None = None,
        cache_mb: int = 256,
        stderr: IO[Any] | None = None,
    ) -> None:
        self.image, self.socket = Path(image), Path(sockpath)
        self.seed, self.cache_mb, self.stderr = seed, cache_mb, stderr
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""

    def start(self, timeout: float = 10.0) -> CutDisk:
        """Start the server; return once its socket listens."""
        check_paths(self.image, self.socket)
        cmd = [sys.executable, "-m", "hil.cutdisk", str(self.image), "--socket", str(self.socket)]
        cmd += ["--cache-mb", str(self.cache_mb), "--control"]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        # the child imports this very module, wherever the holder imported it from
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            cmd,
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            bufsize=0,
        )
        self._line(timeout)
        return self

    def status(self, timeout: float = 10.0) -> Tally:
        return self._ask("status", timeout)

    def cut(self, torn: bool = False, timeout: float = 30.0) -> Tally:
        """Power cut: drop what was not flushed (torn: land a seeded random subset of it)."""
        return self._ask("cut torn" if torn else "cut", timeout)

    def stop(self, timeout: float = 60.0) -> Tally:
        """Clean stop: persist what is pending, then the server exits."""
        tally = self._ask("stop", timeout)
        assert self._proc is not None
        self._proc.wait(timeout)
        self._proc = None
        return tally

    def kill(self) -> None:
        """End the server at once (clean-up after a failure): its cache dies untallied."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
            self.socket.unlink(missing_ok=True)

    def __enter__(self) -> CutDisk:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            try:
                self.stop()
            finally:
                self.kill()

    def _ask(self, command: str, timeout: float) -> Tally:
        if self._proc is None or self._proc.stdin is None:
            raise CutDiskError(f"the cut disk on {self.socket} is not running: call start() first")
        try:
            self._proc.stdin.write(command.encode() + b"\n")
        except BrokenPipeError as e:
            raise CutDiskError(
                f"the cut disk on {self.socket} has exited ({self._proc.poll()})"
            ) from e
        reply = self._line(timeout)
        return Tally(**reply)

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd, deadline = self._proc.stdout.fileno(), time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise CutDiskError(
                    f"the cut disk on {self.socket} did not answer within {timeout:g} s"
                )
            chunk = os.read(fd, 4096)
            if not chunk:
                raise CutDiskError(
                    f"the cut disk on {self.socket} exited with {self._proc.wait()} (its stderr says why)"
                )
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise CutDiskError(f"the cut disk on {self.socket}: {reply['error']}")
        return reply


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil.cutdisk", description=__doc__.split("\n")[0])
    ap.add_argument("image", type=Path, help="raw disk image; the truth across power cuts")
    ap.add_argument("--socket", type=Path, required=True, help="unix socket to serve NBD on")
    ap.add_argument("--seed", type=int, default=None, help="seed of the torn cuts' choices")
    ap.add_argument("--cache-mb", type=int, default=256, help="write cache size (default 256)")
    ap.add_argument("--control", action="store_true", help="take commands on stdin (CutDisk)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.cache_mb < 1:
            raise CutDiskError(f"--cache-mb {args.cache_mb} must be at least 1")
        check_paths(args.image, args.socket)
        server = Server(args.image, args.socket, args.seed, args.cache_mb)
    except (CutDiskError, OSError) as e:
        print(f"hil.cutdisk: error: {e}", file=sys.stderr)
        return 2
    server.run(sys.stdin.buffer if args.control else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

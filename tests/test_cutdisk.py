"""hil.cutdisk: an NBD disk whose unflushed writes die with the power, driven by qemu's own client.

qemu-io (qemu-utils) is the client: it negotiates NBD as qemu 7.2 does when it boots a board. It
runs interactively, so a cut falls while it is connected, as when the holder kills a board: a
qemu-io that exits flushes first (bdrv_close), which would hide the point.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.cutdisk import (
    BLOCK,
    MAX_REQUEST,
    SECTOR,
    Cache,
    Closed,
    CutDisk,
    CutDiskError,
    NbdServer,
    Refused,
    Request,
)

PROMPT = b"qemu-io> "
MiB = 1 << 20


def _qemu_io() -> str:
    tool = shutil.which("qemu-io")
    if tool is None:
        pytest.fail(
            "qemu-io is missing: install it with 'apt-get install qemu-utils' (make sysdeps)"
        )
    return tool


class QemuIo:
    """An interactive qemu-io on the cut disk: `run` sends one command and returns its output."""

    def __init__(self, sock: Path) -> None:
        url = f"nbd+unix:///?socket={sock}"
        cmd = [_qemu_io(), "-f", "raw", "-t", "writeback", url]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.buf = b""
        self._until_prompt()

    def run(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self._until_prompt()

    def quit(self) -> int:
        """Leave cleanly (qemu flushes on close); the exit status."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"quit\n")
        self.proc.stdin.flush()
        return self.proc.wait(60)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def _until_prompt(self) -> str:
        assert self.proc.stdout is not None
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + 60
        while PROMPT not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], f"qemu-io hung: {self.buf!r}"
            chunk = os.read(fd, 65536)
            assert chunk, f"qemu-io exited: {self.buf.decode(errors='replace')}"
            self.buf += chunk
        out, self.buf = self.buf.split(PROMPT, 1)
        return out.decode(errors="replace")


def ok(out: str, verb: str, n: int) -> None:
    assert f"{verb} {n}/{n} bytes" in out and "failed" not in out.lower(), out


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(8 * MiB))
    return img


@pytest.fixture
def disk(image: Path, tmp_path: Path):
    with CutDisk(image, tmp_path / "d.sock", seed=3) as d:
        yield d


def span(image: Path, off: int, ln: int) -> bytes:
    with image.open("rb") as f:
        f.seek(off)
        return f.read(ln)


def test_cut_keeps_flushed_drops_unflushed_and_serves_the_next_boot(disk, image):
    q = QemuIo(disk.socket)
    ok(q.run("write -P 0xaa 0 64k"), "wrote", 65536)
    assert q.run("flush") == ""
    ok(q.run("write -P 0xbb 64k 64k"), "wrote", 65536)
    ok(q.run("read -P 0xbb 64k 64k"), "read", 65536)  # the client sees its unflushed write
    assert span(image, 64 * 1024, 64 * 1024) == bytes(64 * 1024)  # ... the media does not
    tally = disk.cut()
    q.kill()
    assert (tally.written, tally.flushed, tally.dropped, tally.kept) == (256, 128, 128, 0)
    assert span(image, 0, 64 * 1024) == b"\xaa" * 65536
    assert span(image, 64 * 1024, 64 * 1024) == bytes(65536)

    q = QemuIo(disk.socket)  # the next boot, on the same socket
    ok(q.run("read -P 0xaa 0 64k"), "read", 65536)
    ok(q.run("read -P 0 64k 64k"), "read", 65536)
    ok(q.run("write -P 0xee 1M 4k"), "wrote", 4096)
    assert q.quit() == 0  # a client that closes cleanly flushes first
    assert disk.status().connections == 2
    assert span(image, MiB, 4096) == b"\xee" * 4096


def test_a_fua_write_survives_the_cut_and_its_neighbour_does_not(disk, image):
    q = QemuIo(disk.socket)
    ok(q.run("write -P 0xdd 132k 4k"), "wrote", 4096)
    ok(q.run("write -f -P 0xcc 128k 4k"), "wrote", 4096)
    tally = disk.cut()
    q.kill()
    assert span(image, 128 * 1024, 4096) == b"\xcc" * 4096
    assert span(image, 132 * 1024, 4096) == bytes(4096)
    assert (tally.flushed, tally.dropped) == (8, 8)


def test_a_killed_client_is_no_power_cut(disk, image):
    q = QemuIo(disk.socket)
    ok(q.run("write -P 0x31 0 8k"), "wrote", 8192)
    q.kill()  # the board is gone, the disk still has power
    q = QemuIo(disk.socket)
    ok(q.run("read -P 0x31 0 8k"), "read", 8192)
    tally = disk.cut()
    q.kill()
    assert (tally.written, tally.flushed, tally.dropped) == (16, 0, 16)
    assert span(image, 0, 8192) == bytes(8192)


def test_a_clean_stop_keeps_everything(image, tmp_path):
    d = CutDisk(image, tmp_path / "d.sock").start()
    q = QemuIo(d.socket)
    ok(q.run("write -P 0x11 4096 100k"), "wrote", 100 * 1024)
    tally = d.stop()
    q.kill()
    assert (tally.flushed, tally.dropped) == (200, 0)
    assert span(image, 4096, 100 * 1024) == b"\x11" * 100 * 1024
    assert not d.socket.exists()


def _torn(image: Path, sock: Path, seed: int) -> tuple[bytes, int]:
    image.write_bytes(bytes(2 * MiB))
    with CutDisk(image, sock, seed=seed) as d:
        q = QemuIo(sock)
        ok(q.run("write -P 0x5a 0 1M"), "wrote", MiB)
        ok(q.run("write -P 0x5b 512 1k"), "wrote", 1024)  # rewritten before any flush
        tally = d.cut(torn=True)
        q.kill()
    assert tally.kept + tally.dropped == 2048
    return span(image, 0, MiB), tally.kept


def test_a_torn_cut_keeps_whole_sectors_and_repeats_with_its_seed(image, tmp_path):
    sock = tmp_path / "d.sock"
    first, kept = _torn(image, sock, seed=7)
    again, kept_again = _torn(image, sock, seed=7)
    other, _ = _torn(image, sock, seed=8)
    assert first == again and kept == kept_again
    assert first != other
    sectors = [first[i : i + SECTOR] for i in range(0, MiB, SECTOR)]
    newest = [b"\x5b" * SECTOR if i in (1, 2) else b"\x5a" * SECTOR for i in range(2048)]
    landed = [s == n for s, n in zip(sectors, newest, strict=True)]
    assert all(s == bytes(SECTOR) or hit for s, hit in zip(sectors, landed, strict=True))
    assert sum(landed) == kept and 0 < kept < 2048


def test_a_full_cache_writes_back_and_those_sectors_survive(image, tmp_path):
    with CutDisk(image, tmp_path / "d.sock", cache_mb=1) as d:
        q = QemuIo(d.socket)
        ok(q.run("write -P 0x77 0 3M"), "wrote", 3 * MiB)
        tally = d.cut()
        q.kill()
    data = span(image, 0, 3 * MiB)
    landed = sum(data[i : i + SECTOR] == b"\x77" * SECTOR for i in range(0, 3 * MiB, SECTOR))
    assert tally.evicted > 0 and landed == tally.evicted
    assert tally.evicted + tally.dropped == 3 * MiB // SECTOR


# -- a hand-made client for what qemu never sends ------------------------------------------------
def _connect(sock: Path) -> socket.socket:
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(20)
    c.connect(str(sock))
    assert _recv(c, 18)[:16] == b"NBDMAGICIHAVEOPT"
    c.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    c.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 0))  # EXPORT_NAME ""
    size, _flags = struct.unpack(">QH", _recv(c, 10))
    assert size == 8 * MiB
    return c


def _recv(c: socket.socket, n: int) -> bytes:
    b = b""
    while len(b) < n:
        k = c.recv(n - len(b))
        assert k, "the server closed the connection"
        b += k
    return b


def _closed(c: socket.socket) -> bool:
    """The server hung up (with a reset when it left our garbage unread)."""
    try:
        return c.recv(16) == b""
    except ConnectionResetError:
        return True


def _request(c: socket.socket, typ: int, off: int, ln: int, handle: int) -> int:
    c.sendall(struct.pack(">IHHQQI", 0x25609513, 0, typ, handle, off, ln))
    magic, err, h = struct.unpack(">IIQ", _recv(c, 16))
    assert (magic, h) == (0x67446698, handle)
    return err


def test_oversize_and_garbage_requests_are_refused_and_the_server_lives_on(disk, image):
    c = _connect(disk.socket)
    assert _request(c, 0, 0, 0xFFFFFFFF, 1) != 0  # a 4 GiB read: an error, not a MemoryError
    assert _request(c, 0, 8 * MiB - 512, 4096, 2) != 0  # past the end
    assert _request(c, 6, 0, MAX_REQUEST + BLOCK, 3) != 0  # zeroes beyond the request bound
    assert _request(c, 0, 0, 4096, 4) == 0 and _recv(c, 4096) == bytes(4096)  # still in step
    assert _request(c, 1, 0, 1 << 30, 5) != 0  # a 1 GiB write: refused, and disconnected
    assert _closed(c)
    c = _connect(disk.socket)
    c.sendall(b"garbage, not a request header")
    assert _closed(c)  # a bad magic ends that connection ...
    c = socket.socket(socket.AF_UNIX)
    c.connect(str(disk.socket))
    c.sendall(b"\xff" * 64)  # ... as do unknown flags in the negotiation
    c.settimeout(20)
    assert _recv(c, 18)[:8] == b"NBDMAGIC" and _closed(c)
    q = QemuIo(disk.socket)  # and qemu is served as before
    ok(q.run("write -P 0x42 0 4k"), "wrote", 4096)
    assert q.quit() == 0
    assert span(image, 0, 4096) == b"\x42" * 4096


# -- the cache against a byte-for-byte model -----------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_cache_matches_a_model_for_unaligned_writes_flushes_and_cuts(tmp_path, seed):
    rng = random.Random(seed)
    size = 64 * 1024 + 3 * SECTOR  # ends inside a block
    img = tmp_path / "m.img"
    img.write_bytes(rng.randbytes(size))
    media, seen = bytearray(img.read_bytes()), bytearray(img.read_bytes())
    fd = os.open(img, os.O_RDWR)
    try:
        cache = Cache(fd, 1, random.Random(0))
        for _ in range(300):
            op, off = rng.random(), rng.randrange(size)
            ln = rng.randrange(1, min(size - off, 3 * BLOCK) + 1)
            if op < 0.6:
                data, fua = rng.randbytes(ln), rng.random() < 0.2
                cache.write(off, data, fua)
                seen[off : off + ln] = data
                if fua:
                    lo, hi = off // SECTOR * SECTOR, -(-(off + ln) // SECTOR) * SECTOR
                    media[lo:hi] = seen[lo:hi]
            elif op < 0.8:
                assert cache.read(off, ln) == seen[off : off + ln]
            elif op < 0.9:
                cache.flush()
                media[:] = seen
            else:
                cache.cut(torn=False)
                seen[:] = media
            assert os.pread(fd, size, 0) == media
    finally:
        os.close(fd)


def test_a_missing_image_is_one_clear_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "hil.cutdisk", str(tmp_path / "no.img"), "--socket", "s"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"hil.cutdisk: error: disk image {tmp_path / 'no.img'} does not exist "
        f"(make one: qemu-img create -f raw {tmp_path / 'no.img'} 1G)"
    ]
    with pytest.raises(CutDiskError, match="does not exist"):
        CutDisk(tmp_path / "no.img", tmp_path / "s").start()


class StderrLines:
    """The stderr lines of a hand-run server, waited for with a deadline, none lost between calls."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.fd, self.buf, self.seen = proc.stderr.fileno(), "", 0

    def wait_for(self, needle: str) -> str:
        deadline = time.monotonic() + 60
        while True:
            lines = self.buf.splitlines(keepends=True)
            for i in range(self.seen, len(lines)):
                if lines[i].endswith("\n") and needle in lines[i]:
                    self.seen = i + 1
                    return lines[i]
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.fd], [], [], left)[0], f"no {needle!r}"
            chunk = os.read(self.fd, 4096).decode()
            assert chunk, f"the server exited without {needle!r}: {self.buf!r}"
            self.buf += chunk


def test_run_by_hand_sigusr1_cuts_and_sigterm_stops_cleanly(image, tmp_path):
    sock = tmp_path / "d.sock"
    cmd = [sys.executable, "-m", "hil.cutdisk", str(image), "--socket", str(sock)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        err = StderrLines(proc)
        err.wait_for("cutdisk: serving")
        q = QemuIo(sock)
        ok(q.run("write -P 0x61 0 4k"), "wrote", 4096)
        proc.send_signal(signal.SIGUSR1)
        assert "dropped=8" in err.wait_for("cutdisk: cut;")
        q.kill()
        q = QemuIo(sock)
        ok(q.run("write -P 0x62 8k 4k"), "wrote", 4096)
        proc.send_signal(signal.SIGTERM)
        assert "flushed=8 " in err.wait_for("stopped cleanly")
        assert proc.wait(60) == 0
        q.kill()
    finally:
        proc.kill()
    assert span(image, 0, 4096) == bytes(4096) and span(image, 8192, 4096) == b"\x62" * 4096


# -- the protocol alone: bytes in any split, garbage anywhere ------------------------------------
SIZE = 1 << 20
OPT = struct.Struct(">QII")
PAYLOAD = bytes(range(256)) * 4


def _opt(opt: int, data: bytes = b"") -> bytes:
    return OPT.pack(0x49484156454F5054, opt, len(data)) + data


def _req(kind: int, handle: int, off: int, ln: int, flags: int = 0) -> bytes:
    return struct.pack(">IHHQQI", 0x25609513, flags, kind, handle, off, ln)


SESSION = b"".join(
    [
        struct.pack(">I", 3),
        _opt(8),  # STRUCTURED_REPLY: refused, so simple replies it is
        _opt(7, struct.pack(">IHH", 0, 1, 3)),  # GO "" asking for the block sizes
        _req(1, 1, 512, len(PAYLOAD), flags=1) + PAYLOAD,  # a FUA write
        _req(0, 2, 0, 4096),
        _req(3, 3, 0, 0),
        _req(6, 4, 4096, 8192),
        _req(0, 5, SIZE - 512, 4096),  # a read past the end
        _req(1, 6, SIZE, 100) + b"\x99" * 100,  # a write past the end, its payload skipped
        _req(9, 7, 0, 0),  # no such command
        _req(4, 8, 0, SIZE),
        _req(2, 9, 0, 0),
    ]
)


def _drive(chunks: list[bytes]) -> tuple[list[object], bytes]:
    proto, events, out = NbdServer(SIZE), [], bytearray()
    for chunk in chunks:
        proto.receive_data(chunk)
        while (event := proto.next_event()) is not None:
            events.append(event)
            if isinstance(event, Closed):
                break
            if isinstance(event, Request):
                proto.reply(event.handle, 0, bytes(event.length) if event.kind == 0 else b"")
        for part in proto.data_to_send():
            out += part
        if events and isinstance(events[-1], Closed):
            break
    return events, bytes(out)


def test_the_protocol_answers_a_session_as_the_spec_says():
    events, out = _drive([SESSION])
    assert events == [
        Request(1, 1, 512, len(PAYLOAD), True, PAYLOAD),
        Request(0, 2, 0, 4096, False),
        Request(3, 3, 0, 0, False),
        Request(6, 4, 4096, 8192, False),
        Refused(0, SIZE - 512, 4096, 22),
        Refused(1, SIZE, 100, 28),
        Refused(9, 0, 0, 22),
        Request(4, 8, 0, SIZE, False),
        Closed("the client disconnected"),
    ]
    rep = struct.Struct(">QIII")
    assert out[:18] == b"NBDMAGICIHAVEOPT" + struct.pack(">H", 3)
    at = 18
    for opt, typ, body in [
        (8, (1 << 31) | 1, b""),
        (7, 3, struct.pack(">HQH", 0, SIZE, 1 | 4 | 8 | 32 | 64)),
        (7, 3, struct.pack(">HIII", 3, 512, 4096, 32 << 20)),
        (7, 1, b""),
    ]:
        magic, o, t, ln = rep.unpack(out[at : at + 20])
        assert (magic, o, t, out[at + 20 : at + 20 + ln]) == (0x3E889045565A9, opt, typ, body)
        at += 20 + ln
    replies = struct.Struct(">IIQ")
    for handle, errno, ln in [
        (1, 0, 0),
        (2, 0, 4096),
        (3, 0, 0),
        (4, 0, 0),
        (5, 22, 0),
        (6, 28, 0),
        (7, 22, 0),
        (8, 0, 0),
    ]:
        assert replies.unpack(out[at : at + 16]) == (0x67446698, errno, handle)
        at += 16 + ln
    assert at == len(out)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=80))
def test_the_protocol_does_not_care_how_the_bytes_are_split(cuts):
    chunks, at = [], 0
    for n in cuts:
        chunks.append(SESSION[at : at + n])
        at += n
    chunks.append(SESSION[at:])
    assert _drive(chunks) == _drive([SESSION])
    assert _drive([SESSION[i : i + 1] for i in range(len(SESSION))]) == _drive([SESSION])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3), st.binary(max_size=200), st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_anywhere_ends_in_a_refusal_or_a_close_never_a_crash(where, garbage, more):
    prefix = [b"", SESSION[:4], SESSION[:4] + _opt(8), SESSION[: SESSION.index(PAYLOAD) - 28]]
    proto = NbdServer(SIZE)
    for chunk in [prefix[where] + garbage, *more]:
        proto.receive_data(chunk)
        while (event := proto.next_event()) is not None:
            assert isinstance(event, Request | Refused | Closed)
            if isinstance(event, Closed):
                proto.receive_data(b"more")  # a closed connection takes nothing more
                assert proto.next_event() == event and not proto._in
                return
        proto.data_to_send()

"""Frames on a byte stream: COBS with a 0x00 delimiter and a CRC32 per frame.

A frame on the wire is

    0x00 | COBS(payload | CRC32(payload, CRC_SEED) as 4 bytes little-endian) | 0x00

COBS (consistent overhead byte stuffing) removes every 0x00 from the body at a cost of one byte
per 254, so 0x00 only ever appears as a delimiter. A frame both starts and ends with one: the
leading delimiter costs a byte and lets the decoder recover the very next frame after garbage or
a frame cut half-way (the partial bytes end at that delimiter and are discarded). Empty pieces
between delimiters are idle fill and are ignored. The CRC starts from `CRC_SEED` rather than 0,
so that a run of 0x01 bytes (the COBS of four zero bytes: an empty payload whose plain CRC32 is
0) is not a valid frame.

`Decoder.feed(data)` takes any split of the stream (one byte at a time, or megabytes) and returns
the payloads whose CRC matched, in order. It never raises on what it is fed: malformed COBS, a
short piece, a bad CRC and a piece longer than the largest frame allowed are dropped and
counted (`discarded_bytes`, `malformed`, `bad_crc`, `oversize`); an oversize piece is skipped up
to the next delimiter without being buffered, so memory stays bounded by `max_payload` whatever
arrives.

This module runs unchanged under MicroPython (the rig fixture's firmware imports it): no
`__future__` imports, no dataclasses or typing at run time, no `del` on bytearray slices, and
CRC32 from `binascii` when the build has it, else a table computed on first use.
"""

try:
    from binascii import crc32 as _crc32_native
except ImportError:  # a MicroPython build without binascii.crc32: the table below stands in
    _crc32_native = None  # type: ignore[assignment]  # mypy sees CPython, where it always exists

DEFAULT_MAX_PAYLOAD = 4096
CRC_SEED = 0x4F43554C
CRC_SIZE = 4
DELIMITER = b"\x00"

_table: list[int] = []


def _crc32_table(data: bytes, crc: int = 0) -> int:
    """CRC-32 (IEEE 802.3, the zlib/binascii one) from a 256-entry table."""
    if not _table:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            _table.append(c)
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32(data: bytes, value: int = 0) -> int:
    """CRC-32 of `data` continuing from `value`, unsigned (same as zlib.crc32(data, value))."""
    if _crc32_native is not None:
        return _crc32_native(data, value) & 0xFFFFFFFF
    return _crc32_table(data, value)


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode `data` (no delimiter added). The output contains no 0x00."""
    out = bytearray()
    segments = bytes(data).split(DELIMITER)
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        full = False
        while len(seg) >= 254:
            out.append(255)
            out += seg[:254]
            seg = seg[254:]
            full = True
        if i == last and full and not seg:
            break  # a final run of exactly k*254 bytes needs no closing code
        out.append(len(seg) + 1)
        out += seg
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Inverse of `cobs_encode`, or None when `data` is not valid COBS."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            return None
        j = i + code
        if j > n:
            return None
        out += data[i + 1 : j]
        if code != 255 and j < n:
            out.append(0)
        i = j
    return bytes(out)


def max_encoded(max_payload: int) -> int:
    """Longest COBS body (without delimiters) of a payload of `max_payload` bytes."""
    body = max_payload + CRC_SIZE
    return body + body // 254 + 1


def encode(payload: bytes) -> bytes:
    """One frame carrying `payload`, delimiters included, ready to write to the line."""
    body = bytes(payload)
    body += crc32(body, CRC_SEED).to_bytes(CRC_SIZE, "little")
    return DELIMITER + cobs_encode(body) + DELIMITER


class Decoder:
    """Bytes in, whole CRC-checked payloads out. Never raises on input; counts what it drops."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if max_payload < 1:
            raise ValueError("max_payload must be at least 1 byte")
        self.max_payload = max_payload
        self._limit = max_encoded(max_payload)
        self._buf = bytearray()
        self._skipping = False
        self.frames = 0
        self.discarded_bytes = 0
        self.bad_crc = 0
        self.malformed = 0
        self.oversize = 0

    def set_max_payload(self, max_payload: int) -> None:
        """Change the largest payload accepted (after a negotiation); applies from now on."""
        if max_payload < 1:
            raise ValueError("max_payload must be at least 1 byte")
        self.max_payload = max_payload
        self._limit = max_encoded(max_payload)

    def reset(self) -> None:
        """Forget a partial frame (after the line was reopened, say). Counters are kept."""
        if self._buf:
            self.discarded_bytes += len(self._buf)
        self._buf = bytearray()
        self._skipping = False

    def stats(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "discarded_bytes": self.discarded_bytes,
            "bad_crc": self.bad_crc,
            "malformed": self.malformed,
            "oversize": self.oversize,
        }

    def feed(self, data: bytes) -> list[bytes]:
        """Payloads completed by `data`, oldest first (often none, sometimes several)."""
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        out: list[bytes] = []
        start = 0
        n = len(data)
        while start < n:
            end = data.find(DELIMITER, start)
            if end < 0:
                self._take(data, start, n)
                break
            self._take(data, start, end)
            if self._skipping:
                self._skipping = False
            elif self._buf:
                payload = self._close(bytes(self._buf))
                self._buf = bytearray()
                if payload is not None:
                    out.append(payload)
            start = end + 1
        return out

    def _take(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if size <= 0:
            return
        if self._skipping:
            self.discarded_bytes += size
        elif len(self._buf) + size > self._limit:
            self.oversize += 1
            self.discarded_bytes += len(self._buf) + size
            self._buf = bytearray()
            self._skipping = True
        else:
            self._buf += data[start:end]

    def _close(self, piece: bytes) -> bytes | None:
        body = cobs_decode(piece)
        if body is None or len(body) < CRC_SIZE:
            self.malformed += 1
            self.discarded_bytes += len(piece)
            return None
        payload = body[:-CRC_SIZE]
        if crc32(payload, CRC_SEED) != int.from_bytes(body[-CRC_SIZE:], "little"):
            self.bad_crc += 1
            self.discarded_bytes += len(piece)
            return None
        if len(payload) > self.max_payload:
            self.oversize += 1
            self.discarded_bytes += len(piece)
            return None
        self.frames += 1
        return payload

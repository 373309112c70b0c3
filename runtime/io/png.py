"""PNG and animated PNG, encoded and decoded with zlib and struct only.

The runtime may not import Pillow (the device image carries numpy, onnxruntime and tokenizers
only), and a virtual display and the camera's file backend need exactly this much of PNG:
8-bit grey, grey+alpha, RGB and RGBA, non-interlaced, all five row filters when decoding;
filter 0 (none) when encoding, which zlib compresses well on display frames (flat areas).
APNG (`encode_apng`) adds the acTL/fcTL/fdAT chunks so a browser plays the display preview.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from runtime.io.errors import ImageError

__all__ = ["decode_png", "encode_apng", "encode_png"]

U8 = npt.NDArray[np.uint8]
SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _ihdr(img: U8) -> bytes:
    h, w = img.shape[:2]
    ch = 1 if img.ndim == 2 else img.shape[2]
    return struct.pack(">IIBBBBB", w, h, 8, _COLOUR[ch], 0, 0, 0)


def _idat(img: U8, level: int) -> bytes:
    rows = np.ascontiguousarray(img).reshape(img.shape[0], -1)
    raw = np.zeros((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    raw[:, 1:] = rows
    return zlib.compress(raw.tobytes(), level)


def encode_png(img: U8, level: int = 6) -> bytes:
    """PNG bytes of an (h, w) grey or (h, w, 1..4) uint8 image."""
    img = _check(img)
    return (
        SIGNATURE
        + _chunk(b"IHDR", _ihdr(img))
        + _chunk(b"IDAT", _idat(img, level))
        + _chunk(b"IEND", b"")
    )


def encode_apng(
    frames: Sequence[U8], delays_s: Sequence[float], loops: int = 0, level: int = 6
) -> bytes:
    """An animated PNG of same-shape frames, each shown for its delay (ms precision)."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    first = _check(frames[0])
    out = [
        SIGNATURE,
        _chunk(b"IHDR", _ihdr(first)),
        _chunk(b"acTL", struct.pack(">II", len(frames), loops)),
    ]
    seq = 0
    h, w = first.shape[:2]
    for i, (frame, delay) in enumerate(zip(frames, delays_s, strict=True)):
        frame = _check(frame)
        if frame.shape != first.shape:
            raise ValueError(f"frame {i} has shape {frame.shape}, expected {first.shape}")
        ms = max(1, min(65535, round(delay * 1000)))
        out.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, 0, 0, ms, 1000, 0, 0)))
        seq += 1
        data = _idat(frame, level)
        if i == 0:
            out.append(_chunk(b"IDAT", data))
        else:
            out.append(_chunk(b"fdAT", struct.pack(">I", seq) + data))
            seq += 1
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def _check(img: npt.NDArray[np.generic]) -> U8:
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in _COLOUR):
        raise ValueError(f"PNG needs an (h, w[, 1-4]) uint8 image, got {a.dtype} {a.shape}")
    return a.astype(np.uint8, copy=False)


def decode_png(data: bytes, where: str = "<png>") -> U8:
    """(h, w, channels) uint8 of an 8-bit non-interlaced PNG (first frame of an APNG)."""
    if data[:8] != SIGNATURE:
        raise ImageError(f"{where}: not a PNG file")
    pos = 8
    idat = []
    header = None
    try:
        while pos < len(data):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            kind = data[pos + 4 : pos + 8]
            body = data[pos + 8 : pos + 8 + length]
            if len(body) != length:
                raise ImageError(
                    f"{where}: truncated PNG ({kind.decode('latin-1')} chunk cut short)"
                )
            pos += 12 + length
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", body)
            elif kind == b"IDAT":
                idat.append(body)
            elif kind == b"IEND":
                break
    except struct.error as exc:
        raise ImageError(f"{where}: truncated PNG") from exc
    if header is None or not idat:
        raise ImageError(f"{where}: PNG without image data")
    w, h, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ImageError(
            f"{where}: PNG with bit depth {depth}, colour type {colour}, interlace {interlace} is not "
            "supported; save it as 8-bit grey/RGB/RGBA, non-interlaced"
        )
    ch = _CHANNELS[colour]
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise ImageError(f"{where}: corrupt PNG data ({exc})") from exc
    stride = w * ch
    if len(raw) < h * (stride + 1):
        raise ImageError(f"{where}: truncated PNG image data")
    rows = np.frombuffer(raw, dtype=np.uint8, count=h * (stride + 1)).reshape(h, stride + 1)
    return _unfilter(rows, ch).reshape(h, w, ch)


def _unfilter(rows: U8, bpp: int) -> U8:
    h, n = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((h, n), dtype=np.uint8)
    prev = np.zeros(n, dtype=np.int32)
    for y in range(h):
        f = int(rows[y, 0])
        line = rows[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 0xFF
        elif f in (1, 3, 4):
            cur = _unfilter_seq(line, prev, bpp, f)
        else:
            raise ImageError(f"corrupt PNG: unknown row filter {f}")
        out[y] = cur
        prev = cur
    return out


def _unfilter_seq(
    line: npt.NDArray[np.int32], prev: npt.NDArray[np.int32], bpp: int, f: int
) -> npt.NDArray[np.int32]:
    """Sub, Average and Paeth depend on the pixel to the left: done per pixel column group."""
    cur = line.copy()
    n = len(line)
    for x in range(0, n, bpp):
        a = cur[x - bpp : x] if x >= bpp else np.zeros(min(bpp, n - x), dtype=np.int32)
        seg = slice(x, min(n, x + bpp))
        b = prev[seg]
        if f == 1:
            cur[seg] = (line[seg] + a) & 0xFF
        elif f == 3:
            cur[seg] = (line[seg] + (a + b) // 2) & 0xFF
        else:
            c = prev[x - bpp : x] if x >= bpp else np.zeros_like(a)
            p = a + b - c
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            cur[seg] = (line[seg] + pred) & 0xFF
    return cur

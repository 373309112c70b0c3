"""PNG and animated PNG, encoded and decoded with zlib and struct only.

The runtime may not import Pillow (the device image carries numpy, onnxruntime and tokenizers
only), and a virtual display and the camera's file backend need exactly this much of PNG:
8-bit grey, grey+alpha, RGB and RGBA, non-interlaced, all five row filters when decoding;
filter 0 (none) when encoding, which zlib compresses well on display frames (flat areas).
APNG (`encode_apng`) adds the acTL/fcTL/fdAT chunks so a browser plays the display preview.

Decoding trusts nothing: the size in IHDR is checked against MAX_SIDE and MAX_PIXELS before
anything is inflated, and zlib inflates at most the bytes that size needs (a 1 MB stream that
would inflate to 1 GiB stops there). Average and Paeth rows depend on the byte to the left;
a few of them are undone byte by byte, many of them by anti-diagonals in numpy (`_wavefront`),
so a small file of a large Paeth image takes a second, not a minute.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from runtime.io.errors import ImageError

__all__ = ["MAX_PIXELS", "MAX_SIDE", "check_size", "decode_png", "encode_apng", "encode_png"]

U8 = npt.NDArray[np.uint8]
SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}
MAX_SIDE = 8192  # pixels, either side
MAX_PIXELS = 2048 * 2048  # width x height (a 4-megapixel frame): 16 MiB of RGBA inflated
_WAVEFRONT_OVER = 90  # bytes per step where anti-diagonals beat the byte loop
_TILE_BYTES = 48 << 20  # of each skewed int16 array of a tile in the anti-diagonal unfilter


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
    frames: Sequence[U8],
    delays_s: Sequence[float],
    loops: int = 0,
    level: int = 6,
    still: U8 | None = None,
) -> bytes:
    """An animated PNG of same-shape frames, each shown for its delay (ms precision).

    `still` is the image a viewer without APNG support shows (default: the first frame); when
    given, it is not part of the animation."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    first = _check(frames[0])
    out = [
        SIGNATURE,
        _chunk(b"IHDR", _ihdr(first)),
        _chunk(b"acTL", struct.pack(">II", len(frames), loops)),
    ]
    if still is not None:
        still = _check(still)
        if still.shape != first.shape:
            raise ValueError(f"the still image has shape {still.shape}, expected {first.shape}")
        out.append(_chunk(b"IDAT", _idat(still, level)))
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
        if i == 0 and still is None:
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
    w, h, ch, idat = _chunks(data, where)
    stride = w * ch
    need = h * (stride + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(idat, need)  # never more than the header's image holds
    except zlib.error as exc:
        raise ImageError(f"{where}: corrupt PNG data ({exc})") from exc
    del idat
    if len(raw) < need:
        raise ImageError(f"{where}: truncated PNG image data ({len(raw)} of {need} bytes)")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, stride + 1)
    bad = np.flatnonzero(rows[:, 0] > 4)
    if bad.size:
        raise ImageError(f"{where}: corrupt PNG: unknown row filter {rows[bad[0], 0]}")
    return _unfilter(rows, ch).reshape(h, w, ch)


def _chunks(data: bytes, where: str) -> tuple[int, int, int, bytes]:
    """Width, height, channels and the joined IDAT data, the header checked against the limits
    before anything is inflated."""
    pos = 8
    idat: list[bytes] = []
    header = None
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise ImageError(f"{where}: truncated PNG ({kind.decode('latin-1')} chunk cut short)")
        pos += 12 + length
        if kind == b"IHDR":
            if length != 13:
                raise ImageError(f"{where}: corrupt PNG (IHDR of {length} bytes, not 13)")
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None or not idat:
        raise ImageError(f"{where}: PNG without image data")
    w, h, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ImageError(
            f"{where}: PNG with bit depth {depth}, colour type {colour}, interlace {interlace} is not "
            "supported; save it as 8-bit grey/RGB/RGBA, non-interlaced"
        )
    check_size(w, h, where)
    return w, h, _CHANNELS[colour], b"".join(idat)


def check_size(w: int, h: int, where: str) -> None:
    """Refuse dimensions outside MAX_SIDE / MAX_PIXELS before any pixel is allocated."""
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE) or w * h > MAX_PIXELS:
        raise ImageError(
            f"{where}: a {w}x{h} image is outside the decoder's limits (1 to {MAX_SIDE} pixels a "
            f"side, MAX_SIDE; at most {MAX_PIXELS} pixels, MAX_PIXELS); scale it down, e.g. "
            "'convert IN -resize 2048x2048 OUT.png'"
        )


def _unfilter(rows: U8, bpp: int) -> U8:
    h, n = rows.shape[0], rows.shape[1] - 1
    kinds = rows[:, 0]
    seq = int(np.count_nonzero(kinds >= 3))
    # Average and Paeth depend on the byte to the left: byte by byte in Python for a few rows,
    # by anti-diagonals in numpy (every filter at once) when many rows use them.
    if seq and seq * n > _WAVEFRONT_OVER * (h + n // bpp):
        return _wavefront(rows, bpp)
    out = np.zeros((h, n), dtype=np.uint8)
    prev = np.zeros(n, dtype=np.uint8)
    for y in range(h):
        f = int(kinds[y])
        line = rows[y, 1:]
        if f == 0:
            cur = line
        elif f == 1:  # Sub: a running sum per channel, vectorized
            cur = (
                np.cumsum(line.reshape(-1, bpp).astype(np.uint32), axis=0)
                .astype(np.uint8)
                .reshape(-1)
            )
        elif f == 2:
            cur = line + prev  # uint8 arithmetic wraps mod 256
        else:
            cur = _unfilter_seq(line, prev, bpp, f)
        out[y] = cur
        prev = out[y]
    return out


def _wavefront(rows: U8, bpp: int) -> U8:
    """All five filters over anti-diagonals: pixel (y, x) needs (y, x-1), (y-1, x) and
    (y-1, x-1) only, so every pixel with the same x + y is computed in one numpy step. The
    tile is skewed (pixel (y, x) stored at [x + y, y]) so that each diagonal is one contiguous
    slice; tiles of rows bound the skewed copies to about _TILE_BYTES."""
    h, w = rows.shape[0], (rows.shape[1] - 1) // bpp
    out = np.empty((h, w, bpp), dtype=np.uint8)
    prev = np.zeros((w, bpp), dtype=np.int16)
    # the tallest tile whose skewed arrays, th x (w + th) pixels of int16, fit _TILE_BYTES
    room = _TILE_BYTES // (2 * bpp)
    th = max(1, min(h, (math.isqrt(w * w + 4 * room) - w) // 2))
    for y0 in range(0, h, th):
        tile = rows[y0 : y0 + th]
        t = tile.shape[0]
        skew = np.zeros((w + t, t, bpp), dtype=np.int16)  # skew[x + y, y] = raw (y, x)
        done = np.zeros((w + t + 2, t + 1, bpp), dtype=np.int16)  # done[x + y + 2, y + 1]
        done[1 : w + 1, 0] = prev
        for y in range(t):
            skew[y : y + w, y] = tile[y, 1:].reshape(w, bpp)
        kinds = tile[:, 0]
        masks = [(k, (kinds == k)[:, None]) for k in (0, 1, 2, 3) if (kinds == k).any()]
        for d in range(t + w - 1):
            lo, hi = max(0, d - w + 1), min(t - 1, d) + 1
            a, b, c = done[d + 1, lo + 1 : hi + 1], done[d + 1, lo:hi], done[d, lo:hi]
            pa, pb, s = np.abs(b - c), np.abs(a - c), a + b
            pc = np.abs(s - 2 * c)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            for k, m in masks:
                alt = (0, a, b, s >> 1)[k]
                pred = np.where(m[lo:hi], alt, pred)
            pred += skew[d, lo:hi]
            done[d + 2, lo + 1 : hi + 1] = pred & 0xFF
        for y in range(t):
            out[y0 + y] = done[y + 2 : y + 2 + w, y + 1]
        prev = done[t + 1 : t + 1 + w, t]
    return out.reshape(h, w * bpp)


def _unfilter_seq(line: U8, prev: U8, bpp: int, f: int) -> U8:
    """Average and Paeth depend on the byte to the left: a byte loop on Python ints."""
    raw, up = line.tolist(), prev.tolist()
    cur = [0] * len(raw)
    for i, x in enumerate(raw):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if f == 3:
            cur[i] = (x + ((a + b) >> 1)) & 0xFF
            continue
        c = up[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        cur[i] = (x + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    return np.array(cur, dtype=np.uint8)

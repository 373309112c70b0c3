"""Image files for the file-backed camera: PNG (own decoder) and binary PGM/PPM.

Anything else (JPEG, a text file named .png, an empty file) is an `ImageError` that names the
file and says how to convert it. Returns (h, w, 3) uint8 RGB whatever the file held. Headers
are not trusted: sizes are checked against `runtime.io.png.MAX_SIDE`/`MAX_PIXELS` and files
larger than MAX_IMAGE_BYTES are refused before they are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from runtime.io.errors import ImageError
from runtime.io.png import check_size, decode_png
from runtime.textlimits import read_limited

__all__ = ["MAX_IMAGE_BYTES", "decode_image", "read_image", "to_rgb"]

U8 = npt.NDArray[np.uint8]
MAX_IMAGE_BYTES = 64 << 20  # a 16-megapixel PPM is 48 MiB
_SPACE = b" \t\n\r\x0b\x0c"
_MAX_DIGITS = 8  # of a PGM/PPM header number
FIX = "convert it to 8-bit PNG, e.g. 'convert IN -depth 8 OUT.png'"


def read_image(path: str | Path) -> U8:
    path = Path(path)
    try:
        data = read_limited(
            path,
            MAX_IMAGE_BYTES,
            f"an image file here (MAX_IMAGE_BYTES, {MAX_IMAGE_BYTES >> 20} MiB)",
            ImageError,
            FIX,
        )
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: image file not found") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the image ({exc.strerror})") from exc
    return decode_image(data, str(path))


def decode_image(data: bytes, where: str = "<image>") -> U8:
    """(h, w, 3) uint8 RGB of PNG or PGM/PPM bytes; `ImageError` for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return to_rgb(decode_png(data, where))
    if data[:2] in (b"P5", b"P6"):
        return to_rgb(_netpbm(data, where))
    kind = "a JPEG" if data[:3] == b"\xff\xd8\xff" else "empty" if not data else "not an image"
    raise ImageError(f"{where}: {kind}; the camera's file backend reads PNG and PPM/PGM: {FIX}")


def to_rgb(img: npt.NDArray[np.uint8]) -> U8:
    if img.ndim == 2:
        img = img[:, :, None]
    ch = img.shape[2]
    if ch == 1:
        return np.repeat(img, 3, axis=2)
    if ch == 2:
        return np.repeat(img[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def _netpbm(data: bytes, path: str) -> U8:
    """Binary PGM (P5) / PPM (P6): the header's three numbers (with # comments between them)
    are checked, the sizes against the PNG decoder's limits, before the pixels are sliced."""
    fields: list[int] = []
    pos = 2
    while len(fields) < 3:
        while pos < len(data) and data[pos] in _SPACE:
            pos += 1
        if data[pos : pos + 1] == b"#":
            end = data.find(b"\n", pos)
            if end < 0:
                raise ImageError(f"{path}: truncated PGM/PPM header (a comment never ends): {FIX}")
            pos = end + 1
            continue
        end = pos
        while end < len(data) and end - pos <= _MAX_DIGITS and data[end] not in _SPACE:
            end += 1
        field = data[pos:end]
        if not field:
            raise ImageError(f"{path}: truncated PGM/PPM header: {FIX}")
        if not field.isdigit() or len(field) > _MAX_DIGITS:
            raise ImageError(
                f"{path}: PGM/PPM header field {field[:12]!r} is not a number of at most "
                f"{_MAX_DIGITS} digits: {FIX}"
            )
        fields.append(int(field))
        pos = end
    w, h, maxval = fields
    if maxval != 255:
        raise ImageError(
            f"{path}: PGM/PPM with maxval {maxval}; only 8-bit (255) is supported: {FIX}"
        )
    check_size(w, h, path)
    ch = 3 if data[:2] == b"P6" else 1
    body = data[pos + 1 : pos + 1 + w * h * ch]
    if len(body) != w * h * ch:
        raise ImageError(f"{path}: truncated PGM/PPM ({len(body)} of {w * h * ch} bytes): {FIX}")
    return np.frombuffer(body, dtype=np.uint8).reshape(h, w, ch)

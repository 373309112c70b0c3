"""Image files for the file-backed camera: PNG (own decoder) and binary PGM/PPM.

Anything else (JPEG, a text file named .png, an empty file) is an `ImageError` that names the
file and says how to convert it. Returns (h, w, 3) uint8 RGB whatever the file held.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from runtime.io.errors import ImageError
from runtime.io.png import decode_png

__all__ = ["read_image", "to_rgb"]

U8 = npt.NDArray[np.uint8]
FIX = "convert it to 8-bit PNG, e.g. 'convert IN -depth 8 OUT.png'"


def read_image(path: str | Path) -> U8:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: image file not found") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the image ({exc.strerror})") from exc
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return to_rgb(decode_png(data, str(path)))
    if data[:2] in (b"P5", b"P6"):
        return to_rgb(_netpbm(data, path))
    kind = "a JPEG" if data[:3] == b"\xff\xd8\xff" else "empty" if not data else "not an image"
    raise ImageError(f"{path}: {kind}; the camera's file backend reads PNG and PPM/PGM: {FIX}")


def to_rgb(img: npt.NDArray[np.uint8]) -> U8:
    if img.ndim == 2:
        img = img[:, :, None]
    ch = img.shape[2]
    if ch == 1:
        return np.repeat(img, 3, axis=2)
    if ch == 2:
        return np.repeat(img[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def _netpbm(data: bytes, path: Path) -> U8:
    fields: list[bytes] = []
    pos = 2
    while len(fields) < 3:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        if end == pos:
            raise ImageError(f"{path}: truncated PGM/PPM header")
        fields.append(data[pos:end])
        pos = end
    w, h, maxval = (int(f) for f in fields)
    if maxval != 255:
        raise ImageError(
            f"{path}: PGM/PPM with maxval {maxval}; only 8-bit (255) is supported: {FIX}"
        )
    ch = 3 if data[:2] == b"P6" else 1
    body = data[pos + 1 : pos + 1 + w * h * ch]
    if len(body) != w * h * ch:
        raise ImageError(f"{path}: truncated PGM/PPM ({len(body)} of {w * h * ch} bytes)")
    return np.frombuffer(body, dtype=np.uint8).reshape(h, w, ch)

"""Glyphs for the display, from a pre-rendered atlas: the device draws text without a font engine.

Why an atlas: the device image carries numpy, onnxruntime and tokenizers only, and a TrueType
rasterizer in numpy would be slow and large. The host renders the glyphs once, with Pillow and
the system's fonts (DejaVu for Latin, Noto CJK for Chinese and Japanese), into one `.npz` file
that ships in the bundle (`ocula.glyphatlas.build_atlas`); the device loads it with numpy
(no pickle, every array's header checked against MAX_ATLAS_* before it is made) and blits
glyph bitmaps. GB2312 level 1+2 (6763 hanzi), kana, CJK and full-width
punctuation, ASCII and Latin-1 fit in about 2 MB.

Format (`.npz`): `codepoints` int32 (n,), `boxes` int16 (n, 7) = atlas x, y, w, h, left, top,
advance (top measured down from the line's top), `bitmap` uint8 (H, W) coverage, `meta` a JSON
string: size, line_height, fonts, and `missing_scripts` (scripts the host had no font for).
A bundle carries it as `artifacts/glyphs.npz` (`BUNDLE_NAME`), where the board's runtime
looks for it (`runtime.apps.device`).

A character the atlas lacks is drawn as a box (a "tofu"), counted in `missing`, and said once
per script in the log with the fix: the text stays readable where it can and the gap is visible.
"""

from __future__ import annotations

import io
import logging
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.io.errors import IoError
from runtime.npyfile import parse_npy
from runtime.textlimits import loads_json, read_limited

__all__ = ["BUNDLE_NAME", "Glyph", "GlyphAtlas", "is_wide", "script_of"]

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
#: the atlas's file name in a bundle's (and an installed slot's) `artifacts/` folder
BUNDLE_NAME = "glyphs.npz"


@dataclass(frozen=True)
class Glyph:
    bitmap: U8
    left: int
    top: int
    advance: int


def is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def script_of(ch: str) -> str:
    cp = ord(ch)
    if 0x3040 <= cp <= 0x30FF:
        return "Japanese kana"
    if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF:
        return "Hangul"
    if 0x3400 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x2FFFF:
        return "CJK (Han)"
    if cp < 0x250:
        return "Latin"
    name = unicodedata.name(ch, "")
    return name.split(" ")[0].title() if name else f"U+{cp:04X}"


class GlyphAtlas:
    def __init__(
        self,
        codepoints: npt.NDArray[np.int32],
        boxes: npt.NDArray[np.int16],
        bitmap: U8,
        meta: dict[str, object],
    ) -> None:
        self.bitmap = bitmap
        self.meta = meta
        self.size = int(str(meta.get("size", 24)))
        self.line_height = int(str(meta.get("line_height", self.size * 5 // 4)))
        self._index = {int(c): i for i, c in enumerate(codepoints)}
        self._boxes = boxes.astype(np.int32)
        self._cache: dict[str, Glyph] = {}
        self._shaded: dict[tuple[str, int], U8] = {}
        self.missing = 0
        self.missing_by_script: dict[str, int] = {}

    @classmethod
    def empty(cls, size: int = 28) -> GlyphAtlas:
        """No glyphs at all: every character shows as a box (and is said). The fallback on a
        board whose bundle carries no atlas: the display's cadence and layout still run."""
        meta: dict[str, object] = {
            "size": size,
            "line_height": size * 3 // 2,
            "missing_scripts": ["all"],
        }
        return cls(
            np.zeros(0, np.int32), np.zeros((0, 7), np.int16), np.zeros((1, 1), np.uint8), meta
        )

    @classmethod
    def load(cls, path: str | Path) -> GlyphAtlas:
        path = Path(path)
        try:
            data = read_limited(
                path,
                MAX_ATLAS_BYTES,
                f"a glyph atlas (MAX_ATLAS_BYTES, {MAX_ATLAS_BYTES >> 20} MiB)",
                IoError,
                "rebuild it",
            )
        except FileNotFoundError as exc:
            raise IoError(
                f"glyph atlas {path}: not found; build it with the host tools (ocula run builds one)"
            ) from exc
        except OSError as exc:
            raise IoError(f"glyph atlas {path}: cannot read it ({exc.strerror or exc})") from exc
        return cls.parse(data, f"glyph atlas {path}")

    @classmethod
    def parse(cls, data: bytes, where: str = "glyph atlas") -> GlyphAtlas:
        """An atlas from `.npz` bytes; every array's header is checked (dtype, shape, bytes)
        before numpy allocates it, then the boxes against the bitmap."""
        arrays = _read_npz(data, where)
        meta = loads_json(arrays.pop("meta"), where, IoError, max_bytes=MAX_META_CHARS)
        return cls(*_checked(arrays, meta, where))

    def has(self, ch: str) -> bool:
        return ord(ch) in self._index

    def glyph(self, ch: str) -> Glyph:
        g = self._cache.get(ch)
        if g is not None:
            return g
        i = self._index.get(ord(ch))
        if i is None:
            g = self._box(ch)
        else:
            x, y, w, h, left, top, adv = (int(v) for v in self._boxes[i])
            g = Glyph(self.bitmap[y : y + h, x : x + w], left, top, adv)
        self._cache[ch] = g
        return g

    def shaded(self, ch: str, level: int) -> U8:
        """The glyph's coverage scaled to grey `level` (255: as drawn), computed once: drawing
        a line is then one numpy call per glyph (each call may hand the GIL over)."""
        if level == 255:
            return self.glyph(ch).bitmap
        key = (ch, level)
        bitmap = self._shaded.get(key)
        if bitmap is None:
            src = self.glyph(ch).bitmap
            bitmap = (src.astype(np.uint16) * level // 255).astype(np.uint8)
            if len(self._shaded) >= 8192:
                self._shaded.clear()
            self._shaded[key] = bitmap
        return bitmap

    def advance(self, ch: str) -> int:
        return self.glyph(ch).advance

    def measure(self, text: str) -> int:
        return sum(self.glyph(c).advance for c in text)

    def _box(self, ch: str) -> Glyph:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Mn"):
            return Glyph(
                np.zeros((0, 0), dtype=np.uint8), 0, 0, self.size // 3 if ch.isspace() else 0
            )
        script = script_of(ch)
        self.missing += 1
        n = self.missing_by_script.get(script, 0)
        self.missing_by_script[script] = n + 1
        if n == 0:
            log.warning(
                "no glyph for %s text (first: U+%04X); shown as boxes. Rebuild the glyph atlas with a "
                "font that covers it (Debian: %s)",
                script,
                ord(ch),
                "fonts-noto-cjk"
                if script in ("CJK (Han)", "Japanese kana", "Hangul")
                else "fonts-noto-core",
            )
        w = self.size if is_wide(ch) else self.size // 2
        h = self.size * 3 // 4
        box = np.zeros((h, w - 2), dtype=np.uint8)
        box[[0, -1], :] = 200
        box[:, [0, -1]] = 200
        return Glyph(box, 1, (self.line_height - h) // 2, w)


MAX_ATLAS_BYTES = 32 << 20  # the file; GB2312 + Latin at 28 px is about 2.4 MB
MAX_ATLAS_UNPACKED = 80 << 20  # its arrays together
MAX_META_CHARS = 64 << 10
MAX_GLYPHS = 1 << 16
MAX_BITMAP = 8192 * 8192  # pixels
# member: (dtype kinds, most elements)
_MEMBERS = {
    "codepoints": ("iu", MAX_GLYPHS),
    "boxes": ("iu", MAX_GLYPHS * 7),
    "bitmap": ("u", MAX_BITMAP),
    "meta": ("U", 1),
}


def _read_npz(data: bytes, where: str) -> dict[str, Any]:
    """The four arrays of an atlas `.npz`, each header checked before its array is made."""
    bad = f"{where}: not a glyph atlas"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = {i.filename.removesuffix(".npy"): i for i in z.infolist()}
            if set(_MEMBERS) - set(infos):
                raise IoError(f"{bad} (missing {', '.join(sorted(set(_MEMBERS) - set(infos)))})")
            if sum(infos[k].file_size for k in _MEMBERS) > MAX_ATLAS_UNPACKED:
                raise IoError(
                    f"{bad}: its arrays unpack to more than MAX_ATLAS_UNPACKED "
                    f"({MAX_ATLAS_UNPACKED >> 20} MiB); rebuild it"
                )
            out: dict[str, Any] = {}
            for name, (kinds, most) in _MEMBERS.items():
                raw = z.read(infos[name])
                out[name] = parse_npy(raw, f"{bad} ({name})", IoError, kinds=kinds, most=most)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
    ) as exc:
        raise IoError(f"{bad} ({exc}); rebuild it") from exc
    except (NotImplementedError, RuntimeError) as exc:  # zip features numpy never writes
        raise IoError(f"{bad} ({exc}); rebuild it") from exc
    return {k: (str(v) if k == "meta" else v) for k, v in out.items()}


def _checked(
    a: dict[str, Any], meta: Any, where: str
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int16], U8, dict[str, object]]:
    cps, boxes, bitmap = a["codepoints"], a["boxes"], a["bitmap"]
    bad = f"{where}: not a glyph atlas"
    if cps.ndim != 1 or boxes.shape != (cps.size, 7) or bitmap.ndim != 2:
        raise IoError(f"{bad} (shapes {cps.shape}, {boxes.shape}, {bitmap.shape}); rebuild it")
    if bitmap.dtype != np.uint8 or (cps.size and not 0 <= cps.min() <= cps.max() <= 0x10FFFF):
        raise IoError(f"{bad} (bitmap {bitmap.dtype} or code points out of range); rebuild it")
    b = boxes.astype(np.int64)
    if b.size and (
        (b[:, :4] < 0).any()
        or (b[:, 0] + b[:, 2] > bitmap.shape[1]).any()
        or (b[:, 1] + b[:, 3] > bitmap.shape[0]).any()
    ):
        raise IoError(f"{bad} (a glyph box outside the bitmap); rebuild it")
    if not isinstance(meta, dict):
        raise IoError(f"{bad} (meta is not an object); rebuild it")
    for key in ("size", "line_height"):
        v = meta.get(key, 24)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 1024:
            raise IoError(f"{bad} (meta {key} {v!r} is not 1 to 1024 px); rebuild it")
    return cps.astype(np.int32), b.astype(np.int16), bitmap, meta

"""Build the display's glyph atlas on the host, with Pillow and the system's fonts.

The device draws text from this atlas (`runtime.io.glyphs`), so it needs no font engine. Fonts
are found on the system: `fc-match` when fontconfig is there, else the usual Debian paths
(DejaVu Sans for Latin, Noto Sans CJK SC for Chinese, kana and CJK punctuation). A script
without a font is left out of the atlas, recorded in its `missing_scripts`, and said: the
device shows boxes for it and says which package to install.

Atlases are cached by size, character set and fonts under ~/.cache/ocula/glyphs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np

from runtime.io.layout import is_cjk

__all__ = ["atlas_chars", "build_atlas", "cached_atlas", "find_fonts"]

log = logging.getLogger(__name__)

LATIN_FALLBACKS = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]
CJK_FALLBACKS = [
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
]
CJK_SC_INDEX = 2  # the face index of Simplified Chinese in Noto's CJK collection


def _fc_match(pattern: str) -> tuple[str, int] | None:
    if shutil.which("fc-match") is None:
        return None
    try:
        out = subprocess.run(
            ["fc-match", "-f", "%{file}\t%{index}", pattern],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    path, _, index = out.partition("\t")
    return (path, int(index or 0)) if path and Path(path).is_file() else None


def find_fonts() -> dict[str, tuple[str, int] | None]:
    """{'latin': (file, face index) | None, 'cjk': ... | None}."""
    latin = next(((p, 0) for p in LATIN_FALLBACKS if Path(p).is_file()), None) or _fc_match(
        "sans-serif"
    )
    cjk = next(((p, CJK_SC_INDEX) for p in CJK_FALLBACKS if Path(p).is_file()), None)
    if cjk is None:
        found = _fc_match("sans-serif:lang=zh-cn")
        if (found and "cjk" in found[0].lower()) or (found and "han" in found[0].lower()):
            cjk = found
    return {"latin": latin, "cjk": cjk}


def atlas_chars(extra: str = "") -> str:
    chars = [chr(c) for c in range(0x20, 0x7F)] + [chr(c) for c in range(0xA0, 0x180)]
    chars += [chr(c) for c in range(0x370, 0x530)]  # Greek, Cyrillic
    chars += [chr(c) for c in range(0x2010, 0x2030)] + ["€", "…"]
    chars += [chr(c) for c in range(0x3000, 0x3040)]  # CJK punctuation
    chars += [chr(c) for c in range(0x3040, 0x3100)]  # kana
    chars += [chr(c) for c in range(0xFF01, 0xFF5F)]  # full-width forms
    for hi in range(0xB0, 0xF8):  # GB2312 hanzi, levels 1 and 2
        for lo in range(0xA1, 0xFF):
            try:
                chars.append(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    keep = (
        c
        for c in chars + list(extra)
        if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Cn")
    )
    return "".join(dict.fromkeys(keep))


def build_atlas(
    out: Path,
    size: int = 28,
    extra: str = "",
    fonts: dict[str, tuple[str, int] | None] | None = None,
) -> Path:
    """Render the atlas to `out` (.npz); returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = find_fonts() if fonts is None else fonts
    faces = {
        k: ImageFont.truetype(v[0], size, index=v[1], layout_engine=ImageFont.Layout.BASIC)
        for k, v in fonts.items()
        if v
    }
    if "latin" not in faces:
        raise OSError("no Latin font found on this system; install fonts-dejavu-core")
    missing = []
    if "cjk" not in faces:
        missing.append("CJK (Han)")
        log.warning(
            "no CJK font found; Chinese and Japanese will show as boxes on the display. "
            "Install fonts-noto-cjk (apt-get install fonts-noto-cjk)"
        )
    ascent = max(f.getmetrics()[0] for f in faces.values())
    descent = max(f.getmetrics()[1] for f in faces.values())
    line_height = ascent + descent + size // 6
    cell_w, cell_h = size * 2, ascent + descent
    glyphs = []
    for ch in atlas_chars(extra):
        face = faces.get("cjk") if (is_cjk(ch) and "cjk" in faces) else faces["latin"]
        if is_cjk(ch) and "cjk" not in faces:
            continue
        advance = round(face.getlength(ch))
        x0, y0, x1, y1 = face.getbbox(ch, anchor="ls")
        w, h = min(cell_w, max(0, x1 - x0)), min(cell_h, max(0, y1 - y0))
        bitmap = np.zeros((h, w), dtype=np.uint8)
        if w and h:
            img = Image.new("L", (w, h))
            ImageDraw.Draw(img).text((-x0, -y0), ch, font=face, fill=255, anchor="ls")
            bitmap = np.asarray(img, dtype=np.uint8)
        glyphs.append((ord(ch), bitmap, x0, ascent + y0 + size // 12, advance))
    cols = 64
    rows = -(-len(glyphs) // cols)
    sheet = np.zeros((rows * cell_h, cols * cell_w), dtype=np.uint8)
    boxes = np.zeros((len(glyphs), 7), dtype=np.int16)
    for i, (_cp, bm, left, top, adv) in enumerate(glyphs):
        x, y = (i % cols) * cell_w, (i // cols) * cell_h
        h, w = bm.shape
        sheet[y : y + h, x : x + w] = bm
        boxes[i] = (x, y, w, h, left, top, adv)
    meta = {
        "size": size,
        "line_height": line_height,
        "fonts": {k: v[0] for k, v in fonts.items() if v},
        "missing_scripts": missing,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        codepoints=np.array([g[0] for g in glyphs], dtype=np.int32),
        boxes=boxes,
        bitmap=sheet,
        meta=np.array(json.dumps(meta)),
    )
    os.replace(tmp, out)
    return out


def cached_atlas(size: int = 28, extra: str = "", cache: Path | None = None) -> Path:
    """The atlas for these settings, built once and kept under ~/.cache/ocula/glyphs."""
    fonts = find_fonts()
    key = hashlib.sha256(json.dumps([size, extra, fonts, 2]).encode()).hexdigest()[:16]
    root = (
        cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ocula" / "glyphs"
    )
    path = root / f"atlas-{size}-{key}.npz"
    if not path.is_file():
        log.info("building the display's glyph atlas (%d px) in %s", size, path)
        build_atlas(path, size, extra, fonts)
    return path

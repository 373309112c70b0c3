"""Text layout for a small monochrome display: line breaking and drawing.

Line breaking (`wrap`): text is cut into units that may not be split: a word of a
space-separated script, or one CJK character (Chinese and Japanese break between any two
characters). Kinsoku rules keep closing punctuation (，。、！？」）…) off the start of a line
and opening punctuation (「（《) off its end by gluing them to their neighbour. Units are placed
greedily by their measured width; a unit wider than the line is split by character. `\n`
forces a break.

Drawing (`draw_text`) blits glyph bitmaps at a grey level (the style: final text full
brightness, partial text dimmer) with max-compositing, so overlapping glyphs never darken.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from runtime.io.glyphs import GlyphAtlas

__all__ = ["draw_text", "is_cjk", "units", "wrap"]

U8 = npt.NDArray[np.uint8]

NO_START = set(
    "，。、．！？：；）」』》〉】〕…‥ーぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ々ゝゞ・,.!?:;)]}%’”"
)
NO_END = set("（「『《〈【〔([{‘“")


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x3000 <= cp <= 0x30FF
        or 0x3400 <= cp <= 0x9FFF
        or 0xF900 <= cp <= 0xFAFF
        or 0xFF00 <= cp <= 0xFFEF
        or 0xAC00 <= cp <= 0xD7AF
        or 0x20000 <= cp <= 0x2FFFF
    )


def units(text: str) -> list[str]:
    """Unbreakable units: words, single CJK characters, single spaces and newlines."""
    out: list[str] = []
    word = ""
    for ch in text:
        if ch == "\n" or ch.isspace() or is_cjk(ch):
            if word:
                out.append(word)
                word = ""
            out.append("\n" if ch == "\n" else " " if ch.isspace() else ch)
        else:
            word += ch
    if word:
        out.append(word)
    glued: list[str] = []
    for u in out:
        if (glued and u[0] in NO_START and glued[-1] not in (" ", "\n")) or (
            glued and glued[-1][-1] in NO_END and u not in (" ", "\n")
        ):
            glued[-1] += u
        else:
            glued.append(u)
    return glued


def wrap(text: str, width: int, measure: Callable[[str], int]) -> list[str]:
    """Lines of at most `width` pixels. `measure` is additive (a string's width is the sum of
    its characters'), so each unit and character is measured once: linear in the text, even
    for one unbreakable run of thousands of characters."""
    lines: list[str] = []
    line, line_w = "", 0
    space = False
    space_w = measure(" ")

    def split(u: str, lead: str = "") -> None:
        """Place `u` character by character after `lead` (a space or nothing), breaking where
        the line is full; a line never ends with the lead."""
        nonlocal line, line_w
        for ch in u:
            w = measure(ch) + (space_w if lead else 0)
            if line and line_w + w > width:
                lines.append(line)
                line, line_w, lead = "", 0, ""
                w = measure(ch)
            line, line_w, lead = line + lead + ch, line_w + w, ""

    for u in units(text):
        if u == "\n":
            lines.append(line)
            line, line_w, space = "", 0, False
            continue
        if u == " ":
            space = bool(line)
            continue
        u_w = measure(u)
        cand_w = line_w + (space_w if space else 0) + u_w
        if cand_w <= width:
            line, line_w = (f"{line} {u}" if space else line + u), cand_w
        elif not line:
            split(u)
        elif u_w > width:
            # too wide for any line: it is split anyway, so it fills this one first
            split(u, " " if space else "")
        else:
            lines.append(line)
            line, line_w = u, u_w
        space = False
    if line or not lines:
        lines.append(line)
    return lines


def draw_text(canvas: U8, x: int, y: int, text: str, atlas: GlyphAtlas, level: int = 255) -> int:
    """Draw `text` with its line top at y; returns the x after the last glyph."""
    h, w = canvas.shape
    for ch in text:
        g = atlas.glyph(ch)
        gh, gw = g.bitmap.shape
        x0, y0 = x + g.left, y + g.top
        cx0, cy0 = max(0, x0), max(0, y0)
        cx1, cy1 = min(w, x0 + gw), min(h, y0 + gh)
        if cx1 > cx0 and cy1 > cy0:
            src = atlas.shaded(ch, level)[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            region = canvas[cy0:cy1, cx0:cx1]
            np.maximum(region, src, out=region)
        x += g.advance
    return x

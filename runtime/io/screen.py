"""What the glasses show: paragraphs of final and partial text, scrolled at reading pace.

The app edits paragraphs (`commit`, `set_partial`, `append`); the display task calls
`render(now)` at the panel's cadence and gets the frame and the dirty rectangle (None when
nothing changed, so a display backend can skip the write).

Styles: final text at full brightness, partial text (not yet stable) dimmer, so a reader knows
which words may still change; a style is a grey level, which any monochrome panel can show.

Scrolling is reading-rate aware: when text overflows the screen, the top line leaves only after
it has been on screen long enough to read (its characters at `reading_cps`, CJK characters at
`cjk_cps`, never less than `min_dwell_s`), and it leaves with a short smooth scroll. If text
arrives faster than anyone can read for more than a screenful, the view jumps to the newest
text and counts it (`display.scroll_jumps`): better a skipped line than a caption minutes late.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from runtime.io.glyphs import GlyphAtlas
from runtime.io.layout import draw_text, is_cjk, wrap
from runtime.io.panel import Rect
from runtime.telemetry.metrics import Metrics

__all__ = ["FINAL", "PARTIAL", "SOURCE", "CaptionScreen"]

U8 = npt.NDArray[np.uint8]
FINAL = 255
SOURCE = 150
PARTIAL = 110


@dataclass
class _Para:
    text: str
    level: int
    #: (text, its lines) as last wrapped: a paragraph is re-wrapped only when it changes
    wrapped: tuple[str, list[str]] | None = None


class CaptionScreen:
    def __init__(
        self,
        width: int,
        height: int,
        atlas: GlyphAtlas,
        metrics: Metrics | None = None,
        *,
        margin: int = 16,
        reading_cps: float = 15.0,
        cjk_cps: float = 7.0,
        min_dwell_s: float = 0.8,
        scroll_s: float = 0.2,
        max_paragraphs: int = 200,
    ) -> None:
        self.width, self.height = width, height
        self.atlas = atlas
        self.metrics = metrics or Metrics()
        self.margin = margin
        self.reading_cps, self.cjk_cps = reading_cps, cjk_cps
        self.min_dwell_s, self.scroll_s = min_dwell_s, scroll_s
        self.max_paragraphs = max_paragraphs
        self.rows = max(1, (height - 2 * margin) // atlas.line_height)
        self.paras: list[_Para] = []
        self.partial = ""
        self.partial_stable = 0
        self._partial_wrapped: tuple[str, list[str]] = ("", [])
        # the lines of every paragraph but the last (only the last grows), rebuilt on a commit
        self._settled: tuple[tuple[int, int], list[tuple[str, int, int]]] = ((0, 0), [])
        self._top = 0
        self._top_since: float | None = None
        self._scroll_from: float | None = None
        self._last_key: object = None
        self._frame: U8 = np.zeros((height, width), dtype=np.uint8)
        self._line_cache: dict[tuple[str, int, int], U8] = {}

    # -- editing (the app) ---------------------------------------------------------------

    def commit(self, text: str, level: int = FINAL) -> _Para:
        """A new finished paragraph; the partial line is cleared. Returns it, for `append`."""
        para = _Para(text, level)
        self._wrap(para)  # layout is paid by the caller's thread, not the display's
        self.paras.append(para)
        self.partial, self.partial_stable = "", 0
        self._trim()
        return para

    def append(self, text: str, para: _Para | None = None) -> None:
        """Extend a paragraph with streamed tokens: `para` (what `commit` returned), so that a
        caption committed meanwhile by another app does not receive them, or the last one."""
        if para is None:
            if not self.paras:
                self.paras.append(_Para("", FINAL))
            para = self.paras[-1]
        para.text += text
        self._wrap(para)
        if self.paras and para is not self.paras[-1]:
            self._settled = ((-1, 0), [])  # a settled paragraph grew: lay them out again

    def set_partial(self, text: str, stable_chars: int = 0) -> None:
        """The utterance in progress; its first `stable_chars` characters are committed words
        (final style), the rest tentative (partial style)."""
        self._wrap_partial(text)
        self.partial = text
        self.partial_stable = stable_chars

    def _trim(self) -> None:
        extra = len(self.paras) - self.max_paragraphs
        if extra > 0:
            dropped = sum(len(self._wrap(p)) for p in self.paras[:extra])
            del self.paras[:extra]
            self._top = max(0, self._top - dropped)

    # -- layout and rendering (the display task) -----------------------------------------

    def _wrap(self, para: _Para) -> list[str]:
        """The paragraph's lines, wrapped again only if its text changed since the last time
        (per paragraph: a long history of paragraphs is never re-wrapped as a whole)."""
        text, done = para.text, para.wrapped
        if done is not None and done[0] == text:
            return done[1]
        lines = wrap(text, self.width - 2 * self.margin, self.atlas.measure)
        para.wrapped = (text, lines)
        return lines

    def _wrap_partial(self, text: str) -> list[str]:
        done = self._partial_wrapped
        if done[0] != text:
            done = (text, wrap(text, self.width - 2 * self.margin, self.atlas.measure))
            self._partial_wrapped = done
        return done[1]

    def lines(self) -> list[tuple[str, int, int]]:
        """(text, level, characters at full brightness) per line, paragraphs then partial."""
        paras = list(self.paras)
        key = (len(paras), id(paras[0]) if paras else 0)
        if self._settled[0] != key:
            settled = [(line, p.level, len(line)) for p in paras[:-1] for line in self._wrap(p)]
            self._settled = (key, settled)
        out = list(self._settled[1])
        if paras:
            last = paras[-1]
            out += [(line, last.level, len(line)) for line in self._wrap(last)]
        cursor = 0
        partial = self.partial
        for line in self._wrap_partial(partial) if partial else []:
            at = partial.find(line, cursor)
            at = cursor if at < 0 else at
            out.append((line, PARTIAL, max(0, min(len(line), self.partial_stable - at))))
            cursor = at + len(line)
        return out

    def dwell_s(self, line: str) -> float:
        cjk = sum(1 for c in line if is_cjk(c))
        return max(self.min_dwell_s, cjk / self.cjk_cps + (len(line) - cjk) / self.reading_cps)

    def _advance(self, lines: list[tuple[str, int, int]], now: float) -> None:
        target = max(0, len(lines) - self.rows)
        if self._top > target:
            self._top, self._top_since = target, now
        if self._top_since is None:
            self._top_since = now
        behind = target - self._top
        self.metrics.gauge("display.scroll_backlog_lines", behind)
        if behind > self.rows:
            self._top, self._top_since, self._scroll_from = target, now, None
            self.metrics.inc("display.scroll_jumps")
            return
        if behind > 0 and now - self._top_since >= self.dwell_s(lines[self._top][0]):
            self._top += 1
            self._top_since = now
            self._scroll_from = now

    def _line_bitmap(self, line: tuple[str, int, int]) -> U8:
        """One line drawn once and reused while it stays on screen (a render is then copies)."""
        bitmap = self._line_cache.get(line)
        if bitmap is None:
            text, level, bright = line
            bitmap = _blank(self.atlas.line_height, self.width)
            x = draw_text(
                bitmap, self.margin, 0, text[:bright], self.atlas, FINAL if bright else level
            )
            draw_text(bitmap, x, 0, text[bright:], self.atlas, level)
            if len(self._line_cache) >= 256:
                self._line_cache.pop(next(iter(self._line_cache)))
            self._line_cache[line] = bitmap
        return bitmap

    def render(self, now: float) -> tuple[U8, Rect | None]:
        lines = self.lines()
        self._advance(lines, now)
        offset = 0
        if self._scroll_from is not None:
            frac = (now - self._scroll_from) / self.scroll_s
            if frac >= 1:
                self._scroll_from = None
            else:
                offset = round((1 - frac) * self.atlas.line_height)
        visible = lines[max(0, self._top - (1 if offset else 0)) : self._top + self.rows]
        key = (tuple(visible), offset)
        if key == self._last_key:
            return self._frame, None
        self._last_key = key
        frame = np.zeros((self.height, self.width), dtype=np.uint8)
        lh = self.atlas.line_height
        y = self.margin - (lh - offset if offset else 0)
        for line in visible:
            if y + lh > self.margin // 2:
                bitmap = self._line_bitmap(line)
                y0, y1 = max(0, y), min(self.height, y + lh)
                if y1 > y0:
                    frame[y0:y1] = bitmap[y0 - y : y1 - y]
            y += lh
        dirty = _diff_rect(self._frame, frame)
        self._frame = frame
        return frame, dirty


def _blank(h: int, w: int) -> U8:
    return np.zeros((h, w), dtype=np.uint8)


def _diff_rect(a: U8, b: U8) -> Rect | None:
    changed = a != b
    rows = np.flatnonzero(changed.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(changed.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1

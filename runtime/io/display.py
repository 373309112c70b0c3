"""Displays: a small interface and its backends.

`Display.show(frame, dirty, t)` presents an (h, w) uint8 luminance frame; `dirty` is the
rectangle (x0, y0, x1, y1) that changed since the last call (None: nothing changed; the
backend may skip work). The colour of a monochrome panel (green on the glasses) is the
backend's business, not the renderer's. Backends:
- `VirtualDisplay`: records each changed frame as a PNG (`frame_00012.png`, tinted in the
  panel's colour), an index `frames.json` (file, time), and on `close()` an animated PNG
  `preview.png` sampled at `preview_fps` and downscaled (a browser plays it). All of it runs
  on a writer thread fed by a bounded queue: `show` costs one frame copy on the real-time
  loop; frames the writer cannot keep up with are dropped from the recording and counted
  (`dropped`), never queued without bound;
- `FramebufferDisplay` (`runtime.io.fbdev`): /dev/fbN with dirty-rectangle writes.
The panel's primitives (`Rect`, colours, `tint`) are in `runtime.io.panel`, which both use.
`open_display(spec)`: "fb:/dev/fb0" or a folder path for the virtual display.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from runtime.io.errors import DeviceError
from runtime.io.panel import Rect, tint
from runtime.io.png import encode_apng, encode_png

__all__ = ["Display", "Rect", "VirtualDisplay", "open_display", "tint"]

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]


class Display(Protocol):
    width: int
    height: int

    def show(self, frame: U8, dirty: Rect | None, t: float) -> None: ...

    def close(self) -> None: ...


class VirtualDisplay:
    def __init__(
        self,
        out_dir: str | Path,
        width: int,
        height: int,
        colour: str = "mono-green",
        bits: int = 8,
        preview_fps: float = 10.0,
        preview_scale: int = 2,
        max_png: int = 2000,
        queue_frames: int = 8,
    ) -> None:
        self.dir = Path(out_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise DeviceError(
                f"virtual display: cannot write to {self.dir} ({exc.strerror}); pick a writable folder"
            ) from exc
        self.width, self.height = width, height
        self.colour = colour
        self.levels = 2**bits if 0 < bits < 8 else 256
        self.preview_fps = preview_fps
        self.preview_scale = max(1, preview_scale)
        self.max_png = max_png
        self.shown = 0
        self.changed = 0
        #: changed frames the recorder could not keep up with (not written, not in the preview)
        self.dropped = 0
        self.last: U8 = np.zeros((height, width), dtype=np.uint8)
        self.index: list[dict[str, object]] = []
        self._preview: collections.deque[tuple[float, U8]] = collections.deque(maxlen=600)
        self._t_first: float | None = None
        # Recording is the host's cost, not the panel's: quantizing, tinting, PNG encoding and
        # writing happen on a writer thread, so `show` (on the real-time loop) only copies the
        # frame into a bounded queue; a frame that finds the queue full is dropped and counted
        self._queue: queue.Queue[tuple[int, float, Rect, U8] | None] = queue.Queue(queue_frames)
        self._writer = threading.Thread(
            target=self._write_loop, name="ocula-display-writer", daemon=True
        )
        self._writer.start()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            n, t, dirty, frame = item
            frame = self._quantize(frame)
            self.last = frame
            if n <= self.max_png:
                name = f"frame_{n:05d}.png"
                (self.dir / name).write_bytes(encode_png(tint(frame, self.colour), level=1))
                self.index.append({"file": name, "t": round(t, 4), "dirty": list(dirty)})
            s = self.preview_scale
            small = frame[::s, ::s].copy()
            if not self._preview or t - self._preview[-1][0] >= 1.0 / self.preview_fps:
                self._preview.append((t, small))
            else:
                self._preview[-1] = (self._preview[-1][0], small)

    def _quantize(self, frame: U8) -> U8:
        if self.levels >= 256:
            return frame
        step = 255 // (self.levels - 1)
        return ((frame.astype(np.int32) + step // 2) // step * step).clip(0, 255).astype(np.uint8)

    def show(self, frame: U8, dirty: Rect | None, t: float) -> None:
        self.shown += 1
        if self._t_first is None:
            self._t_first = t
            dirty = dirty or (0, 0, self.width, self.height)
        if dirty is None:
            return
        self.changed += 1
        try:
            self._queue.put_nowait((self.changed, t - self._t_first, dirty, frame.copy()))
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        (self.dir / "frames.json").write_text(
            json.dumps(
                {"frames": self.index, "shown": self.shown, "dropped": self.dropped}, indent=1
            )
        )
        if self._preview:
            frames = list(self._preview)
            times = [t for t, _ in frames]
            delays = [b - a for a, b in itertools.pairwise(times)] + [1.0]
            tmp = self.dir / "preview.png.tmp"
            tinted = [tint(f, self.colour) for _, f in frames]
            # a viewer without APNG support shows the last frame: the final state of the screen
            tmp.write_bytes(encode_apng(tinted, delays, still=tinted[-1]))
            os.replace(tmp, self.dir / "preview.png")


def open_display(
    spec: str, width: int, height: int, colour: str = "mono-green", bits: int = 8
) -> Display:
    kind, _, rest = spec.partition(":")
    if kind == "fb":
        from runtime.io.fbdev import FramebufferDisplay

        return FramebufferDisplay(rest or "/dev/fb0", colour=colour)
    return VirtualDisplay(spec, width, height, colour, bits)

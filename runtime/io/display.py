"""Displays: a small interface and its backends.

`Display.show(frame, dirty, t)` presents an (h, w) uint8 luminance frame; `dirty` is the
rectangle (x0, y0, x1, y1) that changed since the last call (None: nothing changed; the
backend may skip work). The colour of a monochrome panel (green on the glasses) is the
backend's business, not the renderer's. Backends:
- `VirtualDisplay`: writes each changed frame as a PNG (`frame_00012.png`, tinted in the
  panel's colour; encoded on a writer thread, off the real-time loop), an index `frames.json` (file, time), and on `close()` an animated PNG
  `preview.png` sampled at `preview_fps` and downscaled (a browser plays it);
- `FramebufferDisplay` (`runtime.io.fbdev`): /dev/fbN with dirty-rectangle writes.
`open_display(spec)`: "fb:/dev/fb0" or a folder path for the virtual display.
"""

from __future__ import annotations

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
from runtime.io.png import encode_apng, encode_png

__all__ = ["Display", "Rect", "VirtualDisplay", "open_display", "tint"]

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
Rect = tuple[int, int, int, int]
COLOURS = {"mono-green": (0.0, 1.0, 0.35), "mono": (1.0, 1.0, 1.0), "rgb": (1.0, 1.0, 1.0)}


class Display(Protocol):
    width: int
    height: int

    def show(self, frame: U8, dirty: Rect | None, t: float) -> None: ...

    def close(self) -> None: ...


def tint(frame: U8, colour: str) -> U8:
    """RGB of a luminance frame in the panel's colour."""
    r, g, b = COLOURS.get(colour, (1.0, 1.0, 1.0))
    out = np.empty((*frame.shape, 3), dtype=np.uint8)
    for i, k in enumerate((r, g, b)):
        out[..., i] = (frame.astype(np.float32) * k).astype(np.uint8)
    return out


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
        self.last: U8 = np.zeros((height, width), dtype=np.uint8)
        self.index: list[dict[str, object]] = []
        self._preview: list[tuple[float, U8]] = []
        self._t_first: float | None = None
        # PNG encoding is the host's recording cost, not the panel's: a writer thread does it,
        # so the real-time loop only copies the frame (as it would blit to a panel)
        self._queue: queue.Queue[tuple[str, U8] | None] = queue.Queue()
        self._writer = threading.Thread(
            target=self._write_loop, name="ocula-display-writer", daemon=True
        )
        self._writer.start()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, frame = item
            (self.dir / name).write_bytes(encode_png(tint(frame, self.colour), level=1))

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
        frame = self._quantize(frame)
        self.last = frame.copy()
        self.changed += 1
        if self.changed <= self.max_png:
            name = f"frame_{self.changed:05d}.png"
            (self.dir / name).write_bytes(encode_png(tint(frame, self.colour), level=1))
            self.index.append(
                {"file": name, "t": round(t - self._t_first, 4), "dirty": list(dirty)}
            )
        if not self._preview or t - self._preview[-1][0] >= 1.0 / self.preview_fps:
            s = self.preview_scale
            self._preview.append((t, frame[::s, ::s].copy()))
        else:
            self._preview[-1] = (
                self._preview[-1][0],
                frame[:: self.preview_scale, :: self.preview_scale].copy(),
            )

    def close(self) -> None:
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        (self.dir / "frames.json").write_text(
            json.dumps({"frames": self.index, "shown": self.shown}, indent=1)
        )
        if self._preview:
            frames = self._preview[-600:]
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

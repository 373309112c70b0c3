"""The Linux framebuffer (/dev/fbN) with dirty-rectangle writes.

Geometry comes from sysfs (`/sys/class/graphics/fbN/virtual_size`, `bits_per_pixel`,
`stride`); the device is mapped once and only the dirty rectangle's rows are written, converted
from luminance to the panel's pixel format: 8 bpp grey, 16 bpp RGB565, 24/32 bpp BGR(X). A
frame larger than the panel is clipped; a smaller one is drawn at the top left.
A framebuffer that cannot be opened is a `DeviceError` that says why and what to do.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from runtime.io.errors import DeviceError, DeviceLost
from runtime.io.panel import Rect, gains

__all__ = ["FramebufferDisplay"]


class FramebufferDisplay:
    def __init__(
        self, device: str = "/dev/fb0", colour: str = "mono-green", sysfs: str | Path | None = None
    ) -> None:
        self.device = device
        info = Path(sysfs) if sysfs else Path("/sys/class/graphics") / Path(device).name
        try:
            w, h = (int(v) for v in (info / "virtual_size").read_text().strip().split(","))
            self.bpp = int((info / "bits_per_pixel").read_text())
            self.stride = int((info / "stride").read_text())
        except (OSError, ValueError) as exc:
            raise DeviceError(
                f"display {device}: cannot read its geometry from {info} ({exc}); is it a framebuffer?"
            ) from exc
        if self.bpp not in (8, 16, 24, 32):
            raise DeviceError(
                f"display {device}: {self.bpp} bits per pixel is not supported (8, 16, 24, 32)"
            )
        self.width, self.height = w, h
        self.colour = gains(colour)
        try:
            self._fd = os.open(device, os.O_RDWR)
            self._map = mmap.mmap(self._fd, self.stride * h)
        except OSError as exc:
            raise DeviceError(
                f"display {device}: cannot open ({exc.strerror}); add the user to group 'video', "
                "or use a folder for the virtual display (--display DIR)"
            ) from exc
        self.writes = 0

    def _pixels(self, lum: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        r, g, b = (lum.astype(np.float32) * k for k in self.colour)
        if self.bpp == 8:
            return lum.astype(np.uint8)
        if self.bpp == 16:
            v = (
                ((r.astype(np.uint16) >> 3) << 11)
                | ((g.astype(np.uint16) >> 2) << 5)
                | (b.astype(np.uint16) >> 3)
            )
            return v.astype("<u2").view(np.uint8).reshape(lum.shape[0], -1)
        planes = [b, g, r] + ([np.zeros_like(r)] if self.bpp == 32 else [])
        return np.stack(planes, axis=-1).astype(np.uint8).reshape(lum.shape[0], -1)

    def show(self, frame: npt.NDArray[np.uint8], dirty: Rect | None, t: float) -> None:
        if dirty is None:
            return
        x0, y0, x1, y1 = dirty
        x1, y1 = min(x1, self.width, frame.shape[1]), min(y1, self.height, frame.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        px = self._pixels(frame[y0:y1, x0:x1])
        bytes_pp = self.bpp // 8
        try:
            for row in range(y1 - y0):
                off = (y0 + row) * self.stride + x0 * bytes_pp
                self._map[off : off + px.shape[1]] = px[row].tobytes()
        except (OSError, ValueError) as exc:
            raise DeviceLost(f"display {self.device} went away ({exc})") from exc
        self.writes += 1

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

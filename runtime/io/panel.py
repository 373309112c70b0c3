"""What every display backend shares about the panel: the dirty rectangle and the colour.

A frame is an (h, w) uint8 luminance array; `Rect` is the (x0, y0, x1, y1) rectangle that
changed. A monochrome panel shows luminance in its colour (green on the glasses): `gains`
gives a colour's (r, g, b) factors, `tint` an RGB copy of a frame in it. The backends
(`display.VirtualDisplay`, `fbdev.FramebufferDisplay`) import this module, never each other.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["COLOURS", "Rect", "gains", "tint"]

U8 = npt.NDArray[np.uint8]
Rect = tuple[int, int, int, int]
COLOURS = {"mono-green": (0.0, 1.0, 0.35), "mono": (1.0, 1.0, 1.0), "rgb": (1.0, 1.0, 1.0)}


def gains(colour: str) -> tuple[float, float, float]:
    """The (r, g, b) factors of a panel colour; white for a colour not known."""
    return COLOURS.get(colour, (1.0, 1.0, 1.0))


def tint(frame: U8, colour: str) -> U8:
    """RGB of a luminance frame in the panel's colour."""
    out = np.empty((*frame.shape, 3), dtype=np.uint8)
    for i, k in enumerate(gains(colour)):
        out[..., i] = (frame.astype(np.float32) * k).astype(np.uint8)
    return out

"""Cameras: a small interface and its backends.

`Camera.capture(now)` returns one RGB frame (h, w, 3) uint8, or None when there is no new one;
it raises `DeviceLost` when the camera went away (the app stops its camera task and says so;
the other apps keep running). Backends:
- `FileCamera`: an image file, or a folder of PNG/PPM images taken in name order (looping);
  a file that is not an image is skipped with a warning and counted in `bad_frames`, a folder
  that disappears mid-run is a lost camera; a file or folder with no readable image at all is
  a `DeviceError` when the camera is opened;
- `PatternCamera`: a synthetic pattern (moving bars and the frame number), deterministic;
- `V4l2Camera` (`runtime.io.v4l2`): a Linux video device, through linuxpy.
`open_camera(spec)`: "pattern", "v4l2:/dev/videoN", or a file/folder path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from runtime.io.errors import DeviceError, DeviceLost, ImageError
from runtime.io.image import read_image

__all__ = ["Camera", "FileCamera", "PatternCamera", "open_camera"]

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
IMAGE_SUFFIXES = (".png", ".ppm", ".pgm", ".pnm")


class Camera(Protocol):
    def capture(self, now: float) -> U8 | None:
        """One RGB frame (h, w, 3) uint8, or None; raises DeviceLost if the camera is gone."""
        ...

    def close(self) -> None: ...


class FileCamera:
    def __init__(self, path: str | Path, loop: bool = True) -> None:
        self.path = Path(path)
        self.loop = loop
        self.bad_frames = 0
        self.frames = 0
        if self.path.is_dir():
            self._files = sorted(
                p for p in self.path.iterdir() if p.is_file() and not p.name.startswith(".")
            )
            if not self._files:
                raise DeviceError(
                    f"camera folder {self.path} has no files; put PNG or PPM images in it"
                )
        elif self.path.is_file():
            self._files = [self.path]
        else:
            raise DeviceError(f"camera {self.path}: no such file or folder")
        self._i = 0
        self._cache: dict[Path, tuple[object, U8]] = {}
        self._probe()

    def _probe(self) -> None:
        """A camera none of whose files is an image is refused when it is opened, not
        mid-run; the first image that decodes is cached for the first capture."""
        first: ImageError | None = None
        for f in self._files:
            try:
                self._decode(f)
                return
            except ImageError as exc:
                first = first or exc
        if not self.path.is_dir():
            raise DeviceError(f"camera: {first}") from first
        raise DeviceError(
            f"camera folder {self.path}: none of its {len(self._files)} file(s) is a readable "
            f"image (the first: {first})"
        ) from first

    def capture(self, now: float) -> U8 | None:
        for _ in range(len(self._files)):
            if self._i >= len(self._files):
                if not self.loop:
                    return None
                self._i = 0
            f = self._files[self._i]
            self._i += 1
            if not self.path.exists():
                raise DeviceLost(f"camera {self.path} disappeared")
            try:
                frame = self._decode(f)
            except ImageError as exc:
                if not f.exists():
                    raise DeviceLost(f"camera {self.path}: {f.name} disappeared") from exc
                self.bad_frames += 1
                log.warning("camera: %s; frame skipped", exc)
                continue
            self.frames += 1
            return frame
        raise DeviceError(
            f"camera {self.path}: none of its {len(self._files)} file(s) is a readable image"
        )

    def _decode(self, f: Path) -> U8:
        """Decoded once per file version (a looping folder re-reads the same images)."""
        st = f.stat() if f.exists() else None
        key = (st.st_mtime_ns, st.st_size) if st else None
        hit = self._cache.get(f)
        if hit is not None and hit[0] == key:
            return hit[1]
        frame = read_image(f)
        frame.setflags(write=False)  # shared by every capture of this file
        if len(self._cache) < 32:
            self._cache[f] = (key, frame)
        return frame

    def close(self) -> None:
        pass


class PatternCamera:
    """Moving bars and a counter: a camera that works anywhere, for tests and demos."""

    def __init__(self, width: int = 640, height: int = 480) -> None:
        self.width, self.height = width, height
        self.frames = 0

    def capture(self, now: float) -> U8 | None:
        self.frames += 1
        x = (np.arange(self.width) + self.frames * 8) % 64 < 32
        img = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        img[:, x, 1] = 200
        img[: self.height // 8, : min(self.width, self.frames % self.width + 1), 0] = 255
        return img

    def close(self) -> None:
        pass


def open_camera(spec: str, width: int = 640, height: int = 480) -> Camera:
    kind, _, rest = spec.partition(":")
    if spec == "pattern":
        return PatternCamera(width, height)
    if kind == "v4l2":
        from runtime.io.v4l2 import V4l2Camera

        return V4l2Camera(rest or "/dev/video0", width, height)
    return FileCamera(spec)

"""V4L2 cameras on Linux boards, through linuxpy (imported here only: a device dependency).

Opens the device, asks for YUYV (or GREY) at the requested size (the driver may choose another
size: the frame says what it is), and converts the luma plane to the grey RGB frame vision
reads (OCR reads luminance; colour is not needed). A device that vanishes mid-stream (ENODEV,
EIO) is `DeviceLost`; one that cannot be opened is a `DeviceError` that names it and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.io.errors import DeviceError, DeviceLost

__all__ = ["V4l2Camera"]

log = logging.getLogger(__name__)


class V4l2Camera:
    def __init__(self, device: str, width: int, height: int) -> None:
        self.device = device
        if not Path(device).exists():
            raise DeviceError(
                f"camera {device}: no such device; list cameras with 'v4l2-ctl --list-devices'"
            )
        try:
            from linuxpy.video.device import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
                Device,
                VideoCapture,
            )
        except ImportError as exc:
            raise DeviceError(
                "V4L2 capture needs linuxpy on the board: pip install linuxpy "
                "(or use image files: --camera DIR)"
            ) from exc
        try:
            self._dev: Any = Device(device)
            self._dev.open()
            self._cap: Any = VideoCapture(self._dev)
            self._cap.set_format(width, height, "YUYV")
            self._cap.open()  # map the buffers and start streaming (vivid found it missing)
            self._stream: Any = iter(self._cap)
        except OSError as exc:
            raise DeviceError(
                f"camera {device}: cannot open ({exc.strerror or exc}); check permissions (group 'video')"
            ) from exc

    def capture(self, now: float) -> npt.NDArray[np.uint8] | None:
        try:
            frame = next(self._stream)
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.EIO, errno.ENXIO):
                raise DeviceLost(f"camera {self.device} went away ({exc.strerror})") from exc
            raise
        w, h = frame.width, frame.height
        data = np.frombuffer(frame.data, dtype=np.uint8)
        fmt = frame.pixel_format.name
        if fmt == "YUYV":
            luma = data[: w * h * 2 : 2].reshape(h, w)
        elif fmt == "GREY":
            luma = data[: w * h].reshape(h, w)
        else:
            raise DeviceError(
                f"camera {self.device}: pixel format {fmt} is not supported; use YUYV or GREY"
            )
        return np.repeat(luma[:, :, None], 3, axis=2)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._cap.close()
        with contextlib.suppress(OSError):
            self._dev.close()

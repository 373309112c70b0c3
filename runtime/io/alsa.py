"""ALSA capture on Linux boards, through pyalsaaudio (imported here only: a device dependency).

The PCM is opened non-blocking at the profile's rate and channel count, 16-bit little endian,
with a period of 10 ms; `read` drains every period the kernel has ready. An overrun reported by
ALSA (negative length) is counted in `overruns`: the kernel buffer filled because the real-time
loop did not run in time, which the loop's own late-tick counter explains.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.io.errors import DeviceError, DeviceLost

__all__ = ["AlsaSource"]

log = logging.getLogger(__name__)


class AlsaSource:
    def __init__(self, device: str, rate: int, channels: int, period_ms: int = 10) -> None:
        try:
            import alsaaudio  # type: ignore[import-not-found,import-untyped,unused-ignore]
        except ImportError as exc:
            raise DeviceError(
                "ALSA capture needs pyalsaaudio on the board: pip install pyalsaaudio "
                "(or use a WAV file: --audio FILE.wav)"
            ) from exc
        self.rate = rate
        self.channels = channels
        self.device = device
        self.overruns = 0
        self._frames = rate * period_ms // 1000
        try:
            self._pcm: Any = alsaaudio.PCM(
                alsaaudio.PCM_CAPTURE,
                alsaaudio.PCM_NONBLOCK,
                device=device,
                rate=rate,
                channels=channels,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=self._frames,
            )
        except alsaaudio.ALSAAudioError as exc:
            raise DeviceError(
                f"ALSA device {device!r}: cannot open for capture at {rate} Hz, {channels} ch ({exc}); "
                "list devices with 'arecord -L'"
            ) from exc

    def read(self, now: float) -> npt.NDArray[np.int16]:
        chunks = []
        while True:
            try:
                n, data = self._pcm.read()
            except Exception as exc:
                raise DeviceLost(f"ALSA device {self.device!r} went away ({exc})") from exc
            if n < 0:
                self.overruns += 1
                continue
            if n == 0:
                break
            chunks.append(np.frombuffer(data, dtype="<i2").reshape(-1, self.channels))
        if not chunks:
            return np.zeros((0, self.channels), dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16)

    def close(self) -> None:
        self._pcm.close()

"""ALSA capture on Linux boards, through pyalsaaudio (imported here only: a device dependency).

`LoopbackMicrophone` hears an injected clip through the real capture path: a thread plays the
clip into a loopback's playback side (snd-aloop's `hw:Loopback,0,0` on an emulated board, a
cable on a rig), paced by ALSA itself, while an `AlsaSource` captures the other side.

The PCM is opened non-blocking at the profile's rate and channel count, 16-bit little endian,
with a period of 10 ms; `read` drains every period the kernel has ready. An overrun reported by
ALSA (negative length) is counted in `overruns`: the kernel buffer filled because the real-time
loop did not run in time, which the loop's own late-tick counter explains.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.io.errors import DeviceError, DeviceLost

__all__ = ["AlsaSource", "LoopbackMicrophone"]

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


def _alsa() -> Any:
    try:
        import alsaaudio  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise DeviceError(
            "ALSA playback needs pyalsaaudio on the board: pip install pyalsaaudio"
        ) from exc
    return alsaaudio


class LoopbackMicrophone:
    """A clip played into `playback` in real time and captured from `capture` (an `AlsaSource`):
    what the app hears went through the kernel's ALSA capture path, as a microphone's would."""

    def __init__(
        self,
        clip: npt.NDArray[np.int16],
        playback: str,
        capture: str,
        rate: int,
        period_ms: int = 10,
    ) -> None:
        alsaaudio = _alsa()
        self.rate = rate
        self.channels = 1
        self.underruns = 0
        self._clip = np.ascontiguousarray(clip.reshape(-1), dtype="<i2")
        self._frames = rate * period_ms // 1000
        try:
            self._out: Any = alsaaudio.PCM(
                alsaaudio.PCM_PLAYBACK,
                device=playback,
                rate=rate,
                channels=1,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=self._frames,
            )
        except alsaaudio.ALSAAudioError as exc:
            raise DeviceError(
                f"ALSA device {playback!r}: cannot open for playback at {rate} Hz ({exc}); "
                "is the loopback loaded (modprobe snd-aloop)? list devices with 'aplay -L'"
            ) from exc
        try:
            self._in = AlsaSource(capture, rate, 1, period_ms)
        except BaseException:
            self._out.close()
            raise
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._play, name="loopback-play", daemon=True)
        self._thread.start()

    def _play(self) -> None:
        step = self._frames
        try:
            for start in range(0, len(self._clip), step):
                if self._stop.is_set():
                    return
                chunk = self._clip[start : start + step]
                if len(chunk) < step:
                    chunk = np.concatenate([chunk, np.zeros(step - len(chunk), "<i2")])
                if self._out.write(chunk.tobytes()) < 0:
                    self.underruns += 1
        except Exception as exc:  # the device went away: the capture side reports it
            log.error("loopback playback stopped: %s", exc)
        finally:
            self._done.set()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def read(self, now: float) -> npt.NDArray[np.int16]:
        return self._in.read(now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._in.close()
        self._out.close()

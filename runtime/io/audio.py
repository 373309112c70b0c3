"""Audio in: a small interface and its backends.

`AudioSource.read(now)` returns the frames captured since the last call as int16 (n, channels)
without blocking: the real-time loop calls it every tick and writes the result into the ring.
Backends:
- `WavSource`: a WAV file paced in real time by the injected clock (at time t it has "captured"
  t * rate frames), so a file behaves like a microphone, in real or virtual time. The file is
  decoded once: another rate is resampled, several channels are mixed down, and each
  conversion is said in `notes` (and logged); a truncated or non-PCM file is refused clearly.
- `AlsaSource` (`runtime.io.alsa`): a microphone on a Linux board.
- `SilenceSource`: low noise at the clock's pace, for boards without a microphone;
- `open_audio(spec)`: "wav:PATH" or a path ending in .wav, "alsa:DEVICE", "silence".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from runtime.engine.audio import MAX_WAV_BYTES, parse_wav, read_wav
from runtime.engine.errors import InputError
from runtime.io.errors import DeviceError
from runtime.sched.clock import Clock

__all__ = ["AudioSource", "SilenceSource", "WavSource", "open_audio"]

log = logging.getLogger(__name__)

I16 = npt.NDArray[np.int16]


class AudioSource(Protocol):
    rate: int
    channels: int

    def read(self, now: float) -> I16:
        """Frames captured since the last call, (n, channels) int16; never blocks."""
        ...

    def close(self) -> None: ...


class WavSource:
    def __init__(self, path: str | Path, rate: int, clock: Clock, loop: bool = False) -> None:
        self.path = Path(path)
        self.rate = rate
        self.channels = 1
        self.clock = clock
        self.loop = loop
        self.notes: list[str] = _inspect(self.path, rate)
        try:
            samples = read_wav(self.path, rate)
        except InputError as exc:
            raise DeviceError(f"audio source {exc}") from exc
        # x * 32768 gives back the exact integers of a 16-bit file (read_wav divides by 32768)
        self._pcm: I16 = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
        self._t0 = clock.now()
        self._pos = 0

    @property
    def duration_s(self) -> float:
        return len(self._pcm) / self.rate

    @property
    def samples(self) -> I16:
        """The whole clip, mono int16 at `rate`."""
        return self._pcm

    @property
    def finished(self) -> bool:
        return not self.loop and self._pos >= len(self._pcm)

    def read(self, now: float) -> I16:
        target = int((now - self._t0) * self.rate)
        if not self.loop:
            target = min(target, len(self._pcm))
        n = max(0, target - self._pos)
        if self.loop:
            idx = (self._pos + np.arange(n)) % len(self._pcm)
            out = self._pcm[idx]
        else:
            out = self._pcm[self._pos : self._pos + n]
        self._pos += n
        return out.reshape(-1, 1)

    def close(self) -> None:
        pass


class SilenceSource:
    """A microphone in a quiet room: low noise at the clock's pace (boards without a mic)."""

    def __init__(self, rate: int, clock: Clock, level: float = 30.0, seed: int = 0) -> None:
        self.rate, self.channels, self.clock = rate, 1, clock
        self._t0 = clock.now()
        self._pos = 0
        self._rng = np.random.default_rng(seed)
        self.level = level

    def read(self, now: float) -> I16:
        n = max(0, int((now - self._t0) * self.rate) - self._pos)
        self._pos += n
        return (self._rng.normal(0.0, self.level, (n, 1))).astype(np.int16)

    def close(self) -> None:
        pass


def _inspect(path: Path, rate: int) -> list[str]:
    """Plain words for what `read_wav` will do to this file, read from its header."""
    try:
        if path.stat().st_size > MAX_WAV_BYTES:
            return []  # read_wav names the limit
        head = parse_wav(path.read_bytes(), str(path), rate)
    except (OSError, InputError):
        return []  # read_wav gives the error
    notes = []
    if head.frames < head.promised_frames:
        notes.append(
            f"{path.name}: truncated: the header promises {head.promised_frames / head.rate:.2f} s, "
            f"the file holds {head.frames / head.rate:.2f} s; playing what is there"
        )
    if head.channels > 1:
        notes.append(f"{path.name}: {head.channels} channels mixed down to mono")
    if head.rate != rate:
        notes.append(f"{path.name}: resampled from {head.rate} Hz to {rate} Hz")
    for n in notes:
        log.log(logging.WARNING if "truncated" in n else logging.INFO, "%s", n)
    return notes


def open_audio(spec: str, rate: int, clock: Clock, channels: int = 1) -> AudioSource:
    """An audio source from a spec: a .wav path, "wav:PATH" or "alsa:DEVICE"."""
    kind, _, rest = spec.partition(":")
    if spec == "silence":
        return SilenceSource(rate, clock)
    if kind == "alsa":
        from runtime.io.alsa import AlsaSource

        return AlsaSource(rest or "default", rate, channels)
    path = rest if kind == "wav" else spec
    return WavSource(path, rate, clock)

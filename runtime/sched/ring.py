"""The audio ring: single producer (capture), single consumer (VAD/ASR), no lock.

How it works: one preallocated int16 buffer of `capacity` frames and two counters that only grow:
`written` (stored by the producer only) and `read` (stored by the consumer only). The producer
computes free space from both, copies into the buffer, then publishes `written`; the consumer
copies out what lies between `read` and `written`, then publishes `read`. Each counter has one
writer and a Python int store is atomic, so neither side takes a lock and capture never waits
for inference.

Rules it keeps:
- capacity comes from the board profile and the worst stall the consumer may suffer
  (`ring_seconds`): a whole utterance plus margin, so overflow cannot happen unless the system
  is overloaded for longer than that;
- if it does happen, the samples that do not fit are counted in `overflowed` (and the caller
  reports them as `audio.dropped_samples`): never silent, and the samples already in the ring
  (older speech, which the consumer is about to read) are kept;
- `read()` hands out a copy, so the producer may overwrite the slot right after.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from runtime.profile import Profile
from runtime.sched.errors import SchedUsageError

__all__ = ["AudioRing", "ring_seconds"]

I16 = npt.NDArray[np.int16]

#: the longest utterance the ASR takes in one window (Whisper: 30 s) plus a margin
UTTERANCE_S = 30.0
MARGIN_S = 2.0


def ring_seconds(profile: Profile, worst_stall_s: float = UTTERANCE_S) -> float:
    """Seconds of audio the ring must hold: the worst consumer stall plus a margin.

    The consumer (VAD, then ASR on a whole utterance) can fall behind by at most one utterance
    window while the ASR decodes; `worst_stall_s` defaults to that window.
    """
    del profile  # the rate and channel count enter in `AudioRing.for_profile`
    return worst_stall_s + MARGIN_S


class AudioRing:
    def __init__(self, capacity: int, channels: int = 1) -> None:
        if capacity <= 0 or channels <= 0:
            raise SchedUsageError(f"audio ring needs capacity > 0 and channels > 0, got {capacity}")
        self.capacity = capacity
        self.channels = channels
        self._buf: I16 = np.zeros((capacity, channels), dtype=np.int16)
        self.written = 0
        self.read_pos = 0
        self.overflowed = 0

    @classmethod
    def for_profile(cls, profile: Profile, worst_stall_s: float = UTTERANCE_S) -> AudioRing:
        frames = int(profile.audio.rate * ring_seconds(profile, worst_stall_s))
        return cls(frames, profile.audio.channels)

    @property
    def available(self) -> int:
        return self.written - self.read_pos

    @property
    def nbytes(self) -> int:
        return int(self._buf.nbytes)

    def write(self, frames: npt.NDArray[np.generic]) -> int:
        """Producer side: store `frames` ((n,) or (n, channels)); returns how many fit."""
        data = _as_frames(frames, self.channels)
        n = len(data)
        free = self.capacity - (self.written - self.read_pos)
        if n > free:
            self.overflowed += n - free
            data = data[:free]
            n = free
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = data[:first]
        if n > first:
            self._buf[: n - first] = data[first:]
        self.written += n  # publish after the copy
        return n

    def read(self, max_frames: int | None = None) -> I16:
        """Consumer side: a copy of up to `max_frames` unread frames, shape (n, channels)."""
        n = self.written - self.read_pos
        if max_frames is not None:
            n = min(n, max_frames)
        start = self.read_pos % self.capacity
        first = min(n, self.capacity - start)
        out = np.empty((n, self.channels), dtype=np.int16)
        out[:first] = self._buf[start : start + first]
        if n > first:
            out[first:] = self._buf[: n - first]
        self.read_pos += n  # publish after the copy
        return out


def _as_frames(frames: npt.NDArray[np.generic], channels: int) -> I16:
    a = np.asarray(frames)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.shape[1] != channels:
        raise SchedUsageError(f"audio ring holds {channels} channel(s), got {a.shape[1]}")
    if a.dtype.kind == "f":
        return np.clip(np.round(a * 32767.0), -32768, 32767).astype(np.int16)
    return a.astype(np.int16, copy=False)

"""Voice activity detection with the Silero VAD ONNX model, in steps.

How it works: audio arrives in chunks of any size; `Vad.push` cuts it into 512-sample frames
(32 ms at 16 kHz). The model sees each frame preceded by the last 64 samples of the frame
before it (its receptive context; zeros at the start) and carries a recurrent state of shape
(2, 1, 128) from frame to frame. Each frame yields one speech probability.

Segmentation follows Silero's own rules, streamed:
- speech starts at the first frame with p >= threshold;
- a frame with p < threshold - 0.15 (the hysteresis) starts a candidate end; the end is
  confirmed once min_silence_ms of such frames have passed (p >= threshold cancels it);
- segments shorter than min_speech_ms are dropped; max_speech_s forces an end;
- each segment is widened by speech_pad_ms on both sides (less where segments would overlap).
Events come out as soon as they are certain: `SpeechStart` when speech begins (its sample
position already padded), `SpeechEnd` when the end is confirmed. Positions are in samples
from the first sample pushed since `reset()`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from runtime.engine.artifact import open_artifact
from runtime.engine.audio import check_audio
from runtime.engine.errors import EngineUsageError
from runtime.engine.session import open_session
from runtime.profile import Profile

__all__ = ["Segment", "SpeechEnd", "SpeechStart", "Vad", "VadParams", "speech_segments"]

RATE = 16000
FRAME = 512
CONTEXT = 64


@dataclass(frozen=True)
class VadParams:
    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30
    max_speech_s: float = float("inf")

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise EngineUsageError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise EngineUsageError(f"VAD {name} must be >= 0, got {getattr(self, name)}")
        if self.max_speech_s <= 0:
            raise EngineUsageError(f"VAD max_speech_s must be > 0, got {self.max_speech_s}")

    @property
    def neg_threshold(self) -> float:
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True)
class SpeechStart:
    sample: int


@dataclass(frozen=True)
class SpeechEnd:
    start: int
    end: int


@dataclass(frozen=True)
class Segment:
    start: int
    end: int

    def seconds(self, rate: int = RATE) -> tuple[float, float]:
        return self.start / rate, self.end / rate


Event = SpeechStart | SpeechEnd


class Vad:
    """Silero VAD over a stream. Not thread-safe; one stream per instance."""

    def __init__(
        self,
        model: str | Path,
        params: VadParams | None = None,
        profile: Profile | None = None,
        *,
        identity: str | None = None,
        session: ort.InferenceSession | None = None,
    ) -> None:
        self.params = params or VadParams()
        # One thread: a 32 ms frame is ~0.1 ms of work; a thread pool only adds wake-ups.
        self._session = session or open_session(
            model, profile, threads=1, identity=identity, pin=False
        )
        self._sr = np.array(RATE, dtype=np.int64)
        self._input = np.zeros((1, CONTEXT + FRAME), dtype=np.float32)
        self._pending = np.zeros(FRAME, dtype=np.float32)
        self.run_seconds = 0.0
        self.frames = 0
        self.reset()

    @classmethod
    def from_artifact(
        cls,
        path: str | Path,
        params: VadParams | None = None,
        profile: Profile | None = None,
        *,
        verify: bool = True,
    ) -> Vad:
        """A VAD from a `kind: vad` artifact folder (made by `ocula export vad`)."""
        art = open_artifact(path, "vad", verify=verify)
        model, sha = art.graph_file("vad")
        return cls(model, params, profile, identity=sha)

    def reset(self) -> None:
        """Forget the stream: state, context, pending samples and segment state."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._input[:] = 0.0
        self._n_pending = 0
        self._pos = 0  # samples consumed into frames
        self._triggered = False
        self._start = 0
        self._temp_end = 0
        self._last_end = 0  # padded end of the previous segment (no overlap)
        self.probabilities: list[float] = []

    def probability(self, frame: npt.NDArray[np.float32]) -> float:
        """Run one 512-sample frame (after the previous frame's last 64 samples)."""
        self._input[0, CONTEXT:] = frame
        t0 = time.perf_counter()
        prob, self._state = self._session.run(
            None, {"input": self._input, "state": self._state, "sr": self._sr}
        )
        self.run_seconds += time.perf_counter() - t0
        self.frames += 1
        self._input[0, :CONTEXT] = self._input[0, -CONTEXT:]
        return float(prob.reshape(-1)[0])

    def push(self, audio: object, rate: int = RATE) -> list[Event]:
        """Feed samples; returns the events that became certain."""
        samples = check_audio(audio, rate, RATE, where="VAD input")
        events: list[Event] = []
        i = 0
        while i < samples.size:
            take = min(FRAME - self._n_pending, samples.size - i)
            self._pending[self._n_pending : self._n_pending + take] = samples[i : i + take]
            self._n_pending += take
            i += take
            if self._n_pending == FRAME:
                self._n_pending = 0
                events.extend(self._frame(self.probability(self._pending)))
        return events

    def flush(self) -> list[Event]:
        """End of stream: close an open segment at the last sample pushed."""
        end = self._pos + self._n_pending
        if self._triggered:
            self._triggered = False
            if end - self._start >= self._ms(self.params.min_speech_ms):
                return [self._end_event(self._start, end, end)]
        return []

    @property
    def in_speech(self) -> bool:
        return self._triggered

    def _ms(self, ms: float) -> int:
        return int(RATE * ms / 1000)

    def _frame(self, prob: float) -> Iterator[Event]:
        p = self.params
        cur = self._pos
        self._pos += FRAME
        self.probabilities.append(prob)
        if prob >= p.threshold and self._temp_end:
            self._temp_end = 0
        if prob >= p.threshold and not self._triggered:
            self._triggered = True
            self._start = cur
            yield SpeechStart(max(cur - self._ms(p.speech_pad_ms), self._last_end, 0))
            return
        if not self._triggered:
            return
        if cur + FRAME - self._start > p.max_speech_s * RATE:
            self._triggered = False
            self._temp_end = 0
            yield self._end_event(self._start, cur + FRAME, None)
            return
        if prob < p.neg_threshold:
            if not self._temp_end:
                self._temp_end = cur
            if cur + FRAME - self._temp_end < self._ms(p.min_silence_ms):
                return
            end, self._temp_end, self._triggered = self._temp_end, 0, False
            if end - self._start >= self._ms(p.min_speech_ms):
                yield self._end_event(self._start, end, None)

    def _end_event(self, start: int, end: int, limit: int | None) -> SpeechEnd:
        pad = self._ms(self.params.speech_pad_ms)
        s = max(start - pad, self._last_end, 0)
        e = end + pad if limit is None else min(end + pad, limit)
        self._last_end = e
        return SpeechEnd(s, e)


def speech_segments(vad: Vad, audio: object, rate: int = RATE) -> list[Segment]:
    """All speech segments of a whole buffer (resets `vad` first)."""
    vad.reset()
    total = check_audio(audio, rate, RATE, where="VAD input").size
    events = vad.push(audio, rate) + vad.flush()
    return [Segment(e.start, min(e.end, total)) for e in events if isinstance(e, SpeechEnd)]

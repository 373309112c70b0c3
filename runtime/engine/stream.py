"""Streaming speech recognition: audio chunks in, partial and final transcripts out.

    rec = StreamingRecognizer(whisper, vad)
    for chunk in microphone:            # any size; 32 ms is typical
        rec.push(chunk)                 # VAD only: ~0.1 ms per 32 ms of audio
        for t in rec.step():            # at most one model run: an encoder pass or one token
            show(t.kind, t.text)
    rec.finish()                        # end of stream: close an open utterance
    while rec.busy: rec.step()

How it works:
- the VAD gates the audio: nothing is decoded while nobody speaks;
- endpointing is the VAD's: an utterance ends after `min_silence_ms` of trailing silence, or
  when it reaches `max_speech_s` (the maximum utterance length, capped at one Whisper window);
  the utterance's audio, padded as the VAD pads segments, is decoded to a *final* transcript;
- while someone speaks, a *partial* transcript of the utterance so far is decoded every
  `partial_every_s`; a final that becomes due cancels a running partial (finals come first);
- `step()` does one unit of work (`asr.Decoding.step`), so the caller's loop never waits more
  than one encoder pass or one decoder token;
- audio older than the open utterance is dropped; memory stays bounded by one utterance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from runtime.engine.asr import Decoding, Whisper
from runtime.engine.audio import check_audio
from runtime.engine.errors import EngineUsageError
from runtime.engine.vad import SpeechEnd, SpeechStart, Vad

__all__ = ["StreamingRecognizer", "Transcript"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Transcript:
    kind: str  # "partial" | "final"
    text: str
    start_s: float
    end_s: float
    tokens: list[int] = field(default_factory=list)


@dataclass
class _Job:
    kind: str
    start: int
    end: int
    decoding: Decoding


class StreamingRecognizer:
    def __init__(
        self,
        asr: Whisper,
        vad: Vad,
        *,
        task: str = "transcribe",
        language: str | None = None,
        partial_every_s: float | None = 1.0,
    ) -> None:
        if partial_every_s is not None and partial_every_s <= 0:
            raise EngineUsageError(f"partial_every_s must be > 0, got {partial_every_s}")
        asr._check_task(task, language)
        self.asr = asr
        self.vad = vad
        self.task = task
        self.language = language
        self.rate = asr.sample_rate
        self.partial_every = None if partial_every_s is None else int(partial_every_s * self.rate)
        window = asr.info.n_samples / self.rate
        if vad.params.max_speech_s > window:
            from dataclasses import replace

            vad.params = replace(vad.params, max_speech_s=float(window) - 1.0)
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self._buf = np.zeros(0, dtype=np.float32)
        self._base = 0  # absolute sample index of _buf[0]
        self._total = 0
        self._speech_start: int | None = None
        self._last_partial = 0
        self._finals: deque[tuple[int, int]] = deque()
        self._job: _Job | None = None

    @property
    def busy(self) -> bool:
        """Work is waiting: a final to decode or a job in progress."""
        return self._job is not None or bool(self._finals)

    def push(self, audio: object, rate: int | None = None) -> None:
        samples = check_audio(audio, rate or self.rate, self.rate, "stream input")
        self._buf = np.concatenate([self._buf, samples])
        self._total += samples.size
        for event in self.vad.push(samples):
            self._on_event(event)
        self._trim()

    def finish(self) -> None:
        """End of stream: the open utterance, if any, becomes a final."""
        for event in self.vad.flush():
            self._on_event(event)

    def _on_event(self, event: SpeechStart | SpeechEnd) -> None:
        if isinstance(event, SpeechStart):
            self._speech_start = event.sample
            self._last_partial = event.sample
        else:
            self._finals.append((event.start, min(event.end, self._total)))
            self._speech_start = None

    def _trim(self) -> None:
        keep_from = self._total - self.rate  # a second of history for the start padding
        if self._speech_start is not None:
            keep_from = min(keep_from, self._speech_start)
        for s, _ in self._finals:
            keep_from = min(keep_from, s)
        if self._job is not None:
            keep_from = min(keep_from, self._job.start)
        drop = keep_from - self._base
        if drop > 0:
            self._buf = self._buf[drop:]
            self._base += drop

    def _audio(self, start: int, end: int) -> F32:
        return self._buf[max(0, start - self._base) : max(0, end - self._base)]

    def step(self) -> list[Transcript]:
        """One unit of model work; returns the transcripts it completed (0 or 1)."""
        if self._job is not None and self._job.kind == "partial" and self._finals:
            self._job = None  # a final is due: drop the partial
        if self._job is None:
            self._job = self._next_job()
            if self._job is None:
                return []
        job = self._job
        job.decoding.step()
        if not job.decoding.done:
            return []
        self._job = None
        r = job.decoding.result()
        return [Transcript(job.kind, r.text, job.start / self.rate, job.end / self.rate, r.tokens)]

    def _next_job(self) -> _Job | None:
        if self._finals:
            start, end = self._finals.popleft()
            return self._job_for("final", start, end)
        if (
            self.partial_every is not None
            and self._speech_start is not None
            and self._total - self._last_partial >= self.partial_every
        ):
            self._last_partial = self._total
            return self._job_for("partial", self._speech_start, self._total)
        return None

    def _job_for(self, kind: str, start: int, end: int) -> _Job | None:
        audio = self._audio(start, end)
        if audio.size == 0:
            return None
        decoding = self.asr.start(audio, task=self.task, language=self.language)
        return _Job(kind, start, end, decoding)

"""`captions`: microphone -> VAD -> ASR -> display, with partial results that do not flicker.

Tasks (see `runtime.sched`):
- real-time, every 10 ms: the audio source's new frames go into the ring (never blocks; an
  overflow is counted in `audio.dropped_samples`);
- VAD job every 100 ms (priority VAD): drains the ring, runs Silero in 32 ms frames, keeps the
  audio of the utterance in progress (bounded to one ASR window). Utterances end at VAD
  endpoints (`ENDPOINT_MS` of silence, a sentence's pause, not a breath between words); one
  shorter than `MIN_SEGMENT_S` waits `HOLD_S` for more speech to join it (`Segmenter`);
- while someone speaks, every `partial_every_s` (at least twice the last partial's cost) and
  only if no ASR job is in flight or waiting, a partial ASR job over the utterance so far, at a
  priority below the LLM's (a preview must not starve finals or translations); its words go
  through the `Stabilizer`, committed words in the final style and the rest dimmer;
- when the VAD confirms the end, the final ASR job for the segment (never skipped), whose text
  replaces the partial line as a finished paragraph (`on_sentence` hook: translate builds on it);
- every ASR job is guarded against loops (asr_guard) and hears its context (`Window`): the
  window's audio from its start up to the utterance's end, the window's earlier finals forced
  as the transcript's start (only the new words are decoded), earlier windows' text as the
  prompt (`<|startofprev|>`).

Latency `speech_end_to_caption_s`: from the moment the speech ended (the capture tick that
brought in the segment's last sample, padding included) to the final caption on screen.
"""

from __future__ import annotations

import bisect
import collections
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.apps.errors import AppUsageError
from runtime.apps.host import Host
from runtime.apps.stabilize import Stabilizer
from runtime.engine.asr import Whisper
from runtime.engine.asr_stream import (
    ENDPOINT_MS,
    HOLD_S,
    LIVE_GUARD,
    MIN_SEGMENT_S,
    Segmenter,
    Window,
    endpointing,
)
from runtime.engine.vad import SpeechEnd, SpeechStart, Vad, VadParams
from runtime.io.screen import FINAL
from runtime.sched.ring import UTTERANCE_S, AudioRing
from runtime.sched.scheduler import Job, Priority

__all__ = ["Captions"]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
CAPTURE_PERIOD_S = 0.01
PARTIAL_PRIORITY = Priority.LLM - 1
VAD_PERIOD_S = 0.1


class Captions:
    name = "captions"
    needs: tuple[str, ...] = ("vad", "asr")

    def __init__(self) -> None:
        self.host: Host | None = None
        self.utterances = 0
        self.partials = 0
        self.finals: list[str] = []
        self._asr_busy = False
        self._pending_finals = 0
        self._unstarted: list[int] = []  # starts of the utterances whose ASR job has not begun
        self.guard = LIVE_GUARD
        self._buf: list[F32] = []
        self._buf_start = 0  # sample index of self._buf[0][0]
        self._seen = 0  # samples pulled from the ring so far
        self._last_partial = 0.0
        self._partial_cost = 0.0
        self._flushed = False
        self.failed_finals = 0  # final ASR jobs that raised, and the first error
        self.first_error: str | None = None
        # (samples in the ring so far, capture time): when each sample arrived, for latencies
        self._captured: collections.deque[tuple[int, float]] = collections.deque(maxlen=30_000)

    # -- setup ---------------------------------------------------------------------------

    def setup(self, host: Host) -> None:
        self.host = host
        vad_dir = host.models.need("vad", self.name)
        asr_dir = host.models.need("asr", self.name)
        if host.devices.audio is None:
            raise AppUsageError(
                f"app {self.name!r} needs an audio source (--audio FILE.wav or a microphone)"
            )
        self.source = host.devices.audio
        self.rate = self.source.rate
        self.asr = Whisper.from_artifact(asr_dir, host.profile, threads=host.threads("asr"))
        params = endpointing(
            VadParams(max_speech_s=UTTERANCE_S - 2.0), self.asr, ENDPOINT_MS, MIN_SEGMENT_S
        )
        self.vad = Vad.from_artifact(vad_dir, params, host.profile)
        rate = self.asr.sample_rate
        # a margin below the ring's utterance bound: the window's start stays in the buffer
        self.window = Window(min(self.asr.info.n_samples, int((UTTERANCE_S - 2.0) * rate)))
        self.segmenter = Segmenter(
            int(MIN_SEGMENT_S * rate), int(HOLD_S * rate), int(UTTERANCE_S * rate)
        )
        self.stab = Stabilizer(agree=host.options.stable_updates)
        self.ring = AudioRing.for_profile(host.profile)
        if self.source.channels != self.ring.channels:
            self.ring = AudioRing(self.ring.capacity, self.source.channels)
        host.metrics.set_counter("audio.dropped_samples", 0)  # a guarantee: reported even at 0
        for note in getattr(self.source, "notes", []):
            host.note(note)
        host.sched.every(f"{self.name}.capture", CAPTURE_PERIOD_S, self._capture)
        host.sched.every(
            f"{self.name}.vad", VAD_PERIOD_S, self._vad_tick, realtime=False, priority=Priority.VAD
        )

    # -- tasks ---------------------------------------------------------------------------

    def _capture(self, now: float) -> None:
        frames = self.source.read(now)
        if len(frames):
            self.ring.write(frames)
            self._captured.append((self.ring.written, now))
        if self.ring.overflowed:
            assert self.host is not None
            self.host.metrics.set_counter("audio.dropped_samples", self.ring.overflowed)

    def _vad_tick(self, now: float) -> None:
        host = self.host
        assert host is not None
        block = self.ring.read()
        if len(block):
            mono = block.mean(axis=1).astype(np.float32) / 32768.0
            self._buf.append(mono)
            self._seen += len(mono)
            host.metrics.inc("audio.samples", len(mono))
            for ev in self.vad.push(mono, self.rate):
                self._on_event(ev, now)
            for seg in self.segmenter.tick(self._seen):
                self._final(*seg)
        elif self._source_done() and not self._flushed:
            self._flushed = True
            for ev in self.vad.flush():
                self._on_event(ev, now)
            for seg in self.segmenter.flush():
                self._final(*seg)
        # a partial re-decodes the utterance so far: never more often than twice its own cost,
        # never while a final is waiting, and below the LLM (a partial is a preview; finals
        # and translations are the product)
        every = max(host.options.partial_every_s, 2.0 * self._partial_cost)
        speaking = self.segmenter.open_start is not None
        if (
            speaking
            and now - self._last_partial >= every
            and not self._asr_busy
            and self._pending_finals == 0
        ):
            self._last_partial = now
            start = self.segmenter.start or 0
            if self._seen - start >= self.rate // 2:
                self._asr_busy = True
                self._unstarted.append(start)
                host.sched.submit(
                    Job(
                        f"{self.name}.asr.partial",
                        self._asr(start, self._seen, False),
                        PARTIAL_PRIORITY,
                        pool="asr",
                    )
                )
        self._trim()

    def _source_done(self) -> bool:
        return bool(getattr(self.source, "finished", False)) and self.ring.available == 0

    def _on_event(self, ev: SpeechStart | SpeechEnd, now: float) -> None:
        host = self.host
        assert host is not None
        if isinstance(ev, SpeechStart):
            if self.segmenter.start is None:
                self._last_partial = now
            host.trace.instant("speech start", "audio", "audio", sample=ev.sample)
        else:
            host.trace.instant("speech end", "audio", "audio", start=ev.start, end=ev.end)
        for seg in self.segmenter.event(ev, self._seen):
            self._final(*seg)

    def _final(self, start: int, end: int) -> None:
        """An utterance ended: its final ASR job (never skipped)."""
        host = self.host
        assert host is not None
        self.utterances += 1
        end_t = self._sample_time(end)
        self._pending_finals += 1
        self._unstarted.append(start)
        marks: list[tuple[str, float]] = []
        job = Job(
            f"{self.name}.asr",
            self._asr(start, end, True, end_t, marks),
            Priority.ASR,
            marks=marks,
            pool="asr",
        )
        host.sched.submit(job)

    def _sample_time(self, index: int) -> float:
        """When sample `index` was captured: the capture tick that brought it in."""
        marks = self._captured
        i = bisect.bisect_left(marks, (index, float("-inf")))
        if i >= len(marks):
            return marks[-1][1] if marks else 0.0
        return marks[i][1]

    def _slice(self, start: int, end: int) -> F32:
        if not self._buf:
            return np.zeros(0, np.float32)
        whole = np.concatenate(self._buf)
        self._buf = [whole]
        a = max(0, start - self._buf_start)
        b = max(a, end - self._buf_start)
        return whole[a:b]

    def _trim(self) -> None:
        """Keep audio from the utterance in progress (or the last second), at most one window."""
        start = self.segmenter.start
        keep_from = start if start is not None else self._seen - self.rate
        if self.window.start is not None:
            keep_from = min(keep_from, self.window.start)
        for s in self._unstarted:
            keep_from = min(keep_from, s)
        keep_from = max(keep_from, self._seen - int(UTTERANCE_S * self.rate))
        total = sum(len(b) for b in self._buf)
        if keep_from - self._buf_start > self.rate and total:
            whole = np.concatenate(self._buf)
            cut = keep_from - self._buf_start
            self._buf = [whole[cut:]]
            self._buf_start += cut

    def _asr(
        self,
        start: int,
        end: int,
        final: bool,
        end_t: float = 0.0,
        marks: list[tuple[str, float]] | None = None,
    ) -> Iterator[None]:
        host = self.host
        assert host is not None
        spent = 0.0
        try:
            # the window's audio up to this utterance's end, its earlier finals forced (Window)
            a, forced, prev = self.window.span(start, end, final)
            audio = self._slice(a, end)
            self._unstarted.remove(start)
            if end - start < self.rate // 10:
                text = ""
            else:
                job = self.asr.start(
                    audio,
                    task="transcribe",
                    language=host.options.source_lang,
                    prev=prev,
                    forced=forced,
                    guard=self.guard,
                )
                while not job.done:
                    t0 = time.perf_counter()
                    job.step()
                    spent += time.perf_counter() - t0
                    yield None
                text = job.text.strip()
                if final:
                    self.window.done(job.tokens)
        except Exception as exc:
            if final:  # the scheduler logs and traces it; the report says how many failed
                self.failed_finals += 1
                self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if final:
                self._pending_finals -= 1
            else:
                self._asr_busy = False
                self._partial_cost = spent
        if final:
            shown = self.stab.final(text)
            self._publish_final(shown, end_t, marks if marks is not None else [])
        else:
            self.partials += 1
            committed, tentative = self.stab.update(text)
            if self.segmenter.start is not None:
                line = (
                    f"{committed} {tentative}".strip()
                    if committed and tentative
                    else committed or tentative
                )
                host.screen.set_partial(line, len(committed))
        host.metrics.set_counter("captions.retracted_words", self.stab.retracted)
        host.metrics.set_counter(
            "captions.retracted_committed_words", self.stab.retracted_committed
        )

    def _publish_final(self, text: str, end_t: float, marks: list[tuple[str, float]]) -> None:
        host = self.host
        assert host is not None
        self.finals.append(text)
        host.metrics.inc("captions.words_shown", len(text.split()))
        if text:
            host.screen.commit(text, self.caption_level)
        host.screen.set_partial("")
        marks.append(("speech_end_to_caption_s", end_t))
        host.trace.instant("caption", "app", "apps", text=text[:200])
        self.on_sentence(text, end_t)

    caption_level = FINAL

    def on_sentence(self, text: str, end_t: float) -> None:
        """A finished utterance's text (a hook for apps built on captions)."""

    # -- state ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return (
            self._flushed
            and self.segmenter.start is None
            and self._pending_finals == 0
            and not self._asr_busy
        )

    def failure(self) -> str | None:
        """Why the captions failed (None: every speech segment was transcribed)."""
        if not self.failed_finals:
            return None
        return (
            f"{self.failed_finals} of {self.utterances} speech segments failed to transcribe "
            f"(first: {self.first_error})"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "utterances": self.utterances,
            "failed_segments": self.failed_finals,
            "partial_updates": self.partials,
            "captions": self.finals,
            "retracted_words": self.stab.retracted,
            "retracted_committed_words": self.stab.retracted_committed,
            "retraction_rate": self.stab.retracted
            / max(1, self.stab.shown_words + self.stab.retracted),
        }

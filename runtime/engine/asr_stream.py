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
- endpointing (`Segmenter`): an utterance ends after `endpoint_ms` of trailing silence (a
  sentence's pause, not the gap between two words: cutting at every 100 ms pause loses the
  context Whisper needs), or when it reaches the VAD's `max_speech_s`; an utterance shorter
  than `min_segment_s` is held for `hold_s` and continues if speech resumes by then. The
  utterance's audio, padded as the VAD pads segments, is decoded to a *final* transcript;
- context (`Window`): consecutive utterances share one Whisper window; a final decodes the
  window's audio up to its end with the window's earlier finals forced as the transcript's
  start, so Whisper hears the context that whole-window decoding gives it and decodes only
  the new words; the text of earlier windows is the prompt (after `<|startofprev|>`);
- every decoding is guarded (asr_guard, `LIVE_GUARD` by default): a loop stops where it
  starts (a trimmed window is retried untrimmed), silence is dropped, nothing runs to the
  448-token limit;
- while someone speaks, a *partial* transcript of the utterance so far is decoded every
  `partial_every_s`; its words go through `LocalAgreement` (whisper-streaming's policy: a
  word is stable once the last `agree` hypotheses agree on it and every word before it; a
  stable word is never taken back before the final); a final that becomes due cancels a
  running partial (finals come first);
- `step()` does one unit of work (`asr.Decoding.step`), so the caller's loop never waits more
  than one encoder pass or one decoder token;
- audio older than the open utterance is dropped; memory stays bounded by one utterance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from runtime.engine.asr import Decoding, Guard, Whisper
from runtime.engine.audio import check_audio
from runtime.engine.errors import EngineUsageError
from runtime.engine.vad import SpeechEnd, SpeechStart, Vad, VadParams

__all__ = ["LocalAgreement", "Segmenter", "StreamingRecognizer", "Transcript"]

F32 = npt.NDArray[np.float32]
ENDPOINT_MS = 500  # trailing silence that ends an utterance: a sentence's pause
MIN_SEGMENT_S = 2.0  # shorter utterances wait `HOLD_S` for more speech to join them
HOLD_S = 0.5
PAD_S = 0.2  # audio around an utterance the ASR also hears (the VAD's own pad clips onsets)
# Live captions: a loop stops where it starts and silence is dropped, but no re-decoding at
# higher temperatures (five more decodes of a window do not fit a caption's latency budget)
LIVE_GUARD = Guard(temperatures=(0.0,))
PREV_TOKENS = 223  # the prompt's previous text: Whisper's n_text_ctx // 2 - 1, as openai/whisper


@dataclass(frozen=True)
class Transcript:
    kind: str  # "partial" | "final"
    text: str
    start_s: float
    end_s: float
    tokens: list[int] = field(default_factory=list)
    stable: str = ""  # a partial's prefix that later partials keep (LocalAgreement)


class LocalAgreement:
    """Stable prefixes of successive hypotheses of one utterance (whisper-streaming's
    LocalAgreement-n): the words on which the last `agree` hypotheses agree, from the start,
    become stable and stay so until `reset` (the utterance's final)."""

    def __init__(self, agree: int = 2) -> None:
        if agree < 1:
            raise EngineUsageError(f"LocalAgreement needs agree >= 1, got {agree}")
        self.agree = agree
        self.reset()

    def reset(self) -> None:
        self.stable: list[str] = []
        self._history: deque[list[str]] = deque(maxlen=self.agree)

    def update(self, hypothesis: str) -> tuple[str, str]:
        """(stable text, tentative text) after one more hypothesis."""
        words = hypothesis.split()
        self._history.append(words)
        n = len(self.stable)
        if len(self._history) == self.agree:
            common = 0
            for column in zip(*self._history, strict=False):
                if any(w != column[0] for w in column):
                    break
                common += 1
            if common > n and words[:n] == self.stable:
                self.stable = words[:common]
        return " ".join(self.stable), " ".join(words[len(self.stable) :])


class Segmenter:
    """VAD events -> utterances (sample ranges). A segment shorter than `min_segment` samples
    is held until `hold` samples after its end event; speech that starts before then continues
    the same utterance (a short phrase decodes badly alone). `merged + segment` never exceeds
    `max_len`."""

    def __init__(self, min_segment: int, hold: int, max_len: int) -> None:
        self.min_segment = min_segment
        self.hold = hold
        self.max_len = max_len
        self.reset()

    def reset(self) -> None:
        self.open_start: int | None = None  # the utterance in progress (speech heard)
        self.held: tuple[int, int] | None = None
        self._deadline = 0
        self._join: int | None = None  # end of the held part an open utterance continues

    @property
    def start(self) -> int | None:
        """Where the utterance in progress or held starts."""
        if self.open_start is not None:
            return self.open_start
        return self.held[0] if self.held else None

    def event(self, ev: SpeechStart | SpeechEnd, now: int) -> list[tuple[int, int]]:
        """One VAD event at sample count `now`; the utterances it completes."""
        out: list[tuple[int, int]] = []
        if isinstance(ev, SpeechStart):
            if self.held is not None:
                self.open_start, self._join = self.held
                self.held = None
            else:
                self.open_start, self._join = ev.sample, None
            return out
        start = self.open_start if self.open_start is not None else ev.start
        join, self.open_start, self._join = self._join, None, None
        if ev.end - start > self.max_len and join is not None:
            out.append((start, join))  # too long merged: the held part goes alone
            start = ev.start
        if ev.end - start < self.min_segment:
            self.held = (start, ev.end)
            self._deadline = now + self.hold
        else:
            out.append((start, ev.end))
        return out

    def tick(self, now: int) -> list[tuple[int, int]]:
        """A held utterance whose hold has passed at sample count `now`."""
        if self.held is not None and self.open_start is None and now >= self._deadline:
            held, self.held = self.held, None
            return [held]
        return []

    def flush(self) -> list[tuple[int, int]]:
        held, self.held = self.held, None
        return [held] if held else []


@dataclass
class _Job:
    kind: str
    start: int
    end: int
    decoding: Decoding


class Window:
    """The audio context of finals: consecutive utterances share one Whisper window. A final
    decodes the window's audio from its start to the utterance's end, with the window's
    earlier finals forced as the transcript's start (`Decoding`'s `forced`), so Whisper hears
    the whole context, as whole-window decoding does, and decodes only the new words. When an
    utterance would overflow the window, a new one starts at that utterance and the old
    window's text becomes the previous-text prompt."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reset()

    def reset(self) -> None:
        self.start: int | None = None
        self.tokens: list[int] = []  # the finals decoded in this window
        self.prev: list[int] = []  # the text before it

    def span(self, start: int, end: int, final: bool) -> tuple[int, list[int], list[int]]:
        """(audio start, forced tokens, previous-text tokens) for an utterance (`start`, `end`);
        a final that does not fit opens a new window."""
        if self.start is not None and end - self.start <= self.size:
            return self.start, list(self.tokens), list(self.prev)
        prev = (self.prev + self.tokens)[-PREV_TOKENS:]
        if final:
            self.start, self.tokens, self.prev = start, [], prev
        return start, [], prev

    def done(self, tokens: list[int]) -> None:
        self.tokens += tokens


class StreamingRecognizer:
    def __init__(
        self,
        asr: Whisper,
        vad: Vad,
        *,
        task: str = "transcribe",
        language: str | None = None,
        partial_every_s: float | None = 1.0,
        endpoint_ms: int = ENDPOINT_MS,
        min_segment_s: float = MIN_SEGMENT_S,
        hold_s: float = HOLD_S,
        pad_s: float = PAD_S,
        prompt: bool = True,
        guard: Guard | None = None,
        agree: int = 2,
    ) -> None:
        if partial_every_s is not None and partial_every_s <= 0:
            raise EngineUsageError(f"partial_every_s must be > 0, got {partial_every_s}")
        if endpoint_ms < 0 or min_segment_s < 0 or hold_s < 0 or not 0 <= pad_s <= 1:
            raise EngineUsageError(
                "endpoint_ms, min_segment_s and hold_s must be >= 0, pad_s between 0 and 1"
            )
        self.pad = int(pad_s * asr.sample_rate)
        asr.check_task(task, language)
        self.asr = asr
        self.vad = vad
        self.task = task
        self.language = language
        self.rate = asr.sample_rate
        self.prompt = prompt
        self.guard = guard if guard is not None else LIVE_GUARD
        self.partial_every = None if partial_every_s is None else int(partial_every_s * self.rate)
        vad.params = endpointing(vad.params, asr, endpoint_ms, min_segment_s)
        self.segmenter = Segmenter(
            int(min_segment_s * self.rate), int(hold_s * self.rate), asr.info.n_samples
        )
        self.agreement = LocalAgreement(agree)
        self.window = Window(asr.info.n_samples)
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self.segmenter.reset()
        self.agreement.reset()
        self.window.reset()
        self._buf = np.zeros(0, dtype=np.float32)
        self._base = 0  # absolute sample index of _buf[0]
        self._total = 0
        self._last_partial = 0
        self._finals: deque[tuple[int, int]] = deque()
        self._job: _Job | None = None

    @property
    def busy(self) -> bool:
        """Work is waiting: a final to decode (or held), or a job in progress."""
        return self._job is not None or bool(self._finals)

    def push(self, audio: object, rate: int | None = None) -> None:
        samples = check_audio(audio, rate or self.rate, self.rate, "stream input")
        self._buf = np.concatenate([self._buf, samples])
        self._total += samples.size
        for event in self.vad.push(samples):
            if isinstance(event, SpeechStart) and self.segmenter.start is None:
                self._last_partial = event.sample
                self.agreement.reset()
            self._finals.extend(self.segmenter.event(event, self._total))
        self._finals.extend(self.segmenter.tick(self._total))
        self._trim()

    def finish(self) -> None:
        """End of stream: the open utterance, if any, becomes a final."""
        for event in self.vad.flush():
            self._finals.extend(self.segmenter.event(event, self._total))
        self._finals.extend(self.segmenter.flush())

    def _trim(self) -> None:
        keep_from = self._total - self.rate  # a second of history for the start padding
        if self.segmenter.start is not None:
            keep_from = min(keep_from, self.segmenter.start)
        for s, _ in self._finals:
            keep_from = min(keep_from, s)
        if self._job is not None:
            keep_from = min(keep_from, self._job.start)
        if self.window.start is not None and self.prompt:
            keep_from = min(keep_from, self.window.start)
        drop = keep_from - self.pad - self._base
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
        start_s, end_s = job.start / self.rate, job.end / self.rate
        if job.kind == "final":
            self.window.done(r.tokens)
            self.agreement.reset()
            return [Transcript("final", r.text, start_s, end_s, r.tokens)]
        stable, tentative = self.agreement.update(r.text)
        text = f"{stable} {tentative}".strip()
        return [Transcript("partial", text, start_s, end_s, r.tokens, stable)]

    def _next_job(self) -> _Job | None:
        if self._finals:
            start, end = self._finals.popleft()
            return self._job_for("final", start, end)
        open_start = self.segmenter.open_start
        if (
            self.partial_every is not None
            and open_start is not None
            and self._total - self._last_partial >= self.partial_every
        ):
            self._last_partial = self._total
            return self._job_for("partial", open_start, self._total)
        return None

    def _job_for(self, kind: str, start: int, end: int) -> _Job | None:
        b = min(end + self.pad, self._total)
        a, forced, prev = max(0, start - self.pad), list[int](), list[int]()
        if self.prompt:
            a, forced, prev = self.window.span(a, b, kind == "final")
        audio = self._audio(a, b)
        if audio.size == 0:
            return None
        decoding = self.asr.start(
            audio,
            task=self.task,
            language=self.language,
            prev=prev,
            forced=forced,
            guard=self.guard,
        )
        return _Job(kind, start, end, decoding)


def endpointing(
    params: VadParams, asr: Whisper, endpoint_ms: int, min_segment_s: float
) -> VadParams:
    """The VAD's parameters for utterance endpoints: `endpoint_ms` of silence ends one, and a
    segment (merged with a held short one) fits one Whisper window."""
    window = asr.info.n_samples / asr.sample_rate
    longest = max(1.0, window - 1.0 - min_segment_s)
    return replace(
        params,
        min_silence_ms=max(params.min_silence_ms, endpoint_ms),
        max_speech_s=min(params.max_speech_s, longest),
    )

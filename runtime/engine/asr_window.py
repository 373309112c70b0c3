"""One window of Whisper decoding, driven a step at a time (`Whisper.start` makes one).

The first `step()` computes the features and runs the encoder (its outputs, the cross K/V of
every decoder layer, stay bound to the decoder for the window); every further `step()` is one
decoder run and one token. The decoder's self-attention K/V live in one buffer per layer and
kind (past and present bound to the same OrtValue), taken from the model's free list when the
window starts and handed back when it ends; the one-token feeds (id, position, the two lengths)
and the logits are numpy arrays bound once and rewritten in place, so a token allocates nothing.

A decoder exported with the re-scoring head (an input `logit_mask`; the default of fp32
exports) returns the greedy token itself, not logits: it reads the tied head at 8 bits and re-scores in fp32 the tokens the
quantization error bound cannot rule out, so the token is the fp32 head's argmax. Suppression and
language detection become masks (0 or -inf per token, built once per model) bound before a run.

With a `Guard` (asr_guard), a window is decoded in attempts: an attempt that loops (its text
compresses past the guard's ratio, checked every few tokens, so it stops there rather than at
the 448-token limit) or whose average log-probability is too low is retried: a trimmed window
untrimmed first, then at the guard's higher temperatures (sampling needs the logits head). The
encoder runs again only when the window's frames change; a retry at the same frames re-runs
the prompt over the bound cross K/V. `prev` (the previous text's tokens) goes before the prompt
after `<|startofprev|>`, as Whisper was trained to condition on it; `forced` (the text already
known for the start of this window's audio, as openai/whisper's `prefix`) goes after the prompt,
and only what follows it is decoded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from runtime.engine import kv
from runtime.engine.asr_guard import Guard, compression_ratio, log_softmax_at, strip_loop
from runtime.engine.asr_model import FEEDS, WhisperModel
from runtime.engine.llm.text import TextStream

__all__ = ["AsrResult", "Decoding"]

F32 = npt.NDArray[np.float32]


@dataclass
class AsrResult:
    text: str
    tokens: list[int]
    segments: list[dict[str, object]] = field(default_factory=list)
    language: str | None = None
    audio_s: float = 0.0
    features_s: float = 0.0
    encoder_s: float = 0.0
    decoder_s: float = 0.0
    decoder_tokens: int = 0

    @property
    def total_s(self) -> float:
        return self.features_s + self.encoder_s + self.decoder_s

    @property
    def rtf(self) -> float:
        return self.total_s / self.audio_s if self.audio_s else 0.0

    @property
    def decoder_ms_per_token(self) -> float:
        return 1000 * self.decoder_s / self.decoder_tokens if self.decoder_tokens else 0.0


class Decoding:
    """One window: `step()` runs the encoder first, then one decoder token per call."""

    def __init__(
        self,
        asr: WhisperModel,
        audio: F32,
        task: str,
        language: str | None,
        max_new_tokens: int | None,
        offset_s: float,
        *,
        prev: Sequence[int] = (),
        guard: Guard | None = None,
        trim: bool | None = None,
        forced: Sequence[int] = (),
    ) -> None:
        self.asr = asr
        self.audio = audio
        self.task = task
        self.language = language
        self.offset_s = offset_s
        info = asr.info
        self._limit = info.max_target_positions
        self._max_new = max_new_tokens
        self.guard = guard
        self.trim = asr.trim if trim is None else (trim and asr.trim)
        prev_id = asr.tokenizer.token_to_id("<|startofprev|>")
        keep = [int(t) for t in prev if t < info.eos_token_id][-(self._limit // 2 - 1) :]
        self._prefix = [prev_id, *keep] if keep and prev_id is not None else []
        # the transcript's known start (the window's earlier text), after the prompt
        self._forced = [int(t) for t in forced if t < info.eos_token_id][-(self._limit // 2) :]
        # attempts: (temperature, trimmed); the first is greedy at the caller's trimming
        plan = [(0.0, self.trim)]
        if guard is not None:
            if self.trim:
                plan.append((0.0, False))
            if asr.scored:
                plan += [(t, False) for t in guard.temperatures[1:]]
        self._plan = plan
        self._attempt = 0
        self._tried: list[tuple[list[int], float | None, float]] = []  # tokens, logprob, ratio
        self._rng = np.random.default_rng(guard.seed if guard else 0)
        self.tokens: list[int] = []
        self.prompt: list[int] = []
        self.done = False
        self._encoded = False
        self._frames = -1  # feature frames the bound cross K/V were computed from
        self._cross_positions = 0  # encoder positions this window's cross K/V cover
        self._past = 0  # positions in the K/V buffers
        self._sum_logprob = 0.0
        self.no_speech_prob: float | None = None
        self.avg_logprob: float | None = None
        self.temperature = 0.0
        self.fallbacks = 0  # attempts after the first
        self.silent = False  # the guard judged the window to hold no speech
        self._binding = asr.decoder.io_binding()
        self._kv = asr.take_kv()
        # The one-token feeds, bound once and rewritten in place every step.
        self._ids = np.zeros((1, 1), np.int64)
        self._pos = np.zeros((1, 1), np.int64)
        self._seqlens = np.zeros(1, np.int32)
        self._total = np.zeros((), np.int32)
        self._logits = np.zeros((1, 1, info.vocab_size), np.float32)
        self._token = np.zeros(1, np.int64)  # re-scoring head: the token and its candidates
        self._candidates = np.zeros((), np.int64)
        self.rescored = 0  # tokens re-scored in fp32, summed over the window's runs
        self._step_feeds = [
            ort.OrtValue.ortvalue_from_numpy(a)
            for a in (self._ids, self._pos, self._seqlens, self._total)
        ]
        b = self._binding
        kv.bind(b, asr.past_names, asr.present_names, self._kv)
        if asr.rescore:
            b.bind_ortvalue_output("token", ort.OrtValue.ortvalue_from_numpy(self._token))
            b.bind_ortvalue_output("candidates", ort.OrtValue.ortvalue_from_numpy(self._candidates))
            if asr.scored:
                b.bind_ortvalue_output("scores", ort.OrtValue.ortvalue_from_numpy(self._logits))
        else:
            b.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self._logits))
        self._stream = TextStream(asr.tokenizer)
        self.features_s = self.encoder_s = self.decoder_s = 0.0
        self.session_s = 0.0  # time inside the decoder's run for one-token steps
        self.first_s = 0.0  # the first decoder step: the prompt (and language detection)
        self.decoder_runs = 0  # tokens decoded, including a final EOS (language detection aside)

    def step(self) -> int | None:
        """One unit of work: the encoder, or one token. Returns the token, if one was made."""
        if self.done:
            return None
        if not self._encoded:
            self._encode()
            return None
        t0 = time.perf_counter()
        if not self.prompt:
            token = self._first()
            self.first_s = time.perf_counter() - t0
        else:
            token = self._next(self.tokens[-1] if self.tokens else self.prompt[-1])
        self.decoder_s += time.perf_counter() - t0
        self.decoder_runs += 1
        if token == self.asr.info.eos_token_id:
            self._end_attempt(looped=False)
            return token
        self.tokens.append(token)
        self._stream.push(token)
        total = len(self.prompt) + len(self.tokens)
        if total >= self._limit or (
            self._max_new is not None and len(self.tokens) >= self._max_new
        ):
            self._end_attempt(looped=False)
        elif (
            self.guard is not None
            and len(self.tokens) % self.guard.check_every == 0
            and self.guard.looping(self.text)
        ):
            self._end_attempt(looped=True)
        return token

    @property
    def text(self) -> str:
        return self.asr.tokenizer.decode(self.tokens)  # type: ignore[no-any-return]

    def result(self) -> AsrResult:
        sr = self.asr.sample_rate
        text = self.text
        seg: dict[str, object] = {
            "start": round(self.offset_s, 3),
            "end": round(self.offset_s + self.audio.size / sr, 3),
            "text": text,
            "tokens": list(self.tokens),
        }
        if self.guard is not None:
            seg.update(
                temperature=self.temperature,
                fallbacks=self.fallbacks,
                avg_logprob=self.avg_logprob,
                no_speech_prob=self.no_speech_prob,
                compression_ratio=round(compression_ratio(text), 3),
            )
        lang = self.language
        return AsrResult(
            text.strip(),
            list(self.tokens),
            [seg] if text.strip() or self.tokens else [],
            language=lang,
            audio_s=self.audio.size / sr,
            features_s=self.features_s,
            encoder_s=self.encoder_s,
            decoder_s=self.decoder_s,
            decoder_tokens=self.decoder_runs,
        )

    # -- internals -------------------------------------------------------------------------

    def _end_attempt(self, looped: bool) -> None:
        """An attempt ended (EOS, a limit, or a loop): keep it, retry, or finish the window."""
        guard = self.guard
        if guard is None:
            self._finish()
            return
        n = len(self.tokens) + (0 if looped else 1)
        self.avg_logprob = self._sum_logprob / max(1, n) if self.asr.scored else None
        text = self.text
        failed, silent = guard.verdict(text, self.avg_logprob, self.no_speech_prob)
        failed = failed or looped
        if silent and self._attempt == 0:
            self.silent = True
            self.tokens = []
            self._finish()
            return
        self._tried.append((list(self.tokens), self.avg_logprob, compression_ratio(text)))
        if failed and self._attempt + 1 < len(self._plan):
            self._attempt += 1
            self.fallbacks += 1
            temp, trim = self._plan[self._attempt]
            self.temperature = temp
            self.tokens, self.prompt = [], []
            self._sum_logprob = 0.0
            self._stream = TextStream(self.asr.tokenizer)
            if self.asr.frames(self.audio.size, trim) != self._frames:
                self.trim = trim
                self._encoded = False
            return
        if failed:
            self.tokens = self._best_tried()
        self._finish()

    def _best_tried(self) -> list[int]:
        """All attempts failed: the best loop-free one (by log-probability), else the last
        attempt without its loop."""
        ratio = self.guard.compression_ratio if self.guard else None
        clean = [t for t in self._tried if ratio is None or t[2] <= ratio]
        if clean:
            return max(clean, key=lambda t: -np.inf if t[1] is None else t[1])[0]
        return strip_loop(self._tried[-1][0])

    def _finish(self) -> None:
        """Done: the K/V buffers go back to the model for the next window."""
        self.done = True
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()
        self.asr.give_kv(self._kv)

    def _encode(self) -> None:
        asr = self.asr
        t0 = time.perf_counter()
        self._frames = asr.frames(self.audio.size, self.trim)
        feats = asr.mel(self.audio, self._frames)[None]
        t1 = time.perf_counter()
        binding = asr.encoder.io_binding()
        binding.bind_cpu_input(asr.features_name, feats)
        for name in asr.cross_names:
            binding.bind_output(name, "cpu")
        asr.encoder.run_with_iobinding(binding)
        cross = binding.get_outputs()
        self._encoded = True
        self._cross_positions = int(cross[0].shape()[2])
        self.features_s += t1 - t0
        self.encoder_s += time.perf_counter() - t1
        # The cross K/V stay bound for the whole window.
        for name, value in zip(asr.cross_names, cross, strict=True):
            self._binding.bind_ortvalue_input(name, value)

    def _run(self, ids: list[int], start: int, mask: str | None) -> None:
        """Feed `ids` at positions start.. (the K/V rows from `start` on are overwritten). With
        the re-scoring head, `mask` ("lang", "first", "step") is bound as its logit mask."""
        s = len(ids)
        b = self._binding
        b.bind_cpu_input("input_ids", np.array([ids], np.int64))
        b.bind_cpu_input("position_ids", np.arange(start, start + s, dtype=np.int64)[None])
        b.bind_cpu_input("seqlens_k", np.array([start + s - 1], np.int32))
        b.bind_cpu_input("total_sequence_length", np.array(start + s, np.int32))
        asr = self.asr
        if asr.rescore and mask is not None:
            b.bind_ortvalue_input("logit_mask", asr.masks[mask])
        asr.decoder.run_with_iobinding(b)
        self._past = start + s
        if asr.rescore:
            self.rescored += int(self._candidates)

    def _first(self) -> int:
        """The prompt (after the previous text, if any); the first token. The logits at the
        start-of-transcript position give the language (when none was set) and, for the guard,
        the no-speech probability: the prompt is then fed in two runs, up to that position and
        the rest."""
        asr = self.asr
        info = asr.info
        sot = info.decoder_start_token_id
        prefix = self._prefix
        lang_id = asr.lang_ids.get(self.language) if self.language else None
        detect = lang_id is None and bool(asr.lang_ids)
        if detect and asr.rescore:
            self._run([*prefix, sot], 0, "lang")
            lang_id = int(self._token[0])
        split = asr.scored and (
            detect
            or (
                self.guard is not None
                and self.guard.no_speech is not None
                and info.no_speech_token_id is not None
            )
        )
        sot_logits: F32 | None = None
        if split:
            self._run([*prefix, sot], 0, "none")
            sot_logits = self._logits[0, 0].copy()
            if info.no_speech_token_id is not None:
                self.no_speech_prob = float(
                    np.exp(log_softmax_at(sot_logits, info.no_speech_token_id))
                )
            if detect and not asr.rescore:
                lang = np.array(list(asr.lang_ids.values()))
                lang_id = int(lang[np.argmax(sot_logits[lang])])
        if detect:
            self.language = next(k for k, v in asr.lang_ids.items() if v == lang_id)
        prompt = asr.prompt(self.task, lang_id)
        prompt = [*prompt, *self._forced]
        self.prompt = [*prefix, *prompt]
        if split and prompt[0] == sot and (len(prompt) > 1 or not asr.rescore):
            if len(prompt) > 1:
                self._run(prompt[1:], len(prefix) + 1, "first")
            else:
                self._logits[0, 0] = sot_logits
        else:
            self._run(self.prompt, 0, "first")
        for name, value in zip(FEEDS, self._step_feeds, strict=True):
            self._binding.bind_ortvalue_input(name, value)
        if asr.rescore:
            self._binding.bind_ortvalue_input("logit_mask", asr.masks["step"])
        return self._pick(first=True)

    def _next(self, token: int) -> int:
        p = self._past
        self._ids[0, 0] = token
        self._pos[0, 0] = p
        self._seqlens[0] = p
        self._total[...] = p + 1
        t0 = time.perf_counter()
        self.asr.decoder.run_with_iobinding(self._binding)
        self.session_s += time.perf_counter() - t0
        self._past = p + 1
        if self.asr.rescore:
            self.rescored += int(self._candidates)
        return self._pick(first=False)

    def _pick(self, first: bool) -> int:
        """The next token: greedy (the re-scoring head's, or the logits' argmax), or sampled at
        the attempt's temperature; its log-probability adds to the attempt's (when guarded and
        the head gives logits or scores; the re-scoring head's scores come masked)."""
        asr = self.asr
        if asr.rescore and (self.guard is None or not asr.scored):
            return int(self._token[0])
        logits = self._logits[0, 0] if asr.rescore else asr.logits_filter(self._logits[0, 0], first)
        if asr.rescore and self.temperature == 0:
            token = int(self._token[0])
        elif self.temperature > 0:
            gumbel = -np.log(-np.log(self._rng.random(logits.size)))
            token = int(np.argmax(logits / self.temperature + gumbel))
        else:
            token = int(np.argmax(logits))
        if self.guard is not None:
            self._sum_logprob += log_softmax_at(logits, token)
        return token

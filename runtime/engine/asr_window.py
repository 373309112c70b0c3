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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from runtime.engine.llm.text import TextStream

if TYPE_CHECKING:
    from runtime.engine.asr import Whisper

__all__ = ["FEEDS", "AsrResult", "Decoding"]

F32 = npt.NDArray[np.float32]
FEEDS = ("input_ids", "position_ids", "seqlens_k", "total_sequence_length")


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
        asr: Whisper,
        audio: F32,
        task: str,
        language: str | None,
        max_new_tokens: int | None,
        offset_s: float,
    ) -> None:
        self.asr = asr
        self.audio = audio
        self.task = task
        self.language = language
        self.offset_s = offset_s
        info = asr.info
        self._limit = info.max_target_positions
        self._max_new = max_new_tokens
        self.tokens: list[int] = []
        self.prompt: list[int] = []
        self.done = False
        self._encoded = False
        self._cross_positions = 0  # encoder positions this window's cross K/V cover
        self._past = 0  # positions in the K/V buffers
        self._binding = asr.decoder.io_binding()
        self._kv = asr._kv_free.pop() if asr._kv_free else self._new_kv()
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
        for past, present, value in zip(asr._past_names, asr._present_names, self._kv, strict=True):
            b.bind_ortvalue_input(past, value)
            b.bind_ortvalue_output(present, value)
        if asr.rescore:
            b.bind_ortvalue_output("token", ort.OrtValue.ortvalue_from_numpy(self._token))
            b.bind_ortvalue_output("candidates", ort.OrtValue.ortvalue_from_numpy(self._candidates))
        else:
            b.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self._logits))
        self._stream = TextStream(asr.tokenizer)
        self.features_s = self.encoder_s = self.decoder_s = 0.0
        self.session_s = 0.0  # time inside the decoder's run for one-token steps
        self.first_s = 0.0  # the first decoder step: the prompt (and language detection)
        self.decoder_runs = 0  # tokens decoded, including a final EOS (language detection aside)

    def _new_kv(self) -> list[ort.OrtValue]:
        shape = self.asr._kv_shape
        return [
            ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32))
            for _ in self.asr._past_names
        ]

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
            self._finish()
            return token
        self.tokens.append(token)
        self._stream.push(token)
        total = len(self.prompt) + len(self.tokens)
        if total >= self._limit or (
            self._max_new is not None and len(self.tokens) >= self._max_new
        ):
            self._finish()
        return token

    @property
    def text(self) -> str:
        return self.asr.tokenizer.decode(self.tokens)  # type: ignore[no-any-return]

    def result(self) -> AsrResult:
        sr = self.asr.sample_rate
        text = self.text
        seg = {
            "start": round(self.offset_s, 3),
            "end": round(self.offset_s + self.audio.size / sr, 3),
            "text": text,
            "tokens": list(self.tokens),
        }
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

    def _finish(self) -> None:
        """Done: the K/V buffers go back to the model for the next window."""
        self.done = True
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()
        self.asr._kv_free.append(self._kv)

    def _encode(self) -> None:
        asr = self.asr
        t0 = time.perf_counter()
        feats = asr.mel(self.audio, asr._frames(self.audio.size))[None]
        t1 = time.perf_counter()
        binding = asr.encoder.io_binding()
        binding.bind_cpu_input(asr._features_name, feats)
        for name in asr._cross_names:
            binding.bind_output(name, "cpu")
        asr.encoder.run_with_iobinding(binding)
        cross = binding.get_outputs()
        self._encoded = True
        self._cross_positions = int(cross[0].shape()[2])
        self.features_s = t1 - t0
        self.encoder_s = time.perf_counter() - t1
        # The cross K/V stay bound for the whole window.
        for name, value in zip(asr._cross_names, cross, strict=True):
            self._binding.bind_ortvalue_input(name, value)

    def _run_prompt(self, ids: list[int], pick: str) -> int:
        """Feed `ids` from position 0 (the K/V buffers are overwritten); the greedy token of
        the last position, over the language tokens (`pick="lang"`) or with the suppression of
        the first generated position (`pick="first"`)."""
        s = len(ids)
        b = self._binding
        b.bind_cpu_input("input_ids", np.array([ids], np.int64))
        b.bind_cpu_input("position_ids", np.arange(s, dtype=np.int64)[None])
        b.bind_cpu_input("seqlens_k", np.array([s - 1], np.int32))
        b.bind_cpu_input("total_sequence_length", np.array(s, np.int32))
        asr = self.asr
        if asr.rescore:
            b.bind_ortvalue_input("logit_mask", asr._masks[pick])
        asr.decoder.run_with_iobinding(b)
        self._past = s
        if asr.rescore:
            self.rescored += int(self._candidates)
            return int(self._token[0])
        logits: F32 = self._logits[0, 0]
        if pick == "lang":
            lang = np.array(list(asr._lang_ids.values()))
            return int(lang[np.argmax(logits[lang])])
        return int(np.argmax(asr._logits_filter(logits, first=True)))

    def _first(self) -> int:
        asr = self.asr
        info = asr.info
        lang_id = asr._lang_ids.get(self.language) if self.language else None
        if lang_id is None and asr._lang_ids:
            lang_id = self._run_prompt([info.decoder_start_token_id], "lang")
            self.language = next(k for k, v in asr._lang_ids.items() if v == lang_id)
        self.prompt = asr._prompt(self.task, lang_id)
        token = self._run_prompt(self.prompt, "first")
        for name, value in zip(FEEDS, self._step_feeds, strict=True):
            self._binding.bind_ortvalue_input(name, value)
        if asr.rescore:
            self._binding.bind_ortvalue_input("logit_mask", asr._masks["step"])
        return token

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
            return int(self._token[0])
        return int(np.argmax(self.asr._logits_filter(self._logits[0, 0], first=False)))

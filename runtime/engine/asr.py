"""Whisper speech recognition on onnxruntime, one unit of work per `step()`.

    asr = Whisper.from_artifact("artifacts/whisper", profile)
    job = asr.start(audio, task="transcribe", language="en")
    while not job.done:
        job.step()               # the encoder once, then one decoder token per call
    job.text, job.tokens

How it works:
- features: `mel.LogMel`, constants and filter bank from the manifest;
- encoder: one run per window; the exported encoder also applies every decoder layer's
  cross-attention K/V projections, so cross K/V are computed once per window, come out as
  OrtValues and stay bound to the decoder for the whole window;
- decoder (layout "cross-kv-shared-buffer"): one graph for the prompt (S tokens) and every
  further token (S = 1); its self-attention K/V live in one buffer per layer and kind, of the
  model's maximum target length, bound as both past and present, so the graph appends in
  place. Every buffer the loop touches (ids, positions, lengths, K/V, logits) is allocated
  when the window starts and bound once; a token costs one `run_with_iobinding`, an in-place
  write of four small integers and an argmax over the last position's logits, or, with the
  re-scoring head (the default of fp32 exports; the manifest's `asr.extra["decoder_head"]`),
  the token the graph picked (see asr_window). Such an artifact has no logits to give: a
  caller that needs them calls `require_logits`, which refuses it clearly;
- prompt: start-of-transcript, language, task (transcribe or translate), no-timestamps, as the
  model's generation config says; without a language, it is detected like transformers does
  (one decoder run on start-of-transcript, argmax over the language tokens). An English-only
  model (`*.en`; the manifest's `asr.multilingual` false) has no language or task token: its
  prompt is start-of-transcript and no-timestamps, it transcribes its one language
  (`asr.language`) and refuses translation or another language by name;
- greedy decoding with the generation config's `suppress_tokens` everywhere and
  `begin_suppress_tokens` at the first generated position; stops at EOS or the decoder's
  maximum target length;
- audio longer than one window is cut into windows (at VAD silences when segments are given,
  else every 30 s) and each window is decoded on its own.

Trimming: the exported encoder graph takes fewer frames (the manifest's `asr.extra["trim"]`
says so), but Whisper was trained on 30 s windows only, and transformers always pads to one,
so by default the encoder sees a full window (the output then equals transformers'
`generate`). With `trim=True` (`ocula transcribe --trim`) short audio is encoded from only the
frames it needs, rounded up to an even count for the stride-2 convolution: the encoder's work
shrinks with the audio, and so does the cross-attention of every token, but the tokens are
those of the trimmed window, not of the padded one (equal to transformers run on the same
trimmed frames; BENCHMARKS.md measures both the speed and the agreement).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from runtime.engine.artifact import open_artifact
from runtime.engine.asr_guard import Guard
from runtime.engine.asr_model import WhisperModel
from runtime.engine.asr_window import AsrResult, Decoding
from runtime.engine.audio import check_audio
from runtime.engine.errors import ArtifactError, EngineUsageError, InputError
from runtime.engine.mel import LogMel
from runtime.engine.session import open_session
from runtime.npyfile import parse_npy
from runtime.profile import Profile

__all__ = ["AsrResult", "Decoding", "Guard", "Whisper", "WhisperModel"]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
TASKS = ("transcribe", "translate")
LAYOUT = "cross-kv-shared-buffer"
MAX_MEL_BYTES = 16 << 20  # a mel filter bank is 80 x 201 floats (64 kB)


class Whisper(WhisperModel):
    """A loaded Whisper artifact (a `WhisperModel`) that decodes audio in windows."""

    @classmethod
    def from_artifact(
        cls,
        path: str | Path,
        profile: Profile | None = None,
        *,
        threads: int | None = None,
        verify: bool = True,
        trim: bool = False,
    ) -> Whisper:
        """`trim=True` encodes short audio without padding it to a full window, where the
        artifact allows it (see the module's notes: faster, not equal to transformers)."""
        art = open_artifact(path, "asr", verify=verify)
        info = art.manifest.asr
        assert info is not None
        where = str(art.path)
        sessions = {}
        if info.decoder_layout != LAYOUT:
            raise ArtifactError(
                f"{where}: ASR decoder layout {info.decoder_layout!r} is not one this runtime "
                f"drives ({LAYOUT}); re-export with this version of ocula"
            )
        for role in ("encoder", "decoder"):
            model, sha = art.graph_file(role)
            sessions[role] = open_session(model, profile, threads=threads, identity=sha)
        try:
            path = art.file(info.mel_filters)
            if path.stat().st_size > MAX_MEL_BYTES:
                raise ArtifactError(f"{where}: mel filters {info.mel_filters}: over 16 MiB")
            filters = parse_npy(
                path.read_bytes(), f"{where}: mel filters", ArtifactError, kinds="f", most=1 << 22
            )
            mel = LogMel(filters, info.n_fft, info.hop_length, info.n_samples)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{where}: mel filters {info.mel_filters}: {exc}") from exc
        tok = next(
            (
                f
                for f in (art.manifest.tokenizer.files if art.manifest.tokenizer else [])
                if f.endswith("tokenizer.json")
            ),
            None,
        )
        if tok is None:
            raise ArtifactError(f"{where}: the manifest lists no tokenizer.json; re-export")
        if trim and not info.extra.get("trim", False):
            log.info("%s: this artifact's encoder takes full windows only; not trimming", where)
        trim = trim and bool(info.extra.get("trim", False))
        return cls(info, sessions, mel, art.file(tok), where, trim=trim)

    # -- public ----------------------------------------------------------------------------

    def require_logits(self, purpose: str) -> None:
        """Refuse (ArtifactError) an artifact whose decoder returns greedy tokens, not logits,
        for a `purpose` that needs the logits (sampling, parity checks on the logits)."""
        if self.rescore:
            raise ArtifactError(
                f"{self.where}: {purpose} needs the decoder's logits, but this artifact has the "
                "re-scoring head (it returns the greedy token only; the default for "
                "--quant fp32); re-export it with 'ocula export asr ... --head fp32'"
            )

    @property
    def multilingual(self) -> bool:
        return self.info.multilingual

    @property
    def languages(self) -> list[str]:
        """The languages this model transcribes ([asr.language] for an English-only one)."""
        if not self.info.multilingual:
            return [self.info.language] if self.info.language else []
        return sorted(self.lang_ids)

    def start(
        self,
        audio: object,
        *,
        task: str = "transcribe",
        language: str | None = None,
        rate: int | None = None,
        max_new_tokens: int | None = None,
        offset_s: float = 0.0,
        prev: Sequence[int] = (),
        guard: Guard | None = None,
        trim: bool | None = None,
        forced: Sequence[int] = (),
    ) -> Decoding:
        """A decoding job for one window of audio (at most `chunk_length_s` seconds). `prev`:
        the previous text's tokens, a prompt; `guard`: retry an attempt that loops or is
        unsure (see asr_guard); `trim`: this window's trimming (default: the model's); `forced`:
        the transcript of the audio's start, known already (only the rest is decoded)."""
        samples = check_audio(audio, rate or self.sample_rate, self.sample_rate, "ASR input")
        if samples.size > self.info.n_samples:
            raise InputError(
                f"ASR input: {samples.size / self.sample_rate:.1f} s is longer than one "
                f"{self.info.chunk_length_s} s window; use transcribe() for long audio"
            )
        self.check_task(task, language)
        if not self.info.multilingual:
            language = self.info.language
        return Decoding(
            self,
            samples,
            task,
            language,
            max_new_tokens,
            offset_s,
            prev=prev,
            guard=guard,
            trim=trim,
            forced=forced,
        )

    def transcribe(
        self,
        audio: object,
        *,
        task: str = "transcribe",
        language: str | None = None,
        rate: int | None = None,
        segments: Sequence[tuple[int, int]] | None = None,
        max_new_tokens: int | None = None,
        guard: Guard | None = None,
    ) -> AsrResult:
        """The whole buffer, in windows; `segments` (sample ranges from a VAD) choose the cuts
        and skip the silence; `guard` (see asr_guard) retries a window that loops."""
        samples = check_audio(audio, rate or self.sample_rate, self.sample_rate, "ASR input")
        self.check_task(task, language)
        result = AsrResult("", [], audio_s=samples.size / self.sample_rate)
        for a, b in self.windows(samples.size, segments):
            job = self.start(
                samples[a:b],
                task=task,
                language=language,
                max_new_tokens=max_new_tokens,
                offset_s=a / self.sample_rate,
                guard=guard,
            )
            while not job.done:
                job.step()
            r = job.result()
            result.tokens += r.tokens
            result.segments += r.segments
            result.language = result.language or r.language
            result.features_s += r.features_s
            result.encoder_s += r.encoder_s
            result.decoder_s += r.decoder_s
            result.decoder_tokens += r.decoder_tokens
        result.text = " ".join(str(s["text"]).strip() for s in result.segments if s["text"])
        return result

    def windows(
        self, total: int, segments: Sequence[tuple[int, int]] | None = None
    ) -> list[tuple[int, int]]:
        """Sample ranges of at most one window each."""
        size = self.info.n_samples
        if segments is None:
            return [(a, min(a + size, total)) for a in range(0, total, size)]
        out: list[tuple[int, int]] = []
        for s, e in segments:
            s, e = max(0, s), min(total, e)
            if e <= s:
                continue
            if out and e - out[-1][0] <= size:
                out[-1] = (out[-1][0], e)  # merge into the current window
                continue
            while e - s > size:
                out.append((s, s + size))
                s += size
            out.append((s, e))
        return out

    def check_task(self, task: str, language: str | None) -> None:
        if task not in TASKS:
            raise EngineUsageError(f"unknown task {task!r}; use transcribe or translate")
        if not self.info.multilingual:
            known = self.info.language or "one language"
            said = {"en": "English"}.get(known, known)
            if task != "transcribe":
                raise EngineUsageError(
                    f"{self.where}: this model is {said}-only (no task tokens): it "
                    f"transcribes {said} and cannot {task}; use a multilingual Whisper"
                )
            if language is not None and self.info.language and language != self.info.language:
                raise EngineUsageError(
                    f"unknown language {language!r}: this model is {said}-only; use "
                    f"--language {known} or a multilingual Whisper"
                )
            return
        token = (
            self.info.translate_token_id if task == "translate" else self.info.transcribe_token_id
        )
        if token is None:
            raise EngineUsageError(f"{self.where}: this model has no {task} task token")
        if language is not None and language not in self.lang_ids:
            raise EngineUsageError(
                f"unknown language {language!r}; this model knows {', '.join(self.languages)}"
            )

"""A loaded Whisper model: its graphs, their IO names, its token facts and the buffers that
decoding windows share.

`WhisperModel` is what one window of decoding (`asr_window.Decoding`) needs from the model, all
of it public: the encoder and decoder sessions and their input and output names, the re-scoring
head's masks, the prompt (`prompt`), the feature frames of a window (`frames`), the logits'
suppression (`logits_filter`) and a free list of decoder K/V buffer sets (`take_kv`/`give_kv`:
a window takes a set when it starts and gives it back when it ends, so windows after the first
allocate no K/V). `asr.Whisper` is a `WhisperModel` that also loads an artifact and starts and
runs windows; this module imports neither of them, so the two import it and not each other.

Every name and token id comes from the manifest (`asr.extra` holds the graphs' name patterns);
a decoder graph without the inputs the loop binds, or an encoder without the cross K/V outputs,
is refused when the model is built, not at the first token.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from runtime.engine import kv
from runtime.engine.errors import ArtifactError
from runtime.engine.llm.text import load_tokenizer
from runtime.engine.mel import LogMel
from runtime.manifest import AsrInfo

__all__ = ["FEEDS", "WhisperModel"]

F32 = npt.NDArray[np.float32]
#: the decoder's one-token feeds, bound once per window and rewritten in place every step
FEEDS = ("input_ids", "position_ids", "seqlens_k", "total_sequence_length")


class WhisperModel:
    """The encoder, the decoder and what decoding a window reads from them."""

    def __init__(
        self,
        info: AsrInfo,
        sessions: dict[str, ort.InferenceSession],
        mel: LogMel,
        tokenizer_path: Path,
        where: str,
        trim: bool = False,
    ) -> None:
        self.info = info
        self.where = where
        self.mel = mel
        self.encoder = sessions["encoder"]
        self.decoder = sessions["decoder"]
        extra = info.extra
        layers = info.decoder_layers
        self.cross_names = kv.names(str(extra.get("cross", "cross.{layer}.{kind}")), layers)
        self.past_names = kv.names(str(extra.get("past", "past.{layer}.{kind}")), layers)
        self.present_names = kv.names(str(extra.get("present", "present.{layer}.{kind}")), layers)
        self.kv_shape = (1, info.decoder_heads, info.max_target_positions, info.head_dim)
        self._kv_free: list[list[ort.OrtValue]] = []  # K/V buffer sets of finished windows
        self.tokenizer = load_tokenizer(tokenizer_path)
        enc_in = self.encoder.get_inputs()[0]
        self.features_name = enc_in.name
        self.trim = trim and not isinstance(enc_in.shape[-1], int)
        self._check_io()
        self._suppress = np.array(sorted(set(info.suppress_tokens)), dtype=np.int64)
        self._begin_suppress = np.array(sorted(set(info.begin_suppress_tokens)), dtype=np.int64)
        #: language code ("en") -> its token id
        self.lang_ids = {k.strip("<|>"): v for k, v in info.language_token_ids.items()}
        # A re-scoring head takes the suppression as a mask and returns the token itself.
        self.rescore = "logit_mask" in {i.name for i in self.decoder.get_inputs()}
        self.head = "rescore8" if self.rescore else "logits"
        # logits, or the re-scoring head's 8-bit scores (exports since the loop guard): what
        # the guard's log-probability, no-speech probability and sampling read
        self.scored = not self.rescore or "scores" in {o.name for o in self.decoder.get_outputs()}
        said = extra.get("decoder_head")
        if said is not None and said != self.head:
            raise ArtifactError(
                f"{where}: the manifest says the decoder head is {said!r}, the decoder graph "
                f"has the {self.head!r} head; the manifest and the graphs do not belong "
                "together (re-export)"
            )
        #: the re-scoring head's logit masks by use: "step", "first", "lang", "none"
        self.masks: dict[str, ort.OrtValue] = {}
        if self.rescore:
            step = np.zeros(info.vocab_size, np.float32)
            step[self._suppress] = -np.inf
            first = step.copy()
            first[self._begin_suppress] = -np.inf
            lang = np.full(info.vocab_size, -np.inf, np.float32)
            lang[list(self.lang_ids.values())] = 0.0
            none = np.zeros(info.vocab_size, np.float32)
            self.masks = {
                k: ort.OrtValue.ortvalue_from_numpy(a)
                for k, a in (("step", step), ("first", first), ("lang", lang), ("none", none))
            }

    def _check_io(self) -> None:
        have = {i.name for i in self.decoder.get_inputs()}
        outs = {o.name for o in self.encoder.get_outputs()}
        for name in [*FEEDS, *self.cross_names, *self.past_names]:
            if name not in have:
                raise ArtifactError(
                    f"{self.where}: the decoder graph has no input {name!r}; the manifest and "
                    "the graphs do not belong together (re-export)"
                )
        missing = [n for n in self.cross_names if n not in outs]
        if missing:
            raise ArtifactError(f"{self.where}: the encoder graph has no output {missing[0]!r}")

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    def take_kv(self) -> list[ort.OrtValue]:
        """A set of decoder self-attention K/V buffers (one per name in `past_names`), a
        finished window's when there is one; give it back with `give_kv`."""
        if self._kv_free:
            return self._kv_free.pop()
        return kv.allocate(len(self.past_names), self.kv_shape)[1]

    def give_kv(self, buffers: list[ort.OrtValue]) -> None:
        self._kv_free.append(buffers)

    def frames(self, n: int, trim: bool) -> int:
        """Feature frames for `n` samples: a full window, or trimmed to the frames the audio
        needs, rounded up to an even count for the stride-2 convolution."""
        if not trim:
            return self.mel.n_frames
        frames = math.ceil(n / self.info.hop_length)
        return min(self.mel.n_frames, frames + frames % 2)

    def logits_filter(self, logits: F32, first: bool) -> F32:
        """The generation config's suppression, in place: `suppress_tokens` everywhere,
        `begin_suppress_tokens` at the first generated position (`first`)."""
        if self._suppress.size:
            logits[self._suppress] = -np.inf
        if first and self._begin_suppress.size:
            logits[self._begin_suppress] = -np.inf
        return logits

    def prompt(self, task: str, language_id: int | None) -> list[int]:
        """Start-of-transcript, [language, task,] no-timestamps: every id from the manifest."""
        info = self.info
        ids = [info.decoder_start_token_id]
        if not info.multilingual:
            if info.no_timestamps_token_id is not None:
                ids.append(info.no_timestamps_token_id)
            return ids
        if language_id is not None:
            ids.append(language_id)
        task_id = info.translate_token_id if task == "translate" else info.transcribe_token_id
        if task_id is not None and (language_id is not None or self.lang_ids):
            ids.append(task_id)
        if info.no_timestamps_token_id is not None:
            ids.append(info.no_timestamps_token_id)
        return ids

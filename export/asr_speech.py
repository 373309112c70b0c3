"""ASR validation on speech: the artifact, run by the device runtime, against transformers.

A synthetic signal says whether the graphs compute what PyTorch computes, but not whether a
quantized artifact still hears words: an int8 export once matched 1 of 32 greedy tokens on it
and passed. So an artifact of real weights is also checked on speech: the clips in
`export/data/speech.json` (short English sentences spoken by espeak-ng, 16 kHz, bundled so that
every host validates on the same samples). Each clip is decoded by the runtime's own `Whisper`
(features, prompt, suppression, greedy; full 30 s windows, as transformers pads) and by
transformers' `generate` on the PyTorch model (greedy, the same prompt: English). Reported:
clips whose tokens are identical (`speech_exact`, a fraction), token agreement (1 - token edit
distance / reference tokens) and the word error rate of the artifact's text against
transformers' text (`speech_wer`), plus both WERs against the spoken text, for reading.

Random-weight models (the test presets) hear nothing: their check stays on the synthetic
signal (shapes and logit parity), and the manifest says the speech check was not run.

`normalize`, `edit_distance` and `wer` are shared with the tests' speech set: lower case, no
punctuation, digits, times and prices as spoken words, so WER counts words heard wrong.
"""

from __future__ import annotations

import json
import re
import wave
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

SPEECH_INDEX = "data/speech.json"


def clips() -> list[tuple[str, np.ndarray, str]]:
    """(name, float32 samples at 16 kHz, spoken text) of the bundled clips."""
    data = resources.files("export").joinpath("data")
    out = []
    for item in json.loads(data.joinpath("speech.json").read_text(encoding="utf-8")):
        with resources.as_file(data.joinpath(item["file"])) as p, wave.open(str(p)) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
                raise ValueError(f"{p}: expected 16 kHz mono 16-bit")
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        out.append((str(item["file"]), pcm.astype(np.float32) / 32768.0, str(item["text"])))
    return out


def check(model: Any, fe: Any, folder: Path, m: Any) -> dict[str, Any]:
    """Speech metrics of the artifact being written in `folder` (manifest `m`, not yet
    written) against the PyTorch `model`."""
    import torch

    whisper = _runtime_whisper(folder, m)
    language = "en" if whisper.multilingual else None
    kwargs: dict[str, Any] = {"language": "en", "task": "transcribe"} if language else {}
    exact = edits = ref_tokens = 0
    pairs, spoken_art, spoken_ref = [], [], []
    per_clip = []
    for name, audio, text in clips():
        got = whisper.transcribe(audio, language=language)
        feats = fe(audio, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features
        with torch.no_grad():
            seq = model.generate(feats, **kwargs)[0].tolist()
        ref = [t for t in seq if t < model.config.vocab_size and t not in _specials(m)]
        ref_text = whisper.tokenizer.decode(ref).strip()
        exact += got.tokens == ref
        edits += edit_distance(ref, got.tokens)
        ref_tokens += len(ref)
        pairs.append((ref_text, got.text))
        spoken_art.append((text, got.text))
        spoken_ref.append((text, ref_text))
        per_clip.append({"clip": name, "reference": ref_text, "artifact": got.text})
    n = len(per_clip)
    return {
        "speech": f"{n} bundled espeak-ng clips ({SPEECH_INDEX}), runtime engine vs "
        "transformers generate",
        "speech_clips": n,
        "speech_exact": exact / max(1, n),
        "speech_token_agreement": 1.0 - edits / max(1, ref_tokens),
        "speech_wer": corpus_wer(pairs),
        "speech_wer_spoken_artifact": corpus_wer(spoken_art),
        "speech_wer_spoken_reference": corpus_wer(spoken_ref),
        "speech_transcripts": per_clip,
    }


def _specials(m: Any) -> set[int]:
    a = m.asr
    ids = {a.eos_token_id, a.sot_token_id, a.decoder_start_token_id}
    ids |= {t for t in (a.transcribe_token_id, a.translate_token_id, a.no_timestamps_token_id)}
    ids |= set(a.language_token_ids.values())
    return {int(t) for t in ids if t is not None}


def _runtime_whisper(folder: Path, m: Any) -> Any:
    from runtime.engine.asr import Whisper
    from runtime.engine.mel import LogMel
    from runtime.engine.session import open_session

    a = m.asr
    sessions = {
        role: open_session(folder / m.graphs[role].file, None, threads=2, cache=False, pin=False)
        for role in ("encoder", "decoder")
    }
    filters = np.load(folder / a.mel_filters, allow_pickle=False)
    mel = LogMel(filters, a.n_fft, a.hop_length, a.n_samples)
    return Whisper(a, sessions, mel, folder / "tokenizer.json", str(folder))


# -- WER -------------------------------------------------------------------------------------

ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SPELLING = {
    "centre": "center",
    "metres": "meters",
    "metre": "meter",
    "harbour": "harbor",
    "colour": "color",
}


def _number(n: int) -> str:
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = "" if n % 100 == 0 else " " + _number(n % 100)
        return ONES[n // 100] + " hundred" + rest
    if n < 1_000_000:
        rest = "" if n % 1000 == 0 else " " + _number(n % 1000)
        return _number(n // 1000) + " thousand" + rest
    return " ".join(ONES[int(d)] for d in str(n))


def _money(m: re.Match[str]) -> str:
    unit = {"£": "pounds", "$": "dollars", "€": "euros"}[m.group(1)]
    return f"{m.group(2)} {unit}" + (f" {m.group(3)}" if m.group(3) else "")


def normalize(text: str) -> list[str]:
    """Words, lower case, without punctuation; digits, times and prices as spoken words."""
    t = text.lower().replace("%", " percent")
    t = re.sub(r"([£$€])(\d+)(?:\.(\d\d))?", _money, t)
    t = re.sub(r"(\d+)[:.](\d\d)\b", lambda m: f"{m.group(1)} {m.group(2)}", t)
    t = re.sub(r"(\d),(\d{3})", r"\1\2", t)
    t = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", t)
    t = re.sub(r"\d+", lambda m: " " + _number(int(m.group())) + " ", t)
    t = re.sub(r"[^a-z' ]+", " ", t.replace("-", " "))
    words = [w.strip("'") for w in t.split()]
    return [SPELLING.get(w, w) for w in words if w]


def edit_distance(a: list[Any], b: list[Any]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> float:
    ref = normalize(reference)
    return edit_distance(ref, normalize(hypothesis)) / max(1, len(ref))


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Word errors over all pairs / reference words over all pairs."""
    errors = sum(edit_distance(normalize(r), normalize(h)) for r, h in pairs)
    return errors / max(1, sum(len(normalize(r)) for r, _ in pairs))

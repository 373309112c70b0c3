"""The Whisper engine against transformers: features, greedy decoding per task and language,
long audio in windows, the streaming recognizer, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.engine.asr import Whisper
from runtime.engine.asr_stream import LIVE_GUARD, StreamingRecognizer, Transcript
from runtime.engine.audio import read_wav
from runtime.engine.errors import ArtifactError, EngineUsageError, InputError
from runtime.engine.mel import LogMel
from runtime.engine.vad import Vad, speech_segments
from tests.test_engine_helpers import asr_artifact, hf_model, vad_artifact

DATA = Path(__file__).parent / "data"
RATE = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_wav(DATA / "speech_short.wav", RATE)


@pytest.fixture(scope="module")
def whisper() -> Whisper:
    """The default fp32 export: its decoder has the re-scoring head (tokens out, no logits)."""
    return Whisper.from_artifact(asr_artifact("tiny-whisper", "fp32"))


@pytest.fixture(scope="module")
def whisper_logits() -> Whisper:
    """The fp32 export with the logits head (`--head fp32`): the engine suppresses and takes
    the argmax itself."""
    return Whisper.from_artifact(asr_artifact("tiny-whisper", "fp32", head="fp32"))


def hf_generate(audio: np.ndarray, **kw: object) -> list[int]:
    import torch
    import transformers

    folder = hf_model("tiny-whisper")
    model = transformers.WhisperForConditionalGeneration.from_pretrained(folder).eval()
    fe = transformers.WhisperFeatureExtractor.from_pretrained(folder)
    feats = fe(audio, sampling_rate=RATE, return_tensors="pt").input_features
    with torch.no_grad():
        out = model.generate(feats, **kw)
    ids = out[0].tolist()
    eos = model.generation_config.eos_token_id
    return [t for t in ids if t != eos]


@pytest.mark.parametrize("kind", ["speech", "noise", "silence", "long"])
def test_log_mel_matches_transformers(speech: np.ndarray, kind: str) -> None:
    import transformers

    fe = transformers.WhisperFeatureExtractor.from_pretrained(hf_model("tiny-whisper"))
    rng = np.random.default_rng(1)
    audio = {
        "speech": speech,
        "noise": (rng.standard_normal(RATE * 5) * 0.1).astype(np.float32),
        "silence": np.zeros(RATE, np.float32),
        "long": np.tile(speech, 12)[: RATE * 30],
    }[kind]
    ref = fe(audio, sampling_rate=RATE, return_tensors="np").input_features[0]
    mel = LogMel(fe.mel_filters, fe.n_fft, fe.hop_length, fe.n_samples)
    ours = mel(audio)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("task", ["transcribe", "translate"])
@pytest.mark.parametrize("language", ["en", "fr", None])
def test_greedy_equals_transformers_generate(
    whisper: Whisper, speech: np.ndarray, task: str, language: str | None
) -> None:
    """The default fp32 artifact (the re-scoring head): suppressed tokens, the first
    position's suppression and language detection go through the head's mask; the tokens are
    transformers' greedy ones."""
    assert whisper.rescore and whisper.head == "rescore8"
    r = whisper.transcribe(speech, task=task, language=language)
    assert r.tokens == hf_generate(speech, task=task, language=language)
    assert r.language is not None and r.language in whisper.languages
    assert r.rtf > 0 and r.encoder_s > 0 and r.decoder_tokens >= len(r.tokens)


@pytest.mark.parametrize("task", ["transcribe", "translate"])
@pytest.mark.parametrize("language", ["en", None])
def test_logits_head_greedy_equals_transformers_generate(
    whisper_logits: Whisper,
    whisper: Whisper,
    speech: np.ndarray,
    task: str,
    language: str | None,
) -> None:
    """The logits head: the engine's own suppression and argmax give transformers' greedy
    tokens, and the same tokens as the re-scoring head over two windows of longer audio."""
    assert not whisper_logits.rescore and whisper_logits.head == "logits"
    r = whisper_logits.transcribe(speech, task=task, language=language)
    assert r.tokens == hf_generate(speech, task=task, language=language)
    if task == "transcribe" and language == "en":
        long = np.tile(speech, 12)[: RATE * 40]
        assert whisper.transcribe(long).tokens == whisper_logits.transcribe(long).tokens


def test_logits_are_refused_from_a_rescore_artifact(
    whisper: Whisper, whisper_logits: Whisper, tmp_path: Path
) -> None:
    """A caller that needs logits gets a clear refusal from a re-scoring artifact (with the
    fix), none from a logits one; a manifest that misstates the head is refused at load."""
    with pytest.raises(ArtifactError, match=r"parity needs the decoder's logits.*--head fp32"):
        whisper.require_logits("parity")
    whisper_logits.require_logits("parity")
    art = tmp_path / "art"
    shutil.copytree(asr_artifact("tiny-whisper", "fp32"), art)
    data = json.loads((art / "manifest.json").read_text())
    data["asr"]["extra"]["decoder_head"] = "logits"
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"'logits'.*'rescore8' head.*re-export"):
        Whisper.from_artifact(art)


def hf_generate_trimmed(audio: np.ndarray, frames: int, **kw: object) -> list[int]:
    """transformers' `generate` on the encoder states of `frames` feature frames only (the
    features of the audio padded to frames * hop samples, the positional table sliced)."""
    import torch
    import transformers
    from transformers.modeling_outputs import BaseModelOutput

    folder = hf_model("tiny-whisper")
    model = transformers.WhisperForConditionalGeneration.from_pretrained(folder).eval()
    fe = transformers.WhisperFeatureExtractor.from_pretrained(folder)
    feats = fe(
        audio, sampling_rate=RATE, max_length=frames * fe.hop_length, return_tensors="pt"
    ).input_features
    assert feats.shape[-1] == frames
    e = model.model.encoder
    with torch.no_grad():
        x = torch.nn.functional.gelu(e.conv1(feats))
        x = torch.nn.functional.gelu(e.conv2(x)).permute(0, 2, 1)
        x = x + e.embed_positions.weight[: x.shape[1]]
        for layer in e.layers:
            x = layer(x, None, layer_head_mask=None)[0]
        states = BaseModelOutput(last_hidden_state=e.layer_norm(x))
        out = model.generate(encoder_outputs=states, **kw)
    eos = model.generation_config.eos_token_id
    return [t for t in out[0].tolist() if t != eos]


def test_trimmed_encoding_equals_transformers_on_the_same_frames(speech: np.ndarray) -> None:
    """trim=True encodes only the frames the audio needs (an even count); the tokens equal
    transformers' `generate` on the encoder states of exactly those frames."""
    w = Whisper.from_artifact(asr_artifact("tiny-whisper", "fp32"), trim=True)
    assert w.trim
    for n in (speech.size, speech.size - 100, RATE // 2 + 80):
        audio = speech[:n]
        frames = w.frames(n, True)
        assert frames % 2 == 0 and frames * w.info.hop_length >= n
        assert frames < w.info.n_frames
        job = w.start(audio, language="en")
        job.step()
        assert job._cross_positions == frames // 2
        while not job.done:
            job.step()
        assert job.tokens == hf_generate_trimmed(audio, frames, language="en")


def test_transcribe_cli_trims_only_when_asked(speech: np.ndarray) -> None:
    """`ocula transcribe --trim`: the tokens of the trimmed window (transformers on the same
    frames); without it the clip is padded to the full window (tested in test_engine_cli)."""
    from tests.conftest import run_ocula

    art = asr_artifact("tiny-whisper", "fp32")
    wav = DATA / "speech_short.wav"
    r = run_ocula(
        "transcribe", str(art), str(wav), "--language", "en", "--trim", "--no-guard", "--json"
    )
    assert r.code == 0, r.err
    hop = Whisper.from_artifact(art).info.hop_length
    frames = -(-speech.size // hop)
    frames += frames % 2
    assert json.loads(r.out)["token_ids"] == hf_generate_trimmed(speech, frames, language="en")


def test_long_audio_is_decoded_in_30s_windows(whisper: Whisper, speech: np.ndarray) -> None:
    audio = np.concatenate([np.tile(speech, 12)[: RATE * 30], speech])
    r = whisper.transcribe(audio, language="en")
    assert [(s["start"], s["end"]) for s in r.segments] == [
        (0.0, 30.0),
        (30.0, round(audio.size / RATE, 3)),
    ]
    ref = hf_generate(audio[: RATE * 30], language="en") + hf_generate(
        audio[RATE * 30 :], language="en"
    )
    assert r.tokens == ref


def test_vad_segments_choose_the_windows(whisper: Whisper) -> None:
    audio = read_wav(DATA / "speech_padded.wav", RATE)
    segs = [(s.start, s.end) for s in speech_segments(Vad.from_artifact(vad_artifact()), audio)]
    assert whisper.windows(audio.size, segs) == [(segs[0][0], segs[-1][1])]
    long = [(0, RATE * 20), (RATE * 25, RATE * 40), (RATE * 41, RATE * 80)]
    wins = whisper.windows(RATE * 80, long)
    assert all(b - a <= RATE * 30 for a, b in wins)
    assert wins[0] == (0, RATE * 20) and wins[-1][1] == RATE * 80


def _stream(rec: StreamingRecognizer, audio: np.ndarray) -> list[Transcript]:
    out = []
    for i in range(0, audio.size, 512):
        rec.push(audio[i : i + 512])
        out += rec.step()
    rec.finish()
    while rec.busy:
        out += rec.step()
    return out


def test_streaming_commits_what_the_window_decodes_after_hearing_what_follows(
    whisper: Whisper,
) -> None:
    """No partials and no lag: the first utterance's words are committed from the decoding
    of the window up to the second utterance's end, the rest at `finish`; so the committed
    text is the window's whole decoding, as offline."""
    audio = read_wav(DATA / "speech_padded.wav", RATE)
    truth = json.loads((DATA / "speech_padded.json").read_text())["segments"]
    vad = Vad.from_artifact(vad_artifact())
    rec = StreamingRecognizer(
        whisper, vad, language="en", partial_every_s=None, lag_s=0.0, settle_s=5.0
    )
    out = _stream(rec, audio)
    assert out and {t.kind for t in out} == {"final"}
    first = out[0]  # committed by the second utterance's decoding, not the first's
    assert abs(first.start_s - truth[1][0]) < 0.15 and abs(first.end_s - truth[1][1]) < 0.15
    a, b = round(truth[0][0] * RATE) - rec.pad, round(first.end_s * RATE) + rec.pad
    job = whisper.start(audio[a : min(b, audio.size)], language="en", guard=LIVE_GUARD)
    while not job.done:
        job.step()
    assert job.tokens and [t for f in out for t in f.tokens] == job.tokens
    for f in out[1:]:  # later commits start where a word starts
        assert whisper.tokenizer.decode(f.tokens[:1]).startswith(" ")
    assert rec.decodes == {"partial": 0, "final": 2}


def test_streaming_partials_show_the_uncommitted_tail(whisper: Whisper) -> None:
    audio = read_wav(DATA / "speech_padded.wav", RATE)
    rec = StreamingRecognizer(
        whisper, Vad.from_artifact(vad_artifact()), language="en", partial_every_s=0.5
    )
    out = _stream(rec, audio)
    finals = [t for t in out if t.kind == "final"]
    partials = [t for t in out if t.kind == "partial"]
    assert finals and partials and rec.decodes["partial"] == len(partials)
    # the committed tokens are the window's, in order; nothing was decoded twice into them
    assert [t for f in finals for t in f.tokens] == rec.window.tokens
    assert not rec.busy and not rec.agreement.pending


def test_streaming_commits_after_a_silence_and_holds_at_most_a_window(whisper: Whisper) -> None:
    """Speech, then 40 s of silence, no `finish`: the pending text is committed after
    `settle_s` of silence, and the audio kept stays within one window (not the silence)."""
    speech = read_wav(DATA / "speech_padded.wav", RATE)
    audio = np.concatenate([speech, np.zeros(40 * RATE, np.float32)])
    rec = StreamingRecognizer(whisper, Vad.from_artifact(vad_artifact()), language="en")
    finals, kept, committed_at = [], 0, None
    for i in range(0, audio.size, 512):
        rec.push(audio[i : i + 512])
        while True:
            out = rec.step()
            finals += [t for t in out if t.kind == "final"]
            if not (out or rec.busy):
                break
        if committed_at is None and finals and not rec.agreement.pending and i > speech.size:
            committed_at = i / RATE
        kept = max(kept, rec._buf.size)  # the recognizer's audio buffer
    assert finals and not rec.agreement.pending and not rec.busy
    assert committed_at is not None and committed_at < speech.size / RATE + 2.0
    assert kept <= rec.window.size + 2 * RATE


def test_one_step_is_one_model_run(whisper: Whisper, speech: np.ndarray) -> None:
    job = whisper.start(speech, language="en")
    job.step()
    assert job.encoder_s > 0 and job.tokens == [] and job.decoder_s == 0
    job.step()
    assert len(job.tokens) == 1
    job.step()
    assert len(job.tokens) == 2


def test_int8_artifact_runs_and_mostly_agrees(speech: np.ndarray) -> None:
    w = Whisper.from_artifact(asr_artifact("tiny-whisper", "int8"))
    r = w.transcribe(speech, language="en", max_new_tokens=20)
    ref = hf_generate(speech, language="en")[:20]
    assert len(r.tokens) == 20
    assert r.tokens[:3] == ref[:3]


@pytest.mark.parametrize(
    ("audio", "rate", "match"),
    [
        (np.zeros(0, np.float32), RATE, "empty"),
        (np.full(RATE, np.nan, np.float32), RATE, "NaN"),
        (np.zeros((RATE, 2), np.float32), RATE, "one channel"),
        (np.zeros(RATE, np.float32), 8000, "8000 Hz"),
    ],
)
def test_bad_audio(whisper: Whisper, audio: np.ndarray, rate: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        whisper.transcribe(audio, rate=rate)


def test_bad_task_language_and_window(whisper: Whisper, speech: np.ndarray) -> None:
    with pytest.raises(EngineUsageError, match="unknown task"):
        whisper.transcribe(speech, task="summarise")
    with pytest.raises(EngineUsageError, match="unknown language 'xx'"):
        whisper.transcribe(speech, language="xx")
    with pytest.raises(InputError, match="longer than one 30 s window"):
        whisper.start(np.zeros(RATE * 31, np.float32))

"""`captions` and `translate` end to end on tiny models in virtual time: mic -> VAD -> ASR -> LLM."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from runtime.apps import Devices, make_app
from runtime.apps.translate import chat_prefix
from runtime.engine.asr import Whisper
from runtime.engine.asr_stream import LIVE_GUARD, Window
from runtime.engine.audio import read_wav
from runtime.engine.llm import Llm
from runtime.io import VirtualDisplay, WavSource
from runtime.sched import VirtualClock
from tests.apps_helpers import atlas, host, models_dir

DATA = Path(__file__).parent / "data"
SPEECH = DATA / "speech_padded.wav"
SEGMENTS = json.loads((DATA / "speech_padded.json").read_text())["segments"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    return models_dir(root / "models", ("vad", "asr", "llm")), atlas(root)


def _run(env, tmp_path: Path, app: str, wav: Path = SPEECH, **opts):
    models, glyphs = env
    clock = VirtualClock()
    display = VirtualDisplay(tmp_path / "display", 480, 640)
    h = host(
        models, Devices(audio=WavSource(wav, 16000, clock), display=display), glyphs, clock, **opts
    )
    assert h.add(make_app(app)), h.failures
    return h, h.run(60.0)


def test_captions_transcribe_each_utterance_like_the_asr_alone(env, tmp_path: Path) -> None:
    models, _ = env
    h, report = _run(env, tmp_path, "captions")
    summary = report.app_summaries["captions"]
    assert summary["utterances"] == len(SEGMENTS)
    # reference: the same ASR on the same segments, outside the runtime
    asr = Whisper.from_artifact(models / "asr")
    audio = read_wav(SPEECH, 16000)
    vad_cuts = [e["args"] for e in h.trace.instants("speech end")]
    expected = []
    # each final hears its window's audio from the start, the earlier finals forced (Window)
    window = Window(asr.info.n_samples - 2 * 16000)
    for cut in vad_cuts:
        start, forced, prev = window.span(cut["start"], cut["end"], True)
        job = asr.start(
            audio[start : cut["end"]], language="en", prev=prev, forced=forced, guard=LIVE_GUARD
        )
        while not job.done:
            job.step()
        window.done(job.tokens)
        expected.append(" ".join(job.text.strip().split()))
    assert [" ".join(c.split()) for c in summary["captions"]] == expected
    # the VAD's cuts lie around the known speech segments
    for cut, (a, b) in zip(vad_cuts, SEGMENTS, strict=True):
        assert abs(cut["start"] / 16000 - a) < 0.3 and abs(cut["end"] / 16000 - b) < 0.5
    c = report.metrics["counters"]
    assert c.get("audio.dropped_samples", 0) == 0
    assert c["audio.samples"] == len(audio)
    assert report.metrics["latency_s"]["speech_end_to_caption_s"]["count"] == len(SEGMENTS)
    assert summary["partial_updates"] >= 2
    assert "captions.retracted_words" in c


def test_translate_prefills_only_each_sentence_and_streams_to_the_display(
    env, tmp_path: Path
) -> None:
    models, _ = env
    h, report = _run(env, tmp_path, "translate", source_lang="en", target_lang="zh")
    s = report.app_summaries["translate"]
    assert len(s["translations"]) == len(SEGMENTS)
    llm = Llm.from_artifact(models / "llm")
    prefix = chat_prefix(llm, h.apps[0].system)
    assert len(prefix) > 5
    # every sentence reused the cached system prefix: only its own tokens were prefilled
    assert all(r >= len(prefix) for r in s["reused_prefix_tokens"])
    assert all(p > r for p, r in zip(s["prompt_tokens"], s["reused_prefix_tokens"], strict=True))
    # the tokens streamed to the screen are the generation's text
    shown = [p.text for p in h.screen.paras]
    assert shown[1::2] == s["translations"]
    lat = report.metrics["latency_s"]
    assert lat["speech_end_to_first_translation_s"]["count"] == len(SEGMENTS)
    assert lat["speech_end_to_first_translation_s"]["p50"] >= lat["speech_end_to_caption_s"]["p50"]


def _rewrite(src: Path, dst: Path, rate: int, channels: int, cut: float = 1.0) -> None:
    audio = read_wav(src, rate)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    pcm = np.repeat(pcm[:, None], channels, axis=1).reshape(-1)
    data = pcm.tobytes()
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)
    if cut < 1.0:
        raw = dst.read_bytes()
        dst.write_bytes(raw[: int(len(raw) * cut)])


def test_a_stereo_44k_wav_is_converted_and_said(env, tmp_path: Path) -> None:
    wav = tmp_path / "stereo.wav"
    _rewrite(SPEECH, wav, 44100, 2)
    _h, report = _run(env, tmp_path, "captions", wav=wav)
    assert any("resampled from 44100 Hz to 16000 Hz" in n for n in report.notes)
    assert any("2 channels mixed down" in n for n in report.notes)
    assert report.app_summaries["captions"]["utterances"] == len(SEGMENTS)


def test_a_truncated_wav_plays_what_is_there_and_says_so(env, tmp_path: Path) -> None:
    wav = tmp_path / "cut.wav"
    _rewrite(SPEECH, wav, 16000, 1, cut=0.6)
    _h, report = _run(env, tmp_path, "captions", wav=wav)
    assert any("truncated" in n for n in report.notes)
    assert report.app_summaries["captions"]["utterances"] >= 1


def test_governor_pausing_translation_keeps_captions(env, tmp_path: Path) -> None:
    models, glyphs = env
    clock = VirtualClock()
    h = host(models, Devices(audio=WavSource(SPEECH, 16000, clock)), glyphs, clock)
    assert h.add(make_app("translate"))
    h.governor._set(4, 0.0, "test: over budget", down=True)
    report = h.run(60.0)
    assert report.app_summaries["translate"]["translations"] == []
    assert report.metrics["counters"]["translate.skipped"] == len(SEGMENTS)
    assert report.app_summaries["translate"]["utterances"] == len(SEGMENTS)


def _hogged_run(env, tmp_path: Path, shed: bool):
    """Translate 8 sentences while, for the first 20 s, a job above the LLM's priority takes
    the whole inference worker (a CPU hog in virtual time); captions outrank it."""
    models, glyphs = env
    tmp_path.mkdir(parents=True, exist_ok=True)
    wav = tmp_path / "long.wav"
    audio = np.tile(read_wav(SPEECH, 16000), 4)
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    clock = VirtualClock()
    h = host(models, Devices(audio=WavSource(wav, 16000, clock)), glyphs, clock)
    if not shed:
        h.governor.max_pending, h.governor.max_age_s = 1000, 1e9
    assert h.add(make_app("translate"))
    h.sched.every("hog", 0.5, lambda now: 0.5 if now < 20.0 else 0.0, realtime=False, priority=15)
    return h, h.run(90.0)


def test_a_translation_backlog_is_shed_to_the_newest_sentence_and_said(env, tmp_path: Path) -> None:
    h, report = _hogged_run(env, tmp_path / "shed", shed=True)
    _, plain = _hogged_run(env, tmp_path / "plain", shed=False)
    s, c = report.app_summaries["translate"], report.metrics["counters"]
    sentences = 2 * len(SEGMENTS) * 2
    assert s["utterances"] == plain.app_summaries["translate"]["utterances"] == sentences
    # every sentence is either translated or skipped, and the skips are counted and said
    assert len(s["translations"]) + c.get("translate.skipped", 0) + s["skipped_backlog"] == (
        sentences
    )
    assert s["skipped_backlog"] >= 2 and c["translate.skipped_backlog"] == s["skipped_backlog"]
    assert h.trace.instants("skipped to the newest sentence")
    backlog = [e["args"] for e in h.trace.instants("governor") if e["args"]["ladder"] == "backlog"]
    assert [e["action"] for e in backlog][:2] == [
        "LLM tokens capped",
        "skipping to the newest sentence",
    ]
    assert "waited" in backlog[0]["reason"] or "waiting" in backlog[0]["reason"]
    # it recovers once the hog is gone, and the later sentences are translated in full
    assert backlog[-1]["action"].startswith("restored") and h.governor.policy.backlog_level == 0
    # what reaches the display is fresh: without shedding, the oldest sentences come out
    # after the whole backlog
    lat = report.metrics["latency_s"]["speech_end_to_first_translation_s"]
    lat_plain = plain.metrics["latency_s"]["speech_end_to_first_translation_s"]
    assert len(plain.app_summaries["translate"]["translations"]) == sentences
    assert lat["max"] < lat_plain["max"] - 3.0

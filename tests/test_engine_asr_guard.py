"""The loop guard and the previous-text prompt against transformers: a trimmed window that
loops stops early and is retried untrimmed (then equal to transformers' greedy tokens), the
no-speech probability and average log-probability equal transformers' from the same logits,
and `prev` equals transformers' `prompt_ids`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.engine.asr import Guard, Whisper
from runtime.engine.asr_guard import compression_ratio, strip_loop
from runtime.engine.audio import read_wav
from runtime.engine.errors import EngineUsageError
from tests.test_engine_helpers import asr_artifact, hf_model

DATA = Path(__file__).parent / "data"
RATE = 16000
HEADS = [None, "fp32"]  # the default re-scoring head (with its 8-bit scores), the logits head


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_wav(DATA / "speech_short.wav", RATE)


def _model() -> tuple[object, object]:
    import transformers

    folder = hf_model("tiny-whisper")
    model = transformers.WhisperForConditionalGeneration.from_pretrained(folder).eval()
    return model, transformers.WhisperFeatureExtractor.from_pretrained(folder)


def _run(w: Whisper, audio: np.ndarray, **kw: object) -> object:
    job = w.start(audio, language="en", **kw)  # type: ignore[arg-type]
    while not job.done:
        job.step()
    return job


def test_guard_rules() -> None:
    g = Guard()
    loop = "the town the town the town the town the town the town the town"
    assert compression_ratio(loop) > 2.4 and g.looping(loop)
    assert not g.looping("The harbour town woke slowly on winter mornings.")
    assert g.verdict("fine words", -0.2, 0.9) == (False, False)  # sure of its words: speech
    assert g.verdict("fine words", -1.5, 0.9) == (False, True)  # unsure and no-speech: silence
    assert g.verdict("fine words", -1.5, 0.1) == (True, False)  # unsure: retry
    assert g.verdict("fine words", None, None) == (False, False)  # the head gave no signals
    assert strip_loop([1, 2, 3, 4, 5, 4, 5, 4, 5, 4]) == [1, 2, 3, 4, 5]
    assert strip_loop([1, 2, 3]) == [1, 2, 3]
    with pytest.raises(EngineUsageError, match=r"start at 0\.0"):
        Guard(temperatures=(0.2,))


@pytest.mark.parametrize("head", HEADS)
def test_a_looping_trimmed_window_stops_early_and_is_retried_untrimmed(head: str | None) -> None:
    """Short noise, trimmed, loops to the token limit unguarded; guarded, the attempt stops
    within a few tokens of the loop and the window is decoded again untrimmed: transformers'
    greedy tokens on the padded window."""
    import torch

    noise = (np.random.default_rng(0).standard_normal(8000) * 0.1).astype(np.float32)
    w = Whisper.from_artifact(asr_artifact("tiny-whisper", "fp32", head=head), trim=True)
    limit = w.info.max_target_positions
    bare = _run(w, noise)
    assert compression_ratio(bare.text) > 2.4  # type: ignore[attr-defined]
    guarded = _run(w, noise, guard=Guard())
    assert guarded.fallbacks == 1 and guarded.trim is False  # type: ignore[attr-defined]
    first_attempt = guarded.decoder_runs - len(guarded.tokens) - 1  # type: ignore[attr-defined]
    assert first_attempt < limit // 2
    model, fe = _model()
    feats = fe(noise, sampling_rate=RATE, return_tensors="pt").input_features  # type: ignore[operator]
    with torch.no_grad():
        ref = model.generate(feats, language="en")[0].tolist()  # type: ignore[attr-defined]
    eos = w.info.eos_token_id
    assert guarded.tokens == [t for t in ref if t != eos]  # type: ignore[attr-defined]


@pytest.mark.parametrize("head", HEADS)
def test_no_speech_and_logprob_equal_transformers(speech: np.ndarray, head: str | None) -> None:
    """The no-speech probability (softmax at the start-of-transcript position) and the average
    log-probability of the greedy tokens (suppression applied, EOS included), from
    transformers' logits; the re-scoring head's 8-bit scores to a looser tolerance."""
    import torch

    w = Whisper.from_artifact(asr_artifact("tiny-whisper", "fp32", head=head))
    job = _run(w, speech, guard=Guard())
    model, fe = _model()
    feats = fe(speech, sampling_rate=RATE, return_tensors="pt").input_features  # type: ignore[operator]
    sot = w.info.decoder_start_token_id
    with torch.no_grad():
        first = model(feats, decoder_input_ids=torch.tensor([[sot]])).logits[0, -1]  # type: ignore[operator]
        out = model.generate(  # type: ignore[attr-defined]
            feats, language="en", output_scores=True, return_dict_in_generate=True
        )
    no_speech = float(first.softmax(-1)[w.info.no_speech_token_id])
    gen = out.sequences[0, -len(out.scores) :]
    lp = sum(
        float(torch.log_softmax(s[0], -1)[t]) for s, t in zip(out.scores, gen.tolist(), strict=True)
    )
    tol = 1e-3 if head == "fp32" else 3e-2
    assert job.no_speech_prob == pytest.approx(no_speech, abs=1e-4)  # type: ignore[attr-defined]
    assert job.avg_logprob == pytest.approx(lp / len(out.scores), abs=tol)  # type: ignore[attr-defined]
    assert job.fallbacks == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("head", HEADS)
def test_previous_text_equals_transformers_prompt_ids(speech: np.ndarray, head: str | None) -> None:
    import torch

    w = Whisper.from_artifact(asr_artifact("tiny-whisper", "fp32", head=head))
    prev = w.tokenizer.encode(" harbour town mornings").ids
    start_of_prev = w.tokenizer.token_to_id("<|startofprev|>")
    job = _run(w, speech, prev=prev)
    assert job.prompt[: len(prev) + 1] == [start_of_prev, *prev]  # type: ignore[attr-defined]
    model, fe = _model()
    feats = fe(speech, sampling_rate=RATE, return_tensors="pt").input_features  # type: ignore[operator]
    with torch.no_grad():
        ref = model.generate(  # type: ignore[attr-defined]
            feats, language="en", prompt_ids=torch.tensor([start_of_prev, *prev])
        )[0].tolist()
    assert job.tokens == [t for t in ref if t != w.info.eos_token_id]  # type: ignore[attr-defined]


@pytest.mark.parametrize("head", HEADS)
def test_forced_start_is_continued_as_transformers_continues_it(
    speech: np.ndarray, head: str | None
) -> None:
    """`forced` (a window's earlier finals) goes after the prompt and only the rest is
    decoded: transformers' greedy continuation of the same ids (suppression as generate
    applies it, the begin suppression at the first generated position)."""
    import torch

    w = Whisper.from_artifact(asr_artifact("tiny-whisper", "fp32", head=head))
    forced = _run(w, speech).tokens[:10]  # type: ignore[attr-defined]
    job = _run(w, speech, forced=forced)
    assert job.prompt[-10:] == forced  # type: ignore[attr-defined]
    model, fe = _model()
    feats = fe(speech, sampling_rate=RATE, return_tensors="pt").input_features  # type: ignore[operator]
    ids, out = list(job.prompt), []  # type: ignore[attr-defined]
    with torch.no_grad():
        for i in range(w.info.max_target_positions - len(ids)):
            logits = model(feats, decoder_input_ids=torch.tensor([ids])).logits[0, -1]  # type: ignore[operator]
            logits[w.info.suppress_tokens] = -np.inf
            if i == 0:
                logits[w.info.begin_suppress_tokens] = -np.inf
            token = int(logits.argmax())
            if token == w.info.eos_token_id:
                break
            out.append(token)
            ids.append(token)
    assert job.tokens == out  # type: ignore[attr-defined]

"""`ocula generate` and `ocula transcribe` as a user runs them."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

from tests.conftest import run_ocula
from tests.test_engine_asr import hf_generate
from tests.test_engine_helpers import asr_artifact, hf_model, llm_artifact, vad_artifact
from tests.test_engine_llm import hf_greedy

DATA = Path(__file__).parent / "data"


def test_generate_json_tokens_equal_transformers_greedy() -> None:
    art = llm_artifact("tiny-qwen2", "fp32", "fused")
    prompt = "The harbour wakes slowly"
    r = run_ocula("generate", str(art), "--prompt", prompt, "--max-new-tokens", "12", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    ref = hf_greedy("tiny-qwen2", out["prompt_ids"], 12)
    n = len(out["token_ids"])
    assert out["token_ids"] == ref[:n] and (n == 12 or out["finish_reason"] == "eos")
    assert out["ttft_s"] > 0 and set(out) >= {"text", "decode_tokens_per_s"}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(hf_model("tiny-qwen2") / "tokenizer.json"))
    assert out["prompt_ids"] == tok.encode(prompt).ids


def test_generate_streams_the_same_text_and_renders_chat() -> None:
    art = llm_artifact("tiny-qwen2", "fp32", "fused")
    args = ("generate", str(art), "--prompt", "Hello", "--max-new-tokens", "8", "--chat")
    plain = run_ocula(*args)
    js = run_ocula(*args, "--json")
    assert plain.code == 0 and js.code == 0, plain.err + js.err
    assert plain.out == json.loads(js.out)["text"] + "\n"
    assert "tokens" in plain.err and "first token" in plain.err


def test_generate_lookup_gives_plain_greedy_tokens_and_uses_the_draft() -> None:
    art = str(llm_artifact("tiny-qwen2", "fp32", "fused"))
    args = ("generate", art, "--prompt", "The harbour wakes slowly", "--max-new-tokens", "16")
    plain = run_ocula(*args, "--json")
    assert plain.code == 0, plain.err
    want = json.loads(plain.out)
    assert "lookup" not in want
    # The plain output as the draft (a re-translation's previous text): the same tokens, and
    # the draft is verified several tokens per run.
    r = run_ocula(*args, "--json", "--lookup", "--draft", want["text"])
    assert r.code == 0, r.err
    got = json.loads(r.out)
    assert got["token_ids"] == want["token_ids"] and got["text"] == want["text"]
    stats = got["lookup"]
    assert stats["verify_runs"] >= 1 and 0 < stats["accepted"] <= stats["drafted"]
    r = run_ocula(*args, "--lookup", "--temperature", "0.7")
    assert r.code == 2 and "greedy" in r.err and "Traceback" not in r.err
    r = run_ocula(*args, "--draft", "x")
    assert r.code == 2 and "--draft needs --lookup" in r.err
    # A graph that scores one position per run decodes plainly and says so.
    opt = str(llm_artifact("tiny-qwen2", "fp32", "optimum"))
    r = run_ocula("generate", opt, *args[2:], "--json", "--lookup")
    assert r.code == 0 and "decoding without drafts" in r.err, r.err
    assert json.loads(r.out)["lookup"]["verify_runs"] == 0


def test_generate_bad_input(tmp_path: Path) -> None:
    art = str(llm_artifact("tiny-qwen2", "fp32", "fused"))
    r = run_ocula("generate", str(tmp_path / "nope"), "--prompt", "x")
    assert r.code == 1 and "no such artifact folder" in r.err and "Traceback" not in r.err
    r = run_ocula("generate", str(vad_artifact()), "--prompt", "x")
    assert r.code == 1 and "'vad' artifact, but a 'llm'" in r.err
    r = run_ocula("generate", art, "--prompt", "x", "--top-p", "2")
    assert r.code == 2 and "top-p" in r.err and "Traceback" not in r.err
    r = run_ocula("generate", art, "--prompt", "word " * 400)
    assert r.code == 1 and "max length" in r.err and "Traceback" not in r.err


def test_transcribe_json_equals_transformers_and_vad_skips_silence() -> None:
    from runtime.engine.audio import read_wav

    art = str(asr_artifact("tiny-whisper", "fp32"))
    wav = DATA / "speech_short.wav"
    r = run_ocula("transcribe", art, str(wav), "--language", "en", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["token_ids"] == hf_generate(read_wav(wav, 16000), language="en")
    assert out["rtf"] > 0 and out["timings"]["encoder_s"] > 0
    padded = DATA / "speech_padded.wav"
    r = run_ocula(
        "transcribe",
        art,
        str(padded),
        "--vad",
        str(vad_artifact()),
        "--json",
        "--task",
        "translate",
    )
    assert r.code == 0, r.err
    seg = json.loads(r.out)["segments"]
    assert len(seg) == 1 and 0.8 < seg[0]["start"] < 1.0 and 7.3 < seg[0]["end"] < 7.6


def test_transcribe_resamples_and_refuses_bad_files(tmp_path: Path) -> None:
    art = str(asr_artifact("tiny-whisper", "fp32"))
    stereo = tmp_path / "st.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(np.zeros((44100, 2), "<i2").tobytes())
    r = run_ocula("-v", "transcribe", art, str(stereo), "--language", "en")
    assert r.code == 0, r.err
    assert "mixed down" in r.err and "resampled from 44100 Hz" in r.err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    r = run_ocula("transcribe", art, str(bad))
    assert r.code == 1 and "not a readable PCM WAV" in r.err
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    r = run_ocula("transcribe", art, str(empty))
    assert r.code == 1 and "empty" in r.err
    r = run_ocula("transcribe", art, str(DATA / "speech_short.wav"), "--language", "xx")
    assert r.code == 2 and "unknown language" in r.err


def test_generate_sizes_the_kv_cache_to_the_run() -> None:
    art = str(llm_artifact("tiny-qwen2", "fp32", "fused"))
    r = run_ocula(
        "generate", art, "--prompt", "The harbour wakes", "--max-new-tokens", "20", "--json"
    )
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["max_length"] == out["prompt_tokens"] + 20
    r = run_ocula("generate", art, "--prompt", "x", "--max-length", "64", "--json")
    assert r.code == 0 and json.loads(r.out)["max_length"] == 64, r.err
    # a length above the artifact's is refused, naming the limit; nothing is clamped
    r = run_ocula("generate", art, "--prompt", "x", "--max-length", "100000")
    assert r.code == 2 and "above this artifact's 256 tokens" in r.err, r.err
    assert "Traceback" not in r.err and r.err.count("\n") == 1
    # absurd lengths never reach the engine: the argument's own bounds refuse them
    for absurd in ("1000000000000", "4"):
        r = run_ocula("generate", art, "--prompt", "x", "--max-length", absurd)
        assert r.code == 2 and "must be 16 to 1048576" in r.err, r.err

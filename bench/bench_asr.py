"""ASR side by side with its peers: Ocula's Whisper engine, optimum, PyTorch.

whisper-tiny and whisper-base random weights at fp32, 5 s and 30 s clips, exactly 50 decoded
tokens: Ocula's engine, PyTorch eager `generate`, optimum's ORTModelForSpeechSeq2Seq on
optimum's own export of the same weights. Every measurement runs in a fresh process with 2
intra-op threads, peers alternating round by round; figures are medians over the rounds.

Models are built once into `.cache/bench-engines/` (shared with `bench_engines`; delete it to
rebuild).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_engines import (
    CACHE,
    ROOT,
    ROUNDS,
    THREADS,
    _hf,
    _median_rounds,
    _rss_mb,
    run_worker,
)

ASR_TOKENS = 50


def _asr(preset: str, head: str = "fp32") -> Path:
    """Ocula's fp32 artifact (`head`: the decoder's head, see `AsrOptions.head`), re-exported
    whenever the ASR export code has changed."""
    import hashlib

    code = hashlib.sha256()
    for name in ("asr.py", "asr_graphs.py", "graphquant.py"):
        code.update((ROOT / "export" / name).read_bytes())
    out = CACHE / preset / ("ocula-fp32" if head == "fp32" else f"ocula-fp32-{head}")
    key = out / ".export-code"
    if not key.is_file() or key.read_text() != code.hexdigest():
        from export.asr import AsrOptions, export_asr

        export_asr(
            str(_hf(preset)),
            out,
            AsrOptions(quant="fp32", validate=False, force=True, head=head),
        )
        key.write_text(code.hexdigest())
    return out


def _optimum_asr(preset: str) -> Path:
    out = CACHE / preset / "optimum"
    if not (out / "encoder_model.onnx").exists():
        from optimum.exporters.onnx import main_export

        main_export(str(_hf(preset)), output=out, task="automatic-speech-recognition-with-past")
    return out


def _clip(seconds: float) -> np.ndarray:
    from runtime.engine.audio import read_wav

    speech = read_wav(ROOT / "tests" / "data" / "speech_padded.wav", 16000)
    return np.tile(speech, 1 + int(seconds * 16000) // speech.size)[: int(seconds * 16000)]


# -- workers (each in its own process) ----------------------------------------------------------


def worker_ocula_asr(path: str, seconds: float, reps: int, trim: bool) -> dict[str, Any]:
    from runtime.engine.asr import Whisper

    w = Whisper.from_artifact(path, threads=THREADS, trim=trim)
    w.info.eos_token_id = -1  # decode exactly ASR_TOKENS tokens
    audio = _clip(seconds)
    keys = ("total", "encoder", "features", "dec_ms", "overhead", "rescored")
    res: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(reps + 1):
        t0 = time.perf_counter()
        job = w.start(audio, language="en", max_new_tokens=ASR_TOKENS)
        while not job.done:
            job.step()
        total = time.perf_counter() - t0
        if r:
            res["total"].append(total)
            res["encoder"].append(job.encoder_s)
            res["features"].append(job.features_s)
            res["dec_ms"].append(1000 * job.decoder_s / len(job.tokens))
            # Python's share of a one-token step (the first token, with the prompt, aside).
            steps = job.decoder_s - job.first_s
            res["overhead"].append(1 - job.session_s / steps)
            # Re-scoring head: tokens re-scored in fp32 per decoder run (0 for the fp32 head).
            res["rescored"].append(job.rescored / (job.decoder_runs + 1))
    med = {k: statistics.median(v) for k, v in res.items()}
    return med | {"rtf": med["total"] / seconds, "rss_mb": _rss_mb()}


def worker_trim_agreement(hf: str, path: str, seconds: list[float]) -> dict[str, Any]:
    """Greedy tokens (up to ASR_TOKENS, EOS honoured) of trimmed and padded encoding, each
    against transformers' `generate` on the padded input, for clips of the given lengths."""
    import torch
    import transformers

    from runtime.engine.asr import Whisper

    torch.set_num_threads(THREADS)
    model = transformers.WhisperForConditionalGeneration.from_pretrained(hf).eval()
    fe = transformers.WhisperFeatureExtractor.from_pretrained(hf)
    padded = Whisper.from_artifact(path, threads=THREADS)
    trimmed = Whisper.from_artifact(path, threads=THREADS, trim=True)
    eos = model.generation_config.eos_token_id
    out: dict[str, Any] = {}
    for s in seconds:
        audio = _clip(s)
        feats = fe(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(feats, language="en", max_new_tokens=ASR_TOKENS)[0].tolist()
        ref = [t for t in ids if t != eos]  # generate returns the new tokens only
        row: dict[str, float] = {"reference_tokens": len(ref)}
        for name, w in (("padded", padded), ("trimmed", trimmed)):
            got = w.transcribe(audio, language="en", max_new_tokens=ASR_TOKENS).tokens
            same = next(
                (i for i, (a, b) in enumerate(zip(got, ref, strict=False)) if a != b),
                min(len(got), len(ref)),
            )
            row[f"{name}_equal"] = float(got == ref)
            row[f"{name}_common_prefix"] = same
            row[f"{name}_positionwise"] = round(
                sum(a == b for a, b in zip(got, ref, strict=False)) / max(len(ref), len(got), 1), 3
            )
        out[f"{s:g}s"] = row
    return out


def worker_hf_asr(folder: str, seconds: float, reps: int, engine: str) -> dict[str, Any]:
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    fe = transformers.WhisperFeatureExtractor.from_pretrained(folder)
    if engine == "optimum":
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForSpeechSeq2Seq

        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        model: Any = ORTModelForSpeechSeq2Seq.from_pretrained(
            folder, use_cache=True, session_options=so, provider="CPUExecutionProvider"
        )
        encode = model.encoder
    else:
        model = transformers.WhisperForConditionalGeneration.from_pretrained(folder).eval()
        encode = model.model.encoder
    audio = _clip(seconds)
    res: dict[str, list[float]] = {"total": [], "encoder": [], "dec_ms": []}
    for r in range(reps + 1):
        t0 = time.perf_counter()
        feats = fe(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            t1 = time.perf_counter()
            if engine == "optimum":
                encode(feats, attention_mask=torch.ones(feats.shape[:1] + feats.shape[2:]))
            else:
                encode(feats)
            t2 = time.perf_counter()
            out = model.generate(
                feats, language="en", max_new_tokens=ASR_TOKENS, min_new_tokens=ASR_TOKENS
            )
        total = time.perf_counter() - t0
        # generate runs the encoder again: decoder time = generate - one encoder pass
        dec = (time.perf_counter() - t2) - (t2 - t1)
        if r:
            res["total"].append(total - (t2 - t1))
            res["encoder"].append(t2 - t1)
            res["dec_ms"].append(1000 * dec / min(out.shape[1], ASR_TOKENS))
    med = {k: statistics.median(v) for k, v in res.items()}
    med |= {"rtf": med["total"] / seconds, "rss_mb": _rss_mb()}  # before the extra sessions
    if engine == "optimum":
        med["cross_kv"] = _optimum_cross_kv(Path(folder), model, feats)
    return med


def _optimum_cross_kv(folder: Path, model: Any, feats: Any) -> float:
    """What optimum's cross-attention K/V cost: its first decoder graph (no past; it computes
    every layer's cross K/V from the encoder states) minus a with-past step, both on one
    token, run on onnxruntime sessions of optimum's own files with the same options."""
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    first = ort.InferenceSession(str(folder / "decoder_model.onnx"), so)
    step = ort.InferenceSession(str(folder / "decoder_with_past_model.onnx"), so)
    with torch.no_grad():
        mask = torch.ones(feats.shape[:1] + feats.shape[2:])
        states = model.encoder(feats, attention_mask=mask).last_hidden_state.numpy()
    ids = np.array([[model.config.decoder_start_token_id]], np.int64)
    out = first.run(None, {"input_ids": ids, "encoder_hidden_states": states})
    names = [o.name for o in first.get_outputs()][1:]
    past = {
        n.replace("present.", "past_key_values."): v for n, v in zip(names, out[1:], strict=True)
    }
    feeds = {"input_ids": ids} | {
        k: v for k, v in past.items() if k in {i.name for i in step.get_inputs()}
    }
    t_first, t_step = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        first.run(None, {"input_ids": ids, "encoder_hidden_states": states})
        t1 = time.perf_counter()
        step.run(None, feeds)
        t2 = time.perf_counter()
        t_first.append(t1 - t0)
        t_step.append(t2 - t1)
    return statistics.median(t_first) - statistics.median(t_step)


WORKERS = {
    "ocula_asr": worker_ocula_asr,
    "hf_asr": worker_hf_asr,
    "trim_agreement": worker_trim_agreement,
}


def _spawn(name: str, *args: Any) -> dict[str, Any]:
    return run_worker(name, [sys.executable, "-m", "bench.bench_asr", name, json.dumps(list(args))])


# -- the suite --------------------------------------------------------------------------------


def bench_asr(preset: str) -> dict[str, Any]:
    art, opt, hf = _asr(preset), _optimum_asr(preset), _hf(preset)
    rescore = _asr(preset, "rescore8")
    out: dict[str, Any] = {}
    clips = os.environ.get("OCULA_BENCH_ASR_CLIPS", "5,30").split(",")
    for seconds in (float(c) for c in clips):
        engines = (
            ["ocula", "ocula_rescore", "ocula_trim", "optimum", "torch"]
            if seconds < 30
            else ["ocula", "ocula_rescore", "optimum", "torch"]
        )
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in engines}
        for _ in range(ROUNDS):
            for k in engines:
                if k.startswith("ocula"):
                    path = rescore if k == "ocula_rescore" else art
                    runs[k].append(_spawn("ocula_asr", str(path), seconds, 2, k == "ocula_trim"))
                else:
                    folder = opt if k == "optimum" else hf
                    runs[k].append(_spawn("hf_asr", str(folder), seconds, 1, k))
        res = {k: _median_rounds(v) for k, v in runs.items()}
        for k in (k for k in engines if k.startswith("ocula")):
            o = res[k]
            o["rtf_gain_vs_optimum"] = round(res["optimum"]["rtf"] / o["rtf"], 2)
            o["rtf_gain_vs_torch"] = round(res["torch"]["rtf"] / o["rtf"], 2)
            o["encoder_vs_optimum"] = round(res["optimum"]["encoder"] / o["encoder"], 2)
            with_kv = res["optimum"]["encoder"] + res["optimum"]["cross_kv"]
            o["encoder_vs_optimum_with_cross_kv"] = round(with_kv / o["encoder"], 2)
            o["dec_ms_vs_optimum"] = round(res["optimum"]["dec_ms"] / o["dec_ms"], 2)
            o["dec_ms_vs_ocula"] = round(res["ocula"]["dec_ms"] / o["dec_ms"], 2)
        out[f"{int(seconds)}s"] = res
    if "5" in clips:
        out["trim_agreement"] = _spawn("trim_agreement", str(hf), str(art), [5.0, 20.0])
    return out


def run(out_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    result: dict[str, Any] = {"threads": THREADS, "tokens": ASR_TOKENS}
    only = set(filter(None, os.environ.get("OCULA_BENCH_ASR", "").split(",")))
    for preset in ("whisper-tiny", "whisper-base"):
        if only and preset not in only:
            continue
        result[preset] = bench_asr(preset)
        (out_dir / "bench_asr.partial.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    name, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(WORKERS[name](*args)))

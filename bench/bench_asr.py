"""ASR side by side with its peers: Ocula's Whisper engine, optimum, PyTorch.

whisper-tiny and whisper-base random weights at fp32, 5 s and 30 s clips, exactly 50 decoded
tokens: Ocula's engine (the default fp32 export, whose decoder has the re-scoring head, and the
same export with the logits head), PyTorch eager `generate`, optimum's ORTModelForSpeechSeq2Seq
on optimum's own export of the same weights. Every measurement runs in a fresh process with 2
intra-op threads, peers alternating round by round; figures are medians over the rounds.

`OCULA_BENCH_ASR_QUANT=int8` (or `fp32,int8`) adds a round set at int8 on both sides: Ocula's
int8 artifact against optimum running its own export quantized by optimum's `ORTQuantizer`
(dynamic int8, the AVX-512 VNNI preset), PyTorch left out.

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
    hf_folder,
    median_rounds,
    rss_mb,
    run_worker,
)

ASR_TOKENS = 50


def _asr(preset: str, head: str | None = None, quant: str = "fp32") -> Path:
    """Ocula's artifact (`head`: the decoder's head, see `AsrOptions.head`; None: the export's
    default), re-exported whenever the ASR export code has changed."""
    import hashlib

    from export.asr import AsrOptions, default_head, export_asr

    head = head or default_head(quant)
    code = hashlib.sha256()
    for name in ("asr.py", "asr_graphs.py", "graphquant.py"):
        code.update((ROOT / "export" / name).read_bytes())
    out = CACHE / preset / (f"ocula-{quant}" if head == "fp32" else f"ocula-{quant}-{head}")
    key = out / ".export-code"
    if not key.is_file() or key.read_text() != code.hexdigest():
        opts = AsrOptions(quant=quant, validate=False, force=True, head=head)
        export_asr(str(hf_folder(preset)), out, opts)
        key.write_text(code.hexdigest())
    return out


def _optimum_asr(preset: str, quant: str = "fp32") -> Path:
    out = CACHE / preset / "optimum"
    if not (out / "encoder_model.onnx").exists():
        from optimum.exporters.onnx import main_export

        main_export(
            str(hf_folder(preset)), output=out, task="automatic-speech-recognition-with-past"
        )
    return out if quant == "fp32" else _optimum_int8(out)


def _optimum_int8(fp32: Path) -> Path:
    """optimum's export quantized by optimum's own `ORTQuantizer` (dynamic int8, its AVX-512
    VNNI preset: u8 activations, s8 weights, per tensor), the files under their usual names,
    so `ORTModelForSpeechSeq2Seq` loads them as it loads the fp32 ones (merged decoder)."""
    import shutil

    out = fp32.parent / "optimum-int8"
    if (out / "decoder_model_merged.onnx").exists():
        return out
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    tmp = fp32.parent / ".optimum-int8-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in fp32.iterdir():
        if f.suffix != ".onnx":
            shutil.copy2(f, tmp / f.name)
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    for name in ("encoder_model.onnx", "decoder_model_merged.onnx"):
        q = ORTQuantizer.from_pretrained(fp32, file_name=name)
        q.quantize(config, save_dir=tmp / "q", file_suffix="")
        shutil.move(tmp / "q" / name, tmp / name)
    shutil.rmtree(tmp / "q")
    tmp.rename(out)
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
    return med | {"rtf": med["total"] / seconds, "rss_mb": rss_mb()}


def _agreement(ref: list[int], got: dict[str, list[int]]) -> dict[str, float]:
    """How far each engine's tokens agree with the reference: common prefix, share equal by position."""
    row: dict[str, float] = {"reference_tokens": len(ref)}
    for name, toks in got.items():
        row[f"{name}_common_prefix"] = next(
            (i for i, (a, b) in enumerate(zip(toks, ref, strict=False)) if a != b),
            min(len(toks), len(ref)),
        )
        row[f"{name}_positionwise"] = round(
            sum(a == b for a, b in zip(toks, ref, strict=False)) / max(len(ref), len(toks), 1), 3
        )
    return row


def _transformers_greedy(hf: str) -> tuple[Any, Any, Any]:
    """transformers' fp32 Whisper from `hf`, the features of a clip, and greedy `generate`
    (up to ASR_TOKENS, EOS honoured and dropped) of any model with transformers' API."""
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    model = transformers.WhisperForConditionalGeneration.from_pretrained(hf).eval()
    fe = transformers.WhisperFeatureExtractor.from_pretrained(hf)
    eos = model.generation_config.eos_token_id

    def features(audio: np.ndarray) -> Any:
        return fe(audio, sampling_rate=16000, return_tensors="pt").input_features

    def greedy(m: Any, feats: Any) -> list[int]:
        with torch.no_grad():
            ids = m.generate(feats, language="en", max_new_tokens=ASR_TOKENS)[0].tolist()
        return [t for t in ids if t != eos]  # generate returns the new tokens only

    return model, features, greedy


def worker_trim_agreement(hf: str, path: str, seconds: list[float]) -> dict[str, Any]:
    """Greedy tokens (up to ASR_TOKENS, EOS honoured) of trimmed and padded encoding, each
    against transformers' `generate` on the padded input, for clips of the given lengths."""
    from runtime.engine.asr import Whisper

    model, features, greedy = _transformers_greedy(hf)
    padded = Whisper.from_artifact(path, threads=THREADS)
    trimmed = Whisper.from_artifact(path, threads=THREADS, trim=True)
    out: dict[str, Any] = {}
    for s in seconds:
        audio = _clip(s)
        ref = greedy(model, features(audio))
        got = {
            name: w.transcribe(audio, language="en", max_new_tokens=ASR_TOKENS).tokens
            for name, w in (("padded", padded), ("trimmed", trimmed))
        }
        row = _agreement(ref, got)
        for name, toks in got.items():
            row[f"{name}_equal"] = float(toks == ref)
        out[f"{s:g}s"] = row
    return out


def worker_int8_agreement(
    hf: str, ocula: str, optimum: str, seconds: list[float]
) -> dict[str, Any]:
    """Greedy tokens (up to ASR_TOKENS, EOS honoured) of Ocula's int8 artifact and of optimum on
    its int8 files, each against transformers' fp32 `generate` on the same padded input."""
    from optimum.onnxruntime import ORTModelForSpeechSeq2Seq

    from runtime.engine.asr import Whisper

    model, features, greedy = _transformers_greedy(hf)
    opt = ORTModelForSpeechSeq2Seq.from_pretrained(optimum, use_cache=True)
    ours = Whisper.from_artifact(ocula, threads=THREADS)
    out: dict[str, Any] = {}
    for s in seconds:
        audio = _clip(s)
        feats = features(audio)
        got = {
            "ocula_int8": ours.transcribe(audio, language="en", max_new_tokens=ASR_TOKENS).tokens,
            "optimum_int8": greedy(opt, feats),
        }
        out[f"{s:g}s"] = _agreement(greedy(model, feats), got)
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
    med |= {"rtf": med["total"] / seconds, "rss_mb": rss_mb()}  # before the extra sessions
    if engine == "optimum" and (Path(folder) / "decoder_with_past_model.onnx").exists():
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
    "int8_agreement": worker_int8_agreement,
}


def _spawn(name: str, *args: Any) -> dict[str, Any]:
    return run_worker(name, [sys.executable, "-m", "bench.bench_asr", name, json.dumps(list(args))])


# -- the suite --------------------------------------------------------------------------------


def bench_asr(preset: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    clips = os.environ.get("OCULA_BENCH_ASR_CLIPS", "5,30").split(",")
    quants = os.environ.get("OCULA_BENCH_ASR_QUANT", "fp32").split(",")
    hf = hf_folder(preset)
    for quant in quants:
        # "ocula": the export's default (fp32: the re-scoring head; int8: its logits head);
        # "ocula_logits": the fp32 export with the logits head (`--head fp32`).
        arts = {"ocula": _asr(preset, quant=quant), "ocula_trim": _asr(preset, quant=quant)}
        if quant == "fp32":
            arts["ocula_logits"] = _asr(preset, "fp32")
        opt = _optimum_asr(preset, quant)
        for seconds in (float(c) for c in clips):
            engines = [k for k in arts if seconds < 30 or k != "ocula_trim"] + ["optimum"]
            engines += ["torch"] if quant == "fp32" else []
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in engines}
            for _ in range(ROUNDS):
                for k in engines:
                    if k in arts:
                        runs[k].append(
                            _spawn("ocula_asr", str(arts[k]), seconds, 2, k == "ocula_trim")
                        )
                    else:
                        folder = opt if k == "optimum" else hf
                        runs[k].append(_spawn("hf_asr", str(folder), seconds, 1, k))
            res = {k: median_rounds(v) for k, v in runs.items()}
            for k in arts.keys() & res.keys():
                o, peer = res[k], res["optimum"]
                o["rtf_gain_vs_optimum"] = round(peer["rtf"] / o["rtf"], 2)
                if "torch" in res:
                    o["rtf_gain_vs_torch"] = round(res["torch"]["rtf"] / o["rtf"], 2)
                o["encoder_vs_optimum"] = round(peer["encoder"] / o["encoder"], 2)
                if "cross_kv" in peer:
                    with_kv = peer["encoder"] + peer["cross_kv"]
                    o["encoder_vs_optimum_with_cross_kv"] = round(with_kv / o["encoder"], 2)
                o["dec_ms_vs_optimum"] = round(peer["dec_ms"] / o["dec_ms"], 2)
                if "ocula_logits" in res:
                    o["dec_ms_vs_logits_head"] = round(
                        res["ocula_logits"]["dec_ms"] / o["dec_ms"], 2
                    )
            out[f"{int(seconds)}s" + ("" if quant == "fp32" else f"-{quant}")] = res
    if "5" in clips and "fp32" in quants:
        art = _asr(preset)
        out["trim_agreement"] = _spawn("trim_agreement", str(hf), str(art), [5.0, 20.0])
    if "int8" in quants:
        int8 = (str(_asr(preset, quant="int8")), str(_optimum_asr(preset, "int8")))
        try:  # a data point beside the timings: its failure must not lose them
            out["int8_agreement"] = _spawn("int8_agreement", str(hf), *int8, [5.0, 30.0])
        except RuntimeError as exc:
            out["int8_agreement"] = {"error": str(exc)[-2000:]}
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

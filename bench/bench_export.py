"""Export time and artifact size for the real-shape presets at each quantization, and the
quantization-fidelity table on the real SmolLM2-135M-Instruct weights.

Run under the shared lock (real shapes need several GB):

    flock /tmp/ocula-heavy.lock .venv/bin/python -m bench bench_export

Random-weight real shapes are exported with validation off: their logits are flat, so a
4-bit top-1 agreement on them says nothing (the fidelity table on SmolLM2 is the measure).
Each export runs in its own process (a fresh interpreter, like the CLI), one after another.
Set OCULA_BENCH_EXPORT=fidelity or =shapes to run one half.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SHAPES = {
    "qwen2.5-0.5b": ("llm", ("int4", "int8", "fp16", "fp32")),
    "qwen3-0.6b": ("llm", ("int4", "int8", "fp16", "fp32")),
    "whisper-tiny": ("asr", ("int8", "fp16", "fp32")),
    "whisper-base": ("asr", ("int8", "fp16", "fp32")),
}


def _export(kind: str, src: Path, out: Path, quant: str, graph: str | None) -> dict[str, Any]:
    code = (
        "import json, sys, time, warnings; warnings.filterwarnings('ignore')\n"
        "from pathlib import Path\n"
        f"kind, src, out, quant, graph = {kind!r}, {str(src)!r}, {str(out)!r}, {quant!r}, {graph!r}\n"
        "t = time.perf_counter()\n"
        "if kind == 'llm':\n"
        "    from export.llm import LlmOptions, export_llm\n"
        "    m = export_llm(src, Path(out), LlmOptions(quant=quant, graph=graph, validate=False,"
        " force=True))\n"
        "else:\n"
        "    from export.asr import AsrOptions, export_asr\n"
        "    m = export_asr(src, Path(out), AsrOptions(quant=quant, validate=False, force=True))\n"
        "import resource\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'mb': m.total_bytes / 2**20,"
        " 'steps': m.extra['timings_s'], 'peak_rss_mb': resource.getrusage("
        "resource.RUSAGE_SELF).ru_maxrss / 1024,"
        " 'ops': {r: g.quantization.ops for r, g in m.graphs.items()}}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def shapes(out_dir: Path) -> list[dict[str, Any]]:
    from export.random import make_random

    models = out_dir / "export-models"
    rows = []
    only = os.environ.get("OCULA_BENCH_EXPORT_PRESETS")
    for preset, (kind, quants) in SHAPES.items():
        if only and preset not in only.split(","):
            continue
        src = models / preset
        if not (src / "config.json").is_file():
            t = time.perf_counter()
            make_random(preset, src, force=True)
            print(f"{preset}: random model in {time.perf_counter() - t:.0f} s", flush=True)
        # the fused graph's own timings are in bench_fused
        graphs = ("optimum",)
        for graph in graphs:
            for quant in quants:
                art = out_dir / "export-artifacts" / f"{preset}-{graph}-{quant}"
                r = _export(kind, src, art, quant, graph if kind == "llm" else None)
                row = {
                    "preset": preset,
                    "graph": graph if kind == "llm" else "-",
                    "quant": quant,
                    **r,
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
                subprocess.run(["rm", "-rf", str(art)], check=False)
    return rows


def head_speed(
    out_dir: Path, preset: str = "qwen2.5-0.5b", rounds: int = 3, tokens: int = 48
) -> list[dict[str, Any]]:
    """Decode tokens/s of qwen2.5-0.5b int4 through the runtime engine with the tied table /
    head at 4 bits, at 8 bits (the default), and left in float (a plain quantizer run)."""
    import statistics
    import warnings

    warnings.filterwarnings("ignore")
    from optimum.exporters.onnx import onnx_export_from_model
    from transformers import AutoModelForCausalLM

    from export import graphquant
    from runtime.engine.llm import GenerationConfig, Llm
    from runtime.engine.llm.runners import make_runner
    from runtime.engine.session import open_session

    src = out_dir / "export-models" / preset
    work = out_dir / "export-head"
    subprocess.run(["rm", "-rf", str(work)], check=False)
    model = AutoModelForCausalLM.from_pretrained(src)
    onnx_export_from_model(
        model, work / "onnx", task="text-generation-with-past", do_validation=False
    )
    del model
    # a manifest of the same model, for the runtime's LLM facts
    from export.llm import LlmOptions, export_llm

    ref = export_llm(str(src), work / "art", LlmOptions(quant="int4", validate=False))
    info = ref.llm
    assert info is not None
    variants = {
        "table+head 4-bit": dict(embed_bits=4),
        "table+head 8-bit (default)": dict(embed_bits=8),
        "head float (plain quantizer)": dict(float_head=True),
    }
    engines = {}
    sizes = {}
    for name, kw in variants.items():
        g = graphquant.load(work / "onnx" / "model.onnx")
        g = graphquant.quantize(g, 4, 32, True, 4, True, **kw)
        d = work / f"variant{len(sizes)}"
        d.mkdir(parents=True)
        files = graphquant.save(g, d / "model.onnx")
        sizes[name] = sum((d / f).stat().st_size for f in files) / 2**20
        del g
        session = open_session(d / "model.onnx", None, threads=2, cache=False, pin=False)
        runner = make_runner(session, info, str(d))
        engines[name] = Llm(info, runner, work / "art" / "tokenizer.json", None, str(d))
    prompt = list(range(100, 132))
    speeds: dict[str, list[float]] = {n: [] for n in engines}
    for _ in range(rounds):
        for name, llm in engines.items():
            llm.reset()
            gen = llm.start(prompt, GenerationConfig(max_new_tokens=tokens))
            gen.step()
            t0 = time.perf_counter()
            n = 0
            while not gen.done and gen.step() is not None:
                n += 1
            speeds[name].append(n / (time.perf_counter() - t0))
    base = statistics.median(speeds["table+head 8-bit (default)"])
    rows = [
        {
            "variant": n,
            "size_mb": round(sizes[n], 1),
            "tok_s": round(statistics.median(v), 1),
            "vs_default": round(statistics.median(v) / base, 3),
        }
        for n, v in speeds.items()
    ]
    for r in rows:
        print(json.dumps(r), flush=True)
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return rows


def fidelity() -> list[dict[str, Any]]:
    from export.fidelity import Variant, measure, smollm2_gguf

    variants = [Variant("fp32"), Variant("fp16"), Variant("int8")]
    for embed in (None, 8):
        for block in (32, 64, 128):
            for sym in (True, False):
                variants.append(Variant("int4", block, sym, 4, embed))
    variants.append(Variant("int4", 32, True, 0, 8))
    variants.append(Variant("int4", 32, True, 0))
    rows = measure(str(smollm2_gguf()), variants)
    for r in rows:
        print(
            f"{r['label']:<42} {r['size_mb']:6.1f} MB  ppl {r['ppl_artifact']:.2f} "
            f"(x{r['ppl_ratio']:.3f})  top-1 {r['top1_agreement']:.3f}  "
            f"greedy {r['greedy_matched']}/{r['greedy_tokens']}",
            flush=True,
        )
    return rows


def run(out_dir: Path) -> dict[str, Any]:
    which = os.environ.get("OCULA_BENCH_EXPORT", "all")
    result: dict[str, Any] = {}
    if which in ("all", "fidelity"):
        result["fidelity_smollm2"] = fidelity()
    if which in ("all", "shapes"):
        result["shapes"] = shapes(out_dir)
        result["head_speed"] = head_speed(out_dir)
    return result

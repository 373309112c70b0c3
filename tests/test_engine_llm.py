"""The LLM engine against transformers: greedy parity on both graph kinds, sampling, streaming,
stops, KV reuse across turns, bad input."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from runtime.engine.errors import ArtifactError, EngineUsageError, InputError
from runtime.engine.llm import GenerationConfig, Llm, SamplingParams
from runtime.engine.llm.sampling import Sampler
from runtime.engine.llm.text import ChatTemplate, StopFilter, TextStream
from runtime.manifest import ManifestError
from tests.test_engine_helpers import hf_model, llm_artifact

PROMPT = "The harbour wakes slowly on winter mornings, and the boats"


def hf_greedy(preset: str, ids: list[int], n: int) -> list[int]:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        hf_model(preset), dtype=torch.float32
    ).eval()
    # plain greedy over n tokens, EOS included (generate's min_new_tokens would mask EOS)
    tokens: list[int] = []
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        for _ in range(n):
            tokens.append(int(out.logits[0, -1].argmax()))
            out = model(
                torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True
            )
    return tokens


def greedy(llm: Llm, ids: list[int], n: int) -> list[int]:
    gen = llm.start(ids, GenerationConfig(max_new_tokens=n))
    while not gen.done:
        gen.step()
    return gen.tokens


@pytest.mark.parametrize("graph", ["fused", "optimum"])
@pytest.mark.parametrize("preset", ["tiny-qwen2", "tiny-qwen3", "tiny-llama"])
def test_fp32_greedy_equals_transformers(preset: str, graph: str) -> None:
    llm = Llm.from_artifact(llm_artifact(preset, "fp32", graph))
    # EOS must not end the comparison early: compare over ids with the model's EOS removed.
    llm.eos_ids = frozenset()
    ids = llm.encode(PROMPT)
    assert greedy(llm, ids, 24) == hf_greedy(preset, ids, 24)


@pytest.mark.slow
def test_smollm2_real_weights_greedy_equals_transformers() -> None:
    llm = Llm.from_artifact(llm_artifact("smollm2", "fp32", "fused"))
    ids = llm.encode("The capital of France is")
    n = 32
    # EOS must not end the comparison early (the GGUF names <|im_end|> as its EOS, which
    # greedy decoding reaches at token 30)
    llm.eos_ids = frozenset()
    ours = greedy(llm, ids, n)
    ref = hf_greedy("smollm2", ids, n)
    assert ours == ref
    assert llm.decode(ours).startswith(" Paris")


@pytest.mark.parametrize("graph", ["fused", "optimum"])
def test_prefix_reuse_gives_the_same_tokens_and_prefills_only_the_new_part(graph: str) -> None:
    path = llm_artifact("tiny-qwen2", "fp32", graph)
    fresh = Llm.from_artifact(path)
    fresh.eos_ids = frozenset()
    llm = Llm.from_artifact(path)
    llm.eos_ids = frozenset()
    system = llm.encode("You translate English into French. Keep names as they are.")
    llm.prefill(system)
    assert llm.cached_tokens == len(system)
    for sentence in ("Good morning.", "Where is the station?", "Thank you very much."):
        ids = system + llm.encode(" " + sentence)
        gen = llm.start(ids, GenerationConfig(max_new_tokens=12))
        while not gen.done:
            gen.step()
        assert gen.reused_tokens >= len(system)
        fresh._cached.clear()
        fresh._runner.truncate(0)
        assert gen.tokens == greedy(fresh, ids, 12)


@pytest.mark.parametrize("graph", ["fused", "optimum"])
def test_last_logits_are_the_models_raw_output(graph: str) -> None:
    import torch
    import transformers

    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", graph))
    llm.eos_ids = frozenset()
    ids = llm.encode(PROMPT)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        hf_model("tiny-qwen2"), dtype=torch.float32
    ).eval()
    # Repetition penalty on: last_logits must be the logits before the sampler touches them.
    config = GenerationConfig(max_new_tokens=3, sampling=SamplingParams(repetition_penalty=1.3))
    gen = llm.start(ids, config)
    assert gen.last_logits is None
    seen = list(ids)
    while not gen.done:
        token = gen.step()
        assert token is not None
        logits = gen.last_logits
        assert logits is not None and logits.dtype == np.float32
        assert logits.shape == (llm.info.vocab_size,)
        with pytest.raises(ValueError, match="read-only"):
            logits[0] = 0.0
        with torch.no_grad():
            ref = model(torch.tensor([seen])).logits[0, -1].numpy()
        np.testing.assert_allclose(logits, ref, atol=1e-3)
        seen.append(token)


def test_fused_buffers_are_allocated_once() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    runner = llm._runner
    kv = [a.ctypes.data for a in runner._kv]  # type: ignore[attr-defined]
    logits = runner._logits.ctypes.data  # type: ignore[attr-defined]
    for prompt in ("one", "two three four"):
        gen = llm.start(prompt, GenerationConfig(max_new_tokens=10))
        while not gen.done:
            gen.step()
    assert [a.ctypes.data for a in runner._kv] == kv  # type: ignore[attr-defined]
    assert runner._logits.ctypes.data == logits  # type: ignore[attr-defined]
    assert runner.kv_bytes == sum(a.nbytes for a in runner._kv)  # type: ignore[attr-defined]


def _in_graph_lookup_copy(new: Path, old: Path) -> None:
    """`new` (the int4 default: the runtime looks the 8-bit table up) rebuilt as exports made
    before the runtime lookup: the same quantized weights, GatherBlockQuantized in the graph,
    no `embedding` entry in the manifest."""
    from export.fused import build
    from runtime.manifest import file_entry, load_manifest

    m = load_manifest(new)
    assert m.llm is not None
    shutil.copytree(new, old, ignore=shutil.ignore_patterns(".ocula-cache"))
    for name in ("model.onnx", "model.onnx.data"):
        (old / name).unlink()
    max_length = m.llm.max_length
    build(
        hf_model("tiny-qwen2"), old, embed_quant="int8", max_length=max_length, runtime_lookup=False
    )
    graph = m.graphs["decoder"]
    del graph.extra["embedding"]
    graph.inputs[:2] = ["input_ids"]
    m.files = [
        file_entry(old, f.path, f.role) if f.path.startswith("model.onnx") else f for f in m.files
    ]
    m.write(old)


def test_runtime_lookup_gives_the_in_graph_lookups_tokens_and_logits(tmp_path: Path) -> None:
    """The export's int4 default feeds the graph embeddings read by the runtime; an older
    artifact whose graph looks its table up itself still loads, and both give the same
    logits and greedy tokens bit for bit, through prefill, decode and prefix reuse."""
    new = llm_artifact("tiny-qwen2", "int4", "fused")
    old = tmp_path / "old"
    _in_graph_lookup_copy(new, old)
    ours, theirs = Llm.from_artifact(new), Llm.from_artifact(old)
    assert ours._runner._lookup is not None and theirs._runner._lookup is None  # type: ignore[attr-defined]
    system = ours.encode("You translate English into French.")
    for llm in (ours, theirs):
        llm.eos_ids = frozenset()
        llm.prefill(system)
    for sentence in (PROMPT, "Good morning."):
        ids = system + ours.encode(" " + sentence)
        a = ours.start(ids, GenerationConfig(max_new_tokens=24))
        b = theirs.start(ids, GenerationConfig(max_new_tokens=24))
        while not a.done:
            a.step(), b.step()
            np.testing.assert_array_equal(a.last_logits, b.last_logits)
        assert a.tokens == b.tokens and a.reused_tokens >= len(system)


def test_table_rows_read_the_same_without_preadv(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the OS has no preadv (Windows), a seek and a read give the same rows."""
    import runtime.engine.llm.embedding as embedding
    from runtime.manifest import load_manifest

    art = llm_artifact("tiny-qwen2", "int4", "fused")
    lookup = embedding.table_lookup(load_manifest(art), art)
    assert lookup is not None
    ids = np.array([0, 7, lookup.layout.rows - 1, 7], np.int64)
    got = [lookup.buffers(ids.size) for _ in range(2)]
    lookup.read(ids, got[0][0][0], got[0][1][0])
    monkeypatch.setattr(embedding, "_PREADV", None)
    lookup.read(ids, got[1][0][0], got[1][1][0])
    for a, b in zip(got[0], got[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert got[0][1].all()  # every row's scales were read (a symmetric block's scale is not 0)
    for bad in (-1, lookup.layout.rows):  # not another row's bytes: a clear refusal
        with pytest.raises(EngineUsageError, match="outside the embedding table"):
            lookup.read(np.array([bad], np.int64), got[0][0][0], got[0][1][0])


def test_only_optimums_graph_is_cached_and_never_in_the_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fused graph is not worth an optimized-model cache (as fast to optimize as to read,
    and the cache would copy every weight); optimum's thousands of nodes are. The cache lives
    outside the artifact folder, which is read-only on a board."""
    for graph in ("fused", "optimum"):
        art, cache = tmp_path / graph, tmp_path / f"cache-{graph}"
        shutil.copytree(llm_artifact("tiny-qwen2", "int4", graph), art)
        before = sorted(p.name for p in art.iterdir())
        monkeypatch.setenv("OCULA_CACHE_DIR", str(cache))
        Llm.from_artifact(art)
        assert bool(list(cache.glob("*.onnx"))) == (graph == "optimum")
        assert sorted(p.name for p in art.iterdir()) == before


def test_a_manifest_and_graph_that_disagree_on_the_lookup_are_refused(tmp_path: Path) -> None:
    from runtime.manifest import load_manifest

    new = llm_artifact("tiny-qwen2", "int4", "fused")
    old = tmp_path / "old"
    _in_graph_lookup_copy(new, old)
    m, entry = load_manifest(old), load_manifest(new).graphs["decoder"].extra["embedding"]
    m.graphs["decoder"].extra["embedding"] = entry
    m.write(old)
    with pytest.raises(ArtifactError, match="does not have"):
        Llm.from_artifact(old)
    m.graphs["decoder"].extra["embedding"] = {**entry, "bits": 3}
    m.write(old)
    with pytest.raises(ArtifactError, match="3 bits"):
        Llm.from_artifact(old)
    del m.graphs["decoder"].extra["embedding"]["weight_offset"]
    m.write(old)
    with pytest.raises(ArtifactError, match="malformed"):
        Llm.from_artifact(old)
    truncated = tmp_path / "truncated"
    shutil.copytree(new, truncated, ignore=shutil.ignore_patterns(".ocula-cache"))
    n = load_manifest(truncated)
    n.graphs["decoder"].extra["embedding"]["rows"] *= 1000
    n.write(truncated)
    with pytest.raises(ArtifactError, match="incomplete"):
        Llm.from_artifact(truncated)


def test_text_stream_never_splits_a_character() -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(hf_model("tiny-qwen2") / "tokenizer.json"))
    text = "冬天的早晨，港口小镇慢慢醒来。Der Hafen erwacht 🚢 langsam."
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) > len("冬天的早晨")  # byte-level: some characters take several tokens
    stream = TextStream(tok)
    deltas = [stream.push(t) for t in ids]
    deltas.append(stream.flush())
    assert "".join(deltas) == tok.decode(ids) == text
    assert all("\ufffd" not in d for d in deltas)
    # Whole characters only: each delta is valid on its own.
    assert all(d.encode("utf-8").decode("utf-8") == d for d in deltas)


def test_generation_text_equals_decode_of_tokens() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    gen = llm.start("冬天的早晨", GenerationConfig(max_new_tokens=30))
    deltas = list(gen)
    assert "".join(deltas) == gen.text
    assert gen.text == llm.decode([t for t in gen.tokens if t not in llm.eos_ids]).rstrip("\ufffd")


def test_stop_string_ends_the_text_before_it() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    llm.eos_ids = frozenset()
    full = llm.start(PROMPT, GenerationConfig(max_new_tokens=30))
    list(full)
    text = full.text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip() and len(stop) == 3
    cut = text.index(stop)
    gen = llm.start(PROMPT, GenerationConfig(max_new_tokens=30, stop=(stop,)))
    streamed = "".join(gen)
    assert gen.finish_reason == "stop"
    assert streamed == gen.text == text[:cut]


def test_stop_filter_holds_back_partial_matches() -> None:
    f = StopFilter(["</end>"])
    assert f.feed("hello </") == "hello "
    assert f.feed("en") == ""
    assert f.feed("x and") == "</enx and"
    assert f.feed(" </end> tail") == " "
    assert f.stopped


def test_eos_from_the_manifest_stops(tmp_path: Path) -> None:
    src = llm_artifact("tiny-qwen2", "fp32", "fused")
    llm = Llm.from_artifact(src)
    llm.eos_ids = frozenset()
    tokens = greedy(llm, llm.encode(PROMPT), 12)
    eos = tokens[5]
    first = tokens.index(eos)
    art = tmp_path / "a"
    shutil.copytree(src, art)
    m = json.loads((art / "manifest.json").read_text())
    m["llm"]["eos_token_ids"] = [eos]
    (art / "manifest.json").write_text(json.dumps(m))
    llm2 = Llm.from_artifact(art)
    gen = llm2.start(PROMPT, GenerationConfig(max_new_tokens=12))
    list(gen)
    assert gen.finish_reason == "eos"
    assert gen.tokens == tokens[: first + 1]


def test_max_new_tokens_time_budget_and_cancel() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    llm.eos_ids = frozenset()
    gen = llm.start(PROMPT, GenerationConfig(max_new_tokens=7))
    list(gen)
    assert (gen.finish_reason, len(gen.tokens)) == ("max_new_tokens", 7)
    gen = llm.start(PROMPT, GenerationConfig(max_new_tokens=50, time_budget_s=1e-9))
    list(gen)
    assert gen.finish_reason == "time" and len(gen.tokens) == 1
    gen = llm.start(PROMPT, GenerationConfig(max_new_tokens=50))
    gen.step()
    gen.step()
    t = threading.Thread(target=gen.cancel)
    t.start()
    t.join()
    assert gen.step() is None
    assert gen.finish_reason == "cancelled" and len(gen.tokens) == 2


def test_a_new_start_ends_the_previous_generation() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    old = llm.start("one", GenerationConfig(max_new_tokens=5))
    old.step()
    llm.start("two", GenerationConfig(max_new_tokens=5)).step()
    with pytest.raises(EngineUsageError, match="newer start"):
        old.step()


def test_cache_length_limit_stops_generation() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    llm.eos_ids = frozenset()
    llm.max_length = 40
    ids = llm.encode(PROMPT)
    gen = llm.start(ids, GenerationConfig(max_new_tokens=100))
    list(gen)
    assert gen.finish_reason == "length"
    assert len(ids) + len(gen.tokens) == 40


def test_prompt_longer_than_max_length() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    long = list(range(5, 5 + llm.max_length + 10))
    with pytest.raises(InputError, match=rf"{len(long)} tokens.*max length.*{llm.max_length}"):
        llm.start(long)
    gen = llm.start(long, GenerationConfig(max_new_tokens=3, truncate=True))
    list(gen)
    assert len(gen.prompt_ids) < llm.max_length and len(gen.tokens) >= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": -3}, "top-k"),
        ({"top_p": 0.0}, "top-p"),
        ({"top_p": 1.5}, "top-p"),
        ({"repetition_penalty": 0.0}, "repetition penalty"),
        ({"seed": -1}, "seed"),
    ],
)
def test_sampling_parameters_out_of_range(kwargs: dict, match: str) -> None:
    with pytest.raises(EngineUsageError, match=match):
        SamplingParams(**kwargs)


def test_bad_prompts() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    with pytest.raises(InputError, match="empty"):
        llm.start([])
    with pytest.raises(InputError, match="outside the vocabulary"):
        llm.start([1, llm.info.vocab_size + 5])
    with pytest.raises(EngineUsageError, match="max new tokens"):
        GenerationConfig(max_new_tokens=0)


def test_newer_schema_and_corrupt_files_are_refused(tmp_path: Path) -> None:
    src = llm_artifact("tiny-qwen2", "int4", "fused")
    art = tmp_path / "a"
    shutil.copytree(src, art)
    m = json.loads((art / "manifest.json").read_text())
    m["schema_version"] = 99
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="newer than this runtime"):
        Llm.from_artifact(art)
    shutil.rmtree(art)
    shutil.copytree(src, art)
    model = art / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0x55
    model.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256"):
        Llm.from_artifact(art)


def test_board_budget_limits_the_kv_cache() -> None:
    from board import profiles

    art = llm_artifact("tiny-qwen2", "fp32", "fused")
    sim = profiles.find("sim")
    llm = Llm.from_artifact(art, sim)
    assert llm.max_length == llm.info.max_length  # 4 GB leaves room for the whole buffer
    import dataclasses

    def board(mb: int):  # type: ignore[no-untyped-def]
        return dataclasses.replace(sim, budget=dataclasses.replace(sim.budget, max_rss_mb=mb))

    # The fused graph's KV length axis is symbolic: the buffers take the length asked for
    # (the caller's max_length, or what the board's budget leaves), not the export's.
    small = Llm.from_artifact(art, board(4096), max_length=64)
    assert small.max_length == 64
    runner = small._runner
    assert runner.max_length == 64 and runner.kv_bytes * 4 == llm._runner.kv_bytes
    assert all(a.shape[2] == 64 for a in runner._kv)  # type: ignore[attr-defined]
    small.eos_ids = llm.eos_ids = frozenset()
    ids = small.encode(PROMPT)
    assert greedy(small, ids, 8) == greedy(llm, ids, 8)
    with pytest.raises(EngineUsageError, match="max length 10000 is above this artifact's 256"):
        Llm.from_artifact(art, max_length=10_000)
    with pytest.raises(ArtifactError, match=r"no room for a KV cache within board sim"):
        Llm.from_artifact(art, board(200))


def test_kv_cache_is_sized_to_the_run_within_named_limits() -> None:
    import dataclasses

    from board import profiles

    art = llm_artifact("tiny-qwen2", "fp32", "fused")
    sim = profiles.find("sim")
    # The board's default length when the caller names none
    short = dataclasses.replace(sim, budget=dataclasses.replace(sim.budget, llm_max_tokens=96))
    llm = Llm.from_artifact(art, short)
    assert llm.max_length == 96 and all(a.shape[2] == 96 for a in llm._runner._kv)  # type: ignore[attr-defined]
    # A run's own need (what `ocula generate` asks for): new buffers of that length, the same
    # tokens as the export's whole length gives
    ids = llm.encode(PROMPT)
    whole = Llm.from_artifact(art)
    whole.eos_ids = llm.eos_ids = frozenset()
    llm.resize(len(ids) + 8)
    assert llm.max_length == len(ids) + 8
    assert llm.kv_bytes * 256 == whole.kv_bytes * (len(ids) + 8)
    assert greedy(llm, ids, 8) == greedy(whole, ids, 8)
    # Above a limit is an error that names it; nothing is clamped
    with pytest.raises(EngineUsageError, match="above this artifact's 256 tokens"):
        llm.resize(257)
    with pytest.raises(EngineUsageError, match="at least 16"):
        Llm.from_artifact(art, max_length=8)


def test_fp16_kv_cache_halves_the_buffers_and_keeps_the_tokens(tmp_path: Path) -> None:
    from export.fused import build
    from runtime.manifest import file_entry, load_manifest

    art = llm_artifact("tiny-qwen2", "fp32", "fused")
    m = load_manifest(art)
    assert m.llm is not None and m.llm.kv is not None
    out = tmp_path / "fp16-kv"
    shutil.copytree(art, out, ignore=shutil.ignore_patterns(".ocula-cache"))
    for name in ("model.onnx", "model.onnx.data"):
        (out / name).unlink(missing_ok=True)
    info = build(
        hf_model("tiny-qwen2"), out, quant="fp32", max_length=m.llm.max_length, kv_dtype="float16"
    )
    m.llm.kv.dtype = info.kv.dtype
    m.files = [
        file_entry(out, f, "model" if f.endswith(".onnx") else "weights") for f in info.files
    ] + [f for f in m.files if not f.path.startswith("model.onnx")]
    m.write(out)
    half, full = Llm.from_artifact(out), Llm.from_artifact(art)
    assert half._runner._kv[0].dtype == np.float16  # type: ignore[attr-defined]
    assert half.kv_bytes * 2 == full.kv_bytes
    half.eos_ids = full.eos_ids = frozenset()
    ids = half.encode(PROMPT)
    assert greedy(half, ids, 16) == greedy(full, ids, 16)


# -- sampling against transformers' logits processors ------------------------------------


def _hf_probs(logits: np.ndarray, seen: list[int], p: SamplingParams) -> np.ndarray:
    import torch
    from transformers import generation as g

    procs = g.LogitsProcessorList()
    if p.repetition_penalty != 1.0:
        procs.append(g.RepetitionPenaltyLogitsProcessor(p.repetition_penalty))
    procs.append(g.TemperatureLogitsWarper(p.temperature))
    if p.top_k:
        procs.append(g.TopKLogitsWarper(p.top_k))
    if p.top_p < 1.0:
        procs.append(g.TopPLogitsWarper(p.top_p))
    scores = procs(torch.tensor([seen]), torch.tensor(logits[None], dtype=torch.float32))
    return torch.softmax(scores, -1)[0].double().numpy()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.7, seed=1),
        SamplingParams(temperature=1.0, top_k=5, seed=2),
        SamplingParams(temperature=1.3, top_p=0.8, seed=3),
        SamplingParams(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.3, seed=4),
    ],
)
def test_sampler_draws_from_transformers_distribution(params: SamplingParams) -> None:
    rng = np.random.default_rng(0)
    vocab = 600
    logits = (rng.standard_normal(vocab) * 2).astype(np.float32)
    seen = [int(i) for i in np.argsort(-logits)[:4]] + [17, 99]
    ref = _hf_probs(logits, seen, params)
    sampler = Sampler(params, vocab)
    sampler.observe(seen)
    n = 20000
    counts = np.bincount([sampler(logits.copy()) for _ in range(n)], minlength=vocab)
    support = ref > 1e-12
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(support))
    # Every token's frequency within 5 standard errors of its reference probability.
    se = np.sqrt(ref * (1 - ref) / n) + 1e-4
    assert np.all(np.abs(counts / n - ref) <= 5 * se)


def test_seeded_sampling_repeats_and_greedy_limits() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    llm.eos_ids = frozenset()

    def run(p: SamplingParams) -> list[int]:
        gen = llm.start(PROMPT, GenerationConfig(max_new_tokens=16, sampling=p))
        list(gen)
        return gen.tokens

    a = run(SamplingParams(temperature=1.0, seed=7))
    assert a == run(SamplingParams(temperature=1.0, seed=7))
    assert a != run(SamplingParams(temperature=1.0, seed=8))
    g = run(SamplingParams())
    assert run(SamplingParams(temperature=1.0, top_k=1, seed=3)) == g


# -- chat templates against transformers' Jinja rendering ---------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Translate: good morning"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "  Where is the station?  "},
    ],
]


@pytest.mark.parametrize("preset", ["tiny-qwen2", "tiny-llama", "smollm2"])
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_chat_template_renders_like_transformers(preset: str, conv: int) -> None:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(hf_model(preset))
    messages = CONVERSATIONS[conv]
    ref = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ours = ChatTemplate.parse(tok.chat_template, preset).render(messages)
    assert ours == ref


def test_qwen3_thinking_switch() -> None:
    t = ChatTemplate.parse("{{ '<|im_start|>' }}{% if enable_thinking %}<think>{% endif %}", "x")
    msgs = [{"role": "user", "content": "hi"}]
    assert t.render(msgs).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert t.render(msgs, enable_thinking=True).endswith("<|im_start|>assistant\n")


def test_unknown_chat_template_is_refused() -> None:
    with pytest.raises(EngineUsageError, match="does not render"):
        ChatTemplate.parse("{% for m in messages %}[INST]{{ m.content }}{% endfor %}", "x")
    with pytest.raises(EngineUsageError, match="no chat template"):
        ChatTemplate.parse(None, "x")

"""The fused graph against transformers on tiny random models of each supported family.

fp32 must give transformers' greedy tokens exactly. Quantized graphs are checked against
transformers running the same model with its weights replaced by what the quantizer stored
(`dequantize`), with accuracy level 0 (float compute), so any error in packing, in the graph's
wiring or in the shared embedding shows up as a logit difference, not as "close enough".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

import export.fused.builder as fused_build
from export.fused import FusedError, build
from export.fused.quant import dequantize, dequantize_split, quantize, split8
from export.fused.run import FusedDecoder

COMMON = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    initializer_range=0.1,
    tie_word_embeddings=True,
)
MODELS = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    # Qwen3 as published: head_dim (32) != hidden_size / num_attention_heads (16)
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"head_dim": 32}),
    "llama": (LlamaConfig, LlamaForCausalLM, {"tie_word_embeddings": False}),
    "llama-llama3-rope": (
        LlamaConfig,
        LlamaForCausalLM,
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
    ),
    "qwen2-yarn-rope": (
        Qwen2Config,
        Qwen2ForCausalLM,
        {
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
    ),
    "qwen3-linear-rope": (
        Qwen3Config,
        Qwen3ForCausalLM,
        {"head_dim": 32, "rope_scaling": {"rope_type": "linear", "factor": 2.0}},
    ),
    "llama-bias": (LlamaConfig, LlamaForCausalLM, {"attention_bias": True, "mlp_bias": True}),
}
PROMPT = [3, 17, 250, 9, 41, 77, 5]
MAX_LENGTH = 64


def _hf_model(name, tmp_path, seed=0):
    config_cls, model_cls, extra = MODELS[name]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**COMMON, **extra})).eval()
    if extra.get("attention_bias"):
        with torch.no_grad():  # transformers initializes biases to zero; make them count
            for p in model.parameters():
                if p.dim() == 1 and "norm" not in str(p.shape):
                    p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path / f"hf-{name}"
    model.save_pretrained(folder)
    return model, folder


def _greedy_reference(model, prompt, new_tokens):
    ids = torch.tensor([prompt])
    out = model.generate(
        ids, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    return out[0, len(prompt) :].tolist()


def _last_logits(model, prompt):
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0, -1].numpy()


@pytest.mark.parametrize("name", list(MODELS))
def test_fp32_greedy_tokens_equal_transformers(name, tmp_path):
    model, folder = _hf_model(name, tmp_path)
    out = tmp_path / "artifact"
    out.mkdir()
    info = build(folder, out, quant="fp32", max_length=MAX_LENGTH)
    decoder = FusedDecoder(out, info)
    assert decoder.greedy(PROMPT, 40) == _greedy_reference(model, PROMPT, 40)
    decoder.reset()
    np.testing.assert_allclose(decoder.run(PROMPT), _last_logits(model, PROMPT), atol=1e-4)


def test_prefill_in_chunks_equals_one_prefill(tmp_path):
    """A shared prefix (a system prompt) is prefilled once; the rest continues from it."""
    model, folder = _hf_model("qwen3", tmp_path)
    out = tmp_path / "artifact"
    out.mkdir()
    decoder = FusedDecoder(out, build(folder, out, quant="fp32", max_length=MAX_LENGTH))
    decoder.run(PROMPT[:3])
    decoder.run(PROMPT[3:5])
    chunked = decoder.run(PROMPT[5:])
    assert decoder.length == len(PROMPT)
    np.testing.assert_allclose(chunked, _last_logits(model, PROMPT), atol=1e-4)
    # a new conversation reuses the buffers: only the length resets
    decoder.reset()
    np.testing.assert_allclose(decoder.run(PROMPT), chunked, atol=1e-5)


def _quantized_reference(model, bits, block, symmetric):
    """The HF model with every weight the graph quantizes replaced by its stored value."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:  # projections, embedding, untied head
                q = quantize(p.numpy(), bits, block, symmetric)
                p.copy_(torch.from_numpy(dequantize(q)))
    return model


@pytest.mark.parametrize(
    ("name", "quant", "symmetric"),
    [
        ("qwen2", "int4", True),
        ("qwen3", "int4", False),
        ("llama", "int8", True),
        ("qwen2", "int8", False),
        ("qwen3", "int8", True),
    ],
)
def test_quantized_graph_computes_the_quantized_model(name, quant, symmetric, tmp_path):
    model, folder = _hf_model(name, tmp_path)
    out = tmp_path / "artifact"
    out.mkdir()
    bits = 4 if quant == "int4" else 8
    info = build(
        folder,
        out,
        quant=quant,
        block_size=32,
        symmetric=symmetric,
        accuracy_level=0,
        max_length=MAX_LENGTH,
    )
    layers = info.num_layers
    # every projection (qkv, o, gate_up, down) and the head are MatMulNBits; a symmetric table
    # is looked up by the runtime, an asymmetric one by the graph
    lookups = {} if symmetric else {"GatherBlockQuantized": 1}
    assert info.quantized_ops == {"MatMulNBits": 4 * layers + 1, **lookups}
    assert (info.embedding is not None) == symmetric
    assert not {"MatMul", "Gemm", "Gather"} & set(info.op_histogram)
    reference = _quantized_reference(model, bits, 32, symmetric)
    decoder = FusedDecoder(out, info)
    np.testing.assert_allclose(decoder.run(PROMPT), _last_logits(reference, PROMPT), atol=2e-4)
    assert decoder.greedy(PROMPT, 24) == _greedy_reference(reference, PROMPT, 24)


def test_split_head_is_exact_on_its_candidates_and_4_bit_elsewhere(tmp_path):
    """int4 with an 8-bit table and head_candidates: the lookup reads both planes (8 bits),
    the K best logits are the 8-bit table's, the rest its high 4-bit plane's."""
    model, folder = _hf_model("qwen2", tmp_path)
    out = tmp_path / "artifact"
    out.mkdir()
    k = 16
    info = build(
        folder,
        out,
        quant="int4",
        embed_quant="int8",
        head_candidates=k,
        accuracy_level=0,
        max_length=MAX_LENGTH,
    )
    assert info.op_histogram["TopK"] == 1 and info.op_histogram["ScatterElements"] == 1
    table = model.model.embed_tokens.weight.detach().numpy().copy()
    split = split8(table, 32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed_tokens" not in name:
                p.copy_(torch.from_numpy(dequantize(quantize(p.numpy(), 4, 32, True))))
        model.model.embed_tokens.weight.copy_(torch.from_numpy(dequantize_split(split)))
        hidden = model.model(torch.tensor([PROMPT])).last_hidden_state[0, -1].numpy()
    exact = _last_logits(model, PROMPT)
    approx = hidden @ dequantize(split.high).T
    decoder = FusedDecoder(out, info)
    got = decoder.run(PROMPT).copy()
    top = np.argsort(-approx)[:k]
    rest = np.setdiff1d(np.arange(approx.size), top)
    np.testing.assert_allclose(got[top], exact[top], atol=2e-4)
    np.testing.assert_allclose(got[rest], approx[rest], atol=2e-4)
    assert not np.allclose(approx[top], exact[top], atol=1e-3)  # the second stage did work
    assert decoder.greedy(PROMPT, 16) == _greedy_reference(model, PROMPT, 16)


def test_fp16_weights_compute_in_float32(tmp_path):
    model, folder = _hf_model("qwen3", tmp_path)
    out = tmp_path / "artifact"
    out.mkdir()
    info = build(folder, out, quant="fp16", max_length=MAX_LENGTH)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    decoder = FusedDecoder(out, info)
    np.testing.assert_allclose(decoder.run(PROMPT), _last_logits(model, PROMPT), atol=1e-4)
    fp32 = tmp_path / "fp32"
    fp32.mkdir()
    assert (
        info.size_bytes < 0.6 * build(folder, fp32, quant="fp32", max_length=MAX_LENGTH).size_bytes
    )


@pytest.mark.parametrize(("embed_quant", "block"), [("int8", 32), ("int4", 32), ("int8", 128)])
def test_runtime_lookup_equals_the_graphs(embed_quant, block, tmp_path):
    """The runtime reads the table's rows from the data file and dequantizes them as
    GatherBlockQuantized does: logits and greedy tokens bit-identical to the in-graph lookup,
    in prefill and in decode; the table is no initializer of the graph. (Block 128 pads the
    64-wide rows: the runtime drops the padding as the graph's Slice does.)"""
    import onnx

    _, folder = _hf_model("qwen2", tmp_path)
    arts = {}
    for runtime_lookup in (True, False):
        out = tmp_path / f"artifact-{runtime_lookup}"
        out.mkdir()
        info = build(
            folder,
            out,
            quant="int4",
            embed_quant=embed_quant,
            embed_block_size=block,
            max_length=MAX_LENGTH,
            runtime_lookup=runtime_lookup,
        )
        arts[runtime_lookup] = FusedDecoder(out, info)
    ours, graphs = arts[True], arts[False]
    emb = ours.info.embedding
    assert graphs.info.embedding is None and "GatherBlockQuantized" not in ours.info.op_histogram
    assert list(ours.info.inputs)[:2] == ["embed_codes", "embed_scales"]
    assert "input_ids" not in ours.info.inputs
    bits = 8 if embed_quant == "int8" else 4
    assert (emb["bits"], emb["rows"], emb["hidden"]) == (bits, COMMON["vocab_size"], 64)
    graph = onnx.load(str(tmp_path / "artifact-True" / "model.onnx"), load_external_data=False)
    assert not {"embed.qweight", "embed.scales3"} & {t.name for t in graph.graph.initializer}
    np.testing.assert_array_equal(ours.run(PROMPT), graphs.run(PROMPT))
    np.testing.assert_array_equal(ours.run([400]), graphs.run([400]))
    assert ours.greedy(PROMPT, 24) == graphs.greedy(PROMPT, 24)


def test_int4_tied_embedding_is_stored_once(tmp_path, monkeypatch):
    """The runtime reads the table; the head's row chunks are views of its bytes on disk."""
    import onnx

    import export.fused.graph as fused_graph

    model, folder = _hf_model("qwen2", tmp_path)
    one = tmp_path / "one"
    one.mkdir()
    build(folder, one, quant="int4", max_length=MAX_LENGTH, embed_quant="int8")
    # The export's default 8-bit table: 512 rows of 64 bytes, in chunks of 128 rows.
    monkeypatch.setattr(fused_graph, "VIEW_ROWS", 128)
    monkeypatch.setattr(fused_graph, "HEAD_CHUNK_BYTES", 128 * 64)
    out = tmp_path / "artifact"
    out.mkdir()
    info = build(folder, out, quant="int4", max_length=MAX_LENGTH, embed_quant="int8")
    assert info.files == ["model.onnx", "model.onnx.data"]
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    heads = [n for n in graph.node if n.name.startswith("head.lm.")]
    assert [n.op_type for n in heads] == ["MatMulNBits"] * 4
    assert next(n for n in graph.node if n.output[0] == "logits").op_type == "Concat"

    def where(name: str) -> tuple[int, int]:
        t = next(t for t in graph.initializer if t.name == name)
        ext = {e.key: e.value for e in t.external_data}
        assert ext["location"] == "model.onnx.data"
        return int(ext["offset"]), int(ext["length"])

    table_at, scales_at = info.embedding["weight_offset"], info.embedding["scales_offset"]
    assert table_at % 4096 == 0
    chunks = [where(n.input[1]) for n in heads]
    assert chunks == [(table_at + i * 128 * 64, 128 * 64) for i in range(4)]
    assert [where(n.input[2])[0] for n in heads] == [scales_at + i * 128 * 2 * 4 for i in range(4)]
    stored = (out / "model.onnx.data").stat().st_size
    held = sum(len(t.raw_data) for t in onnx.load(str(one / "model.onnx")).graph.initializer)
    assert stored < held  # the views take no bytes of their own
    # Four chunks compute the same logits as one, and the model still follows transformers.
    chunked, whole = FusedDecoder(out, info), FusedDecoder(one, info)
    np.testing.assert_array_equal(chunked.run(PROMPT), whole.run(PROMPT))
    assert chunked.greedy(PROMPT, 8) == _greedy_reference(model, PROMPT, 8)


def test_info_describes_the_io_contract(tmp_path):
    _, folder = _hf_model("qwen3", tmp_path)
    out = tmp_path / "artifact"
    out.mkdir()
    info = build(folder, out, quant="int4", max_length=MAX_LENGTH)
    kv_shape = [1, 2, MAX_LENGTH, 32]
    assert info.kv.shape == kv_shape and info.kv.shared_buffer
    assert info.kv.names(1, "value") == ("past_key_values.1.value", "present.1.value")
    # the runtime reads the quantized table's rows: the graph takes their codes and scales
    # (a 4-bit table, hidden 64: 2 blocks of 16 bytes)
    assert info.inputs["embed_codes"] == {"dtype": "uint8", "shape": [1, "sequence_length", 2, 16]}
    assert info.inputs["embed_scales"] == {
        "dtype": "float32",
        "shape": [1, "sequence_length", 2, 1],
    }
    assert info.embedding is not None and info.embedding["codes_input"] == "embed_codes"
    assert set(info.feeds) == {
        "embed_codes",
        "embed_scales",
        "seqlens_k",
        "total_sequence_length",
        "past_key_values",
    }
    assert info.inputs["seqlens_k"] == {"dtype": "int32", "shape": [1]}
    assert info.inputs["total_sequence_length"] == {"dtype": "int32", "shape": []}
    io_shape = [1, 2, "max_length", 32]  # buffers of any length up to kv.shape's
    assert info.inputs["past_key_values.0.key"]["shape"] == io_shape
    # the last num_logits positions' (an optional input, default 1: see test_llm_lookup)
    assert info.outputs["logits"]["shape"] == [1, "num_logits", COMMON["vocab_size"]]
    assert info.inputs["num_logits"] == {"dtype": "int64", "shape": [1]}
    assert info.logits == "last_m"
    assert info.outputs["present.1.value"]["shape"] == io_shape
    assert (info.head_dim, info.num_heads, info.kv_heads) == (32, 4, 2)
    # The tied head views the table's bytes, which only an external data file can express.
    assert info.files == ["model.onnx", "model.onnx.data"]
    assert info.size_bytes == sum((out / f).stat().st_size for f in info.files)
    json.dumps(info.to_dict())  # goes into the manifest as is


def test_large_weights_go_to_external_data(tmp_path, monkeypatch):
    model, folder = _hf_model("llama", tmp_path)
    monkeypatch.setattr(fused_build, "EXTERNAL_DATA_BYTES", 0)
    out = tmp_path / "artifact"
    out.mkdir()
    info = build(folder, out, quant="fp32", max_length=MAX_LENGTH)
    assert info.files == ["model.onnx", "model.onnx.data"]
    assert (out / "model.onnx").stat().st_size < 100_000
    decoder = FusedDecoder(out, info)
    assert decoder.greedy(PROMPT, 8) == _greedy_reference(model, PROMPT, 8)


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_type": "gpt2"}, "architecture 'gpt2' is not supported"),
        ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "rope scaling 'longrope'"),
        ({"use_sliding_window": True, "sliding_window": 16}, "sliding-window attention"),
        (
            {
                "rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
                "max_position_embeddings": 32,
            },
            "dynamic rope",
        ),
        ({"partial_rotary_factor": 0.5}, "partial rotary"),
    ],
)
def test_unsupported_models_are_refused_by_name(changes, message, tmp_path):
    _, folder = _hf_model("qwen2", tmp_path)
    _edit_config(folder, **changes)
    out = tmp_path / "artifact"
    out.mkdir()
    with pytest.raises(FusedError, match=message):
        build(folder, out, quant="fp32", max_length=MAX_LENGTH)
    assert not list(out.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quant": "int3"}, "unknown quant 'int3'"),
        ({"quant": "int4", "block_size": 48}, "block size 48"),
        ({"quant": "int4", "accuracy_level": 7}, "accuracy level 7"),
        ({"quant": "int4", "embed_quant": "fp32"}, "embed_quant"),
    ],
)
def test_bad_options_are_refused(kwargs, message, tmp_path):
    _, folder = _hf_model("qwen2", tmp_path)
    with pytest.raises(FusedError, match=message):
        build(folder, tmp_path, max_length=MAX_LENGTH, **kwargs)


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(FusedError, match=r"no config\.json"):
        build(tmp_path, tmp_path, quant="fp32", max_length=MAX_LENGTH)
    _, folder = _hf_model("qwen2", tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(FusedError, match=r"model\.safetensors"):
        build(folder, tmp_path, quant="fp32", max_length=MAX_LENGTH)
    weights.unlink()
    with pytest.raises(FusedError, match=r"no \*\.safetensors"):
        build(folder, tmp_path, quant="fp32", max_length=MAX_LENGTH)


def test_cache_fills_to_max_length_then_refuses(tmp_path):
    model, folder = _hf_model("qwen2", tmp_path)
    out = tmp_path / "artifact"
    out.mkdir()
    decoder = FusedDecoder(out, build(folder, out, quant="fp32", max_length=MAX_LENGTH))
    tokens = [int(t) for t in np.random.default_rng(1).integers(0, 512, MAX_LENGTH)]
    decoder.run(tokens[:-2])
    decoder.run(tokens[-2:-1])
    np.testing.assert_allclose(decoder.run(tokens[-1:]), _last_logits(model, tokens), atol=1e-4)
    with pytest.raises(FusedError, match="exceed the graph's max length 64"):
        decoder.run([1])


# head_dim 8, 24, 40, 72: not a multiple of 16, which onnxruntime's GroupQueryAttention needs
# with rotary inside; hidden 72 (head_dim 18) and 80 (head_dim 20, an odd vocabulary, an
# intermediate size that is not a multiple of the block): sizes that are not multiples of 32.
ODD_SHAPES = {
    "qwen3-hd8": ("qwen3", {"head_dim": 8}),
    "qwen3-hd24": ("qwen3", {"head_dim": 24}),
    "qwen3-hd40": ("qwen3", {"head_dim": 40}),
    "qwen3-hd72": ("qwen3", {"head_dim": 72}),
    "qwen2-hidden72": ("qwen2", {"hidden_size": 72}),
    "llama-hidden80-vocab517": (
        "llama",
        {"hidden_size": 80, "vocab_size": 517, "intermediate_size": 100},
    ),
}


@pytest.mark.parametrize("name", list(ODD_SHAPES))
def test_odd_head_and_hidden_sizes_run_exactly(name, tmp_path):
    """Heads padded to GroupQueryAttention's size compute the model itself (heads.py)."""
    family, changes = ODD_SHAPES[name]
    config_cls, model_cls, extra = MODELS[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**{**COMMON, **extra, **changes})).eval()
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    out = tmp_path / "artifact"
    out.mkdir()
    info = build(folder, out, quant="fp32", max_length=MAX_LENGTH)
    c = model.config
    assert info.head_dim == (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    assert info.kv.shape[3] % 16 == 0
    decoder = FusedDecoder(out, info)
    assert decoder.greedy(PROMPT, 24) == _greedy_reference(model, PROMPT, 24)
    decoder.reset()
    np.testing.assert_allclose(decoder.run(PROMPT), _last_logits(model, PROMPT), atol=1e-4)
    out4 = tmp_path / "int4"
    out4.mkdir()
    int4 = FusedDecoder(out4, build(folder, out4, quant="int4", max_length=MAX_LENGTH))
    assert np.isfinite(int4.run(PROMPT)).all()


def test_heads_that_do_not_share_kv_heads_evenly_are_refused(tmp_path):
    _, folder = _hf_model("qwen2", tmp_path)
    _edit_config(folder, num_key_value_heads=3)
    out = tmp_path / "artifact"
    out.mkdir()
    with pytest.raises(FusedError, match=r"4 attention heads over 3 KV heads.*--graph optimum"):
        build(folder, out, quant="fp32", max_length=MAX_LENGTH)
    assert not list(out.iterdir())


@pytest.mark.parametrize("name", ["qwen2", "qwen3"])
def test_fp16_kv_cache_stays_close_to_float32(name, tmp_path):
    """An fp16 KV cache (attention in fp16): the cache is half the bytes, the logits within
    fp16 rounding of transformers' and the greedy tokens the same."""
    model, folder = _hf_model(name, tmp_path)
    out = tmp_path / "artifact"
    out.mkdir()
    info = build(folder, out, quant="fp32", max_length=MAX_LENGTH, kv_dtype="float16")
    assert info.kv.dtype == "float16"
    decoder = FusedDecoder(out, info)
    assert decoder.greedy(PROMPT, 24) == _greedy_reference(model, PROMPT, 24)
    decoder.reset()
    np.testing.assert_allclose(decoder.run(PROMPT), _last_logits(model, PROMPT), atol=2e-2)

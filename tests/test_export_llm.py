"""LLM artifacts from tiny random-weight models: every architecture, quant and graph path.

The artifacts come from `tests.artifacts` (built once, validated by the exporter itself). Here
they are checked from the outside: the manifest reads back and verifies, the quantized
operators are what the manifest says, the tied table is stored once, and a greedy loop driven
only by the manifest's facts (names, KV layout, eos) reproduces transformers' own generate().
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForCausalLM

from runtime.manifest import Manifest, load_manifest
from tests.artifacts import hf_model, llm_artifact

PRESETS = ("tiny-qwen2", "tiny-qwen3", "tiny-llama")
QUANTS = ("fp32", "fp16", "int8", "int4")


def _greedy_from_manifest(art: Path, m: Manifest, prompt: list[int], n: int) -> list[int]:
    """A minimal optimum-layout loop using only what the manifest says."""
    assert m.llm is not None and m.llm.kv is not None
    i, kv = m.llm, m.llm.kv
    s = ort.InferenceSession(
        str(art / m.graphs["decoder"].file), providers=["CPUExecutionProvider"]
    )
    shape = [1 if d == "batch" else 0 if d == "past" else int(d) for d in kv.shape]
    past = {
        kv.past.format(layer=layer, kind=k): np.zeros(shape, np.float32)
        for layer in range(i.layers)
        for k in kv.kinds
    }
    ids, out = list(prompt), []
    feed_ids = list(prompt)
    while len(out) < n:
        n_past = len(ids) - len(feed_ids)
        feeds = {
            i.input_ids: np.array([feed_ids], np.int64),
            "attention_mask": np.ones((1, len(ids)), np.int64),
            "position_ids": np.arange(n_past, len(ids), dtype=np.int64)[None],
            **past,
        }
        res = dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds), strict=True))
        tok = int(res[i.logits][0, -1].argmax())
        out.append(tok)
        if tok in i.eos_token_ids:
            break
        past = {
            kv.past.format(layer=layer, kind=k): res[kv.present.format(layer=layer, kind=k)]
            for layer in range(i.layers)
            for k in kv.kinds
        }
        ids.append(tok)
        feed_ids = [tok]
    return out


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("quant", QUANTS)
def test_artifact_validates_and_counts_its_quantization(preset: str, quant: str) -> None:
    art = llm_artifact(preset, quant)
    m = load_manifest(art)
    assert m.kind == "llm" and m.validation is not None and m.validation.passed
    assert m.validation.metrics["positions"] >= 200
    q = m.graphs["decoder"].quantization
    assert q.scheme == quant
    layers = m.llm.layers if m.llm else 0
    if quant in ("int4", "int8"):
        # 7 projections per layer + the head, all MatMulNBits; the embedding GatherBlockQuantized
        assert q.ops == {"MatMulNBits": 7 * layers + 1, "GatherBlockQuantized": 1}
        assert q.float_ops == {}
        assert q.bits == (4 if quant == "int4" else 8) and q.block_size == 32 and q.symmetric
    else:
        assert q.ops == {} and q.float_ops == {"MatMul": 7 * layers + 1}
    if quant == "fp32":
        assert m.validation.metrics["greedy_match"] == 1.0
        assert m.validation.metrics["max_abs_logit_diff"] < 1e-3


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_tied_embedding_is_stored_once(quant: str) -> None:
    art = llm_artifact("tiny-qwen2", quant)
    m = load_manifest(art)
    assert m.llm is not None and m.llm.tie_word_embeddings
    g = onnx.load(str(art / "model.onnx"))
    vocab, hidden = m.llm.vocab_size, m.llm.hidden_size
    big = [t for t in g.graph.initializer if int(np.prod(t.dims)) >= vocab * hidden // 2]
    assert len(big) == 1, [(t.name, list(t.dims)) for t in big]
    if quant == "int4":
        (table,) = big
        assert table.data_type == onnx.TensorProto.UINT8
        users = [n.op_type for n in g.graph.node if table.name in n.input]
        assert sorted(users) == ["GatherBlockQuantized", "MatMulNBits"]


@pytest.mark.parametrize("preset", PRESETS)
def test_fp32_greedy_from_manifest_matches_transformers_generate(preset: str) -> None:
    art = llm_artifact(preset, "fp32")
    m = load_manifest(art)
    model = AutoModelForCausalLM.from_pretrained(hf_model(preset), dtype=torch.float32).eval()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(art / "tokenizer.json"))
    prompt = tok.encode("The harbour town woke slowly on winter mornings.").ids
    got = _greedy_from_manifest(art, m, prompt, 20)
    with torch.no_grad():
        ref = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=m.llm.eos_token_ids if m.llm else None,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()
    assert got == ref


def test_qwen3_head_dim_differs_from_hidden_over_heads() -> None:
    m = load_manifest(llm_artifact("tiny-qwen3", "int4"))
    assert m.llm is not None and m.llm.kv is not None
    assert m.llm.head_dim == 32 != m.llm.hidden_size // m.llm.heads
    assert m.llm.kv.shape == ["batch", 2, "past", 32]


def test_manifest_carries_tokenizer_and_chat_template() -> None:
    art = llm_artifact("tiny-qwen2", "int4")
    m = load_manifest(art)
    assert m.tokenizer is not None and "tokenizer.json" in m.tokenizer.files
    assert m.tokenizer.chat_template and "<|im_start|>" in m.tokenizer.chat_template
    st = m.tokenizer.special_tokens
    assert m.llm is not None
    assert st["<|im_end|>"] in m.llm.eos_token_ids and st["<|endoftext|>"] in m.llm.eos_token_ids


@pytest.mark.parametrize("preset", ["tiny-qwen3", "tiny-llama"])
@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_fused_graph_passes_the_same_validation(preset: str, quant: str) -> None:
    m = load_manifest(llm_artifact(preset, quant, graph="fused"))
    assert m.llm is not None and m.llm.graph_kind == "fused"
    assert m.llm.kv is not None and m.llm.kv.shared_buffer
    assert m.validation is not None and m.validation.passed
    if quant == "fp32":
        assert m.validation.metrics["greedy_match"] == 1.0
    else:
        assert m.graphs["decoder"].quantization.float_ops == {}


def test_failed_validation_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from export import validate
    from export.errors import ValidationFailed
    from export.llm import LlmOptions, export_llm

    out = tmp_path / "art"
    shutil.copytree(llm_artifact("tiny-qwen2", "fp32"), out)
    before = sorted(p.name for p in out.iterdir())
    # a bound no 4-bit model can meet: top-1 agreement above 1
    monkeypatch.setitem(validate.THRESHOLDS, "int4", {"top1_agreement": 1.01})
    with pytest.raises(ValidationFailed, match=r"top1_agreement .* below the int4 bound 1\.01 by"):
        export_llm(str(hf_model("tiny-qwen2")), out, LlmOptions(quant="int4", max_length=256))
    assert sorted(p.name for p in out.iterdir()) == before
    assert load_manifest(out).graphs["decoder"].quantization.scheme == "fp32"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temporary folders left


def test_board_budget_is_checked(tmp_path: Path) -> None:
    from board import profiles
    from export.budget import check, estimate
    from export.errors import BudgetError

    m = load_manifest(llm_artifact("tiny-qwen2", "int4"))
    fit = check(m, profiles.find("ar1-ref"))
    assert fit.fits and fit.kv_mb == pytest.approx(2 * 2 * 2 * 16 * 256 * 4 / (1 << 20))
    toml = (Path(profiles.path_of("sim"))).read_text()
    small = toml.replace("max_rss_mb = 4096", "max_rss_mb = 16")
    assert small != toml
    path = tmp_path / "tiny.toml"
    path.write_text(small.replace('name = "sim"', 'name = "tiny"'))
    with pytest.raises(BudgetError, match=r"memory \d+ MiB .*> 16 MiB; try a smaller model"):
        check(m, profiles.find(str(path)))
    fp32 = load_manifest(llm_artifact("tiny-qwen2", "fp32"))
    with pytest.raises(BudgetError, match=r"try a lower --quant \(fp16 or int8\)"):
        check(fp32, profiles.find(str(path)))
    assert estimate(m, profiles.find(str(path))).weights_mb > 0


def test_a_refused_int_export_names_accuracy_level_0_when_float_activations_pass(tmp_path):
    """The hint after a failed int validation: the same weights validated with float
    activations (--accuracy-level 0); when they pass, the int8 activations are named."""
    from export import source
    from export.llm import LlmOptions, fidelity_hint
    from export.steps import Steps

    src = source.resolve(str(hf_model("tiny-qwen2")), "llm")
    model, hf_dir = source.load_llm(src, tmp_path)
    hint = fidelity_hint(src, model, hf_dir, tmp_path, LlmOptions(quant="int4"), 256, Steps())
    assert "--accuracy-level 0" in hint and "int8 activations are the cause" in hint
    # float activations already: nothing more to try there
    opts = LlmOptions(quant="int4", accuracy_level=0)
    hint = fidelity_hint(src, model, hf_dir, tmp_path, opts, 256, Steps())
    assert "--accuracy-level" not in hint and "--block-size" in hint

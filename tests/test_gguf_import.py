"""`ocula export llm FILE.gguf`: the file's own quantized blocks in the artifact, and a broken
source refused.

Tiny GGUFs are written with the `gguf` package (its writer and `gguf.quants`) from a random-
weight Llama (untied head; GQA, so llama.cpp's q/k row permutation is exercised). The reference
is transformers' GGUF loader: the file's weights dequantized to float32. The artifact's weights
are read back from its ONNX initializers and data file and dequantized the way MatMulNBits and
the table lookup define it; the two must be equal bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.artifacts import hf_model
from tests.conftest import run_ocula
from tests.gguf_files import write_gguf


def _one_line_error(r) -> str:  # type: ignore[no-untyped-def]
    assert r.code == 1, (r.code, r.out, r.err)
    lines = [ln for ln in r.err.splitlines() if ln.startswith("ocula: error:")]
    assert len(lines) == 1, r.err
    assert "Traceback" not in r.err
    return lines[0]


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """4-bit codes, the first of each byte in the low nibble."""
    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)


def _matmulnbits_weight(inits: dict[str, np.ndarray], node: str, bits: int) -> np.ndarray:
    """W [N, K] as onnxruntime's MatMulNBits defines it, plus the graph's block minimums."""
    packed = inits[node + ".qweight"]
    n, kb, _ = packed.shape
    codes = (_nibbles(packed) if bits == 4 else packed).astype(np.float32)
    zp = np.full((n, kb), 1 << (bits - 1), np.float32)
    if node + ".zp" in inits:
        z = inits[node + ".zp"]
        zp = (_nibbles(z) if bits == 4 else z)[:, :kb].astype(np.float32)
    w = (codes - zp[..., None]) * inits[node + ".scales"][..., None]
    if node + ".mins_t.fp16" in inits:
        w = w + inits[node + ".mins_t.fp16"].astype(np.float32).T[..., None]
    return w.reshape(n, -1)


def _table(art: Path, emb: dict) -> np.ndarray:
    """The embedding table as the runtime looks rows up: (code - 2^(bits-1)) * scale."""
    data = (art / emb["file"]).read_bytes()
    rows, hidden, bits, block = emb["rows"], emb["hidden"], emb["bits"], emb["block_size"]
    kb = -(-hidden // block)
    blob = block * bits // 8
    codes = np.frombuffer(data, np.uint8, rows * kb * blob, emb["weight_offset"])
    codes = codes.reshape(rows, kb, blob)
    scales = np.frombuffer(data, np.float32, rows * kb, emb["scales_offset"]).reshape(rows, kb)
    c = (_nibbles(codes) if bits == 4 else codes).astype(np.float32)
    return ((c - (1 << (bits - 1))) * scales[..., None]).reshape(rows, -1)[:, :hidden]


def _file_weights(gguf: Path) -> dict[str, np.ndarray]:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("qtype", "table", "quant"),
    [("Q4_0", None, "int4"), ("Q4_1", "Q8_0", "int4"), ("Q8_0", None, "int8")],
)
def test_blocks_kept_exactly(tmp_path: Path, qtype: str, table: str | None, quant: str) -> None:
    import onnx
    from onnx import numpy_helper

    gguf = write_gguf(hf_model("tiny-llama"), tmp_path / f"tiny-{qtype}.gguf", qtype, table)
    art = tmp_path / "art"
    r = run_ocula("export", "llm", str(gguf), "--out", str(art), "--quant", quant)
    assert r.code == 0, r.err
    assert "weights kept exactly" in r.out + r.err and "RE-QUANTIZED" not in r.out + r.err
    m = json.loads((art / "manifest.json").read_text())
    blocks = m["graphs"]["decoder"]["quantization"]["source_blocks"]
    assert blocks["requantized"] == {}, blocks["requantized"]

    model = onnx.load(str(art / "model.onnx"), load_external_data=True)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ref = _file_weights(gguf)
    bits = 4 if quant == "int4" else 8
    checked = 0
    for i in range(2):
        p = f"model.layers.{i}."
        want = {
            f"layers.{i}.attn.qkv": [p + f"self_attn.{x}_proj.weight" for x in "qkv"],
            f"layers.{i}.attn.o": [p + "self_attn.o_proj.weight"],
            f"layers.{i}.mlp.gate_up": [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"],
            f"layers.{i}.mlp.down": [p + "mlp.down_proj.weight"],
        }
        for node, parts in want.items():
            w = np.concatenate([ref[x] for x in parts])
            np.testing.assert_array_equal(_matmulnbits_weight(inits, node, bits), w, err_msg=node)
            checked += 1
    np.testing.assert_array_equal(
        _matmulnbits_weight(inits, "head.lm", bits), ref["lm_head.weight"]
    )
    emb = m["graphs"]["decoder"]["extra"]["embedding"]
    np.testing.assert_array_equal(_table(art, emb), ref["model.embed_tokens.weight"])
    assert checked == 8
    assert m["validation"]["passed"]


def test_requantized_weights_are_named(tmp_path: Path) -> None:
    """Q8_0 layers asked for at 4 bits cannot be kept: the summary says so, loudly, and the
    manifest names each weight and why."""
    gguf = write_gguf(hf_model("tiny-llama"), tmp_path / "tiny-Q8_0.gguf", "Q8_0")
    art = tmp_path / "art"
    r = run_ocula("export", "llm", str(gguf), "--out", str(art), "--quant", "int4")
    assert r.code == 0, r.err
    assert "RE-QUANTIZED" in r.out + r.err
    q = json.loads((art / "manifest.json").read_text())["graphs"]["decoder"]["quantization"]
    redone = q["source_blocks"]["requantized"]
    assert redone["layers.0.attn.qkv"] == "Q8_0 re-quantized to 4-bit block 32 (Q8_0 needs 8 bits)"
    assert q["source_blocks"]["exact"]["embed"].startswith("Q8_0 exact")


def test_broken_merges_refused(tmp_path: Path) -> None:
    """A GGUF whose merges list was cut in conversion: the source's own perplexity gives it
    away (the artifact would match the broken source perfectly)."""
    gguf = write_gguf(hf_model("tiny-qwen2"), tmp_path / "bad.gguf", "Q8_0", damage="merges")
    r = run_ocula("export", "llm", str(gguf), "--out", str(tmp_path / "a"), "--quant", "int8")
    line = _one_line_error(r)
    assert "the source model itself scores perplexity" in line and "SmolLM2-135M: 25.0" in line
    assert not (tmp_path / "a").exists()


def test_tokenizer_without_byte_decoder_refused(tmp_path: Path) -> None:
    """A tokenizer that shows byte-level markers (`TheĠAmerican...`) is refused by name."""
    src = tmp_path / "model"
    shutil.copytree(hf_model("tiny-qwen2"), src)
    tj = json.loads((src / "tokenizer.json").read_text())
    tj["decoder"] = None
    (src / "tokenizer.json").write_text(json.dumps(tj))
    r = run_ocula("export", "llm", str(src), "--out", str(tmp_path / "a"), "--quant", "fp32")
    line = _one_line_error(r)
    assert "tokenizer does not give text back" in line and "Ġ" in line
    assert not (tmp_path / "a").exists()

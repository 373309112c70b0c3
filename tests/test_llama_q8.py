"""`--activations q8`: quantized matmuls see their input as llama.cpp's CPU rounds it.

The reference is llama.cpp's arithmetic written out in numpy from its source (ggml-cpu
quantize_row_q8_1 / quantize_row_q8_0 and ggml_vec_dot_q4_1_q8_1 / _q8_0_q8_0): per block of
32, d = amax / 127, q = round-half-even(x * 127 / amax), the dot d_w * fp16(d) * sum(q_w q)
(+ m_w * fp16(d * sum(q)) for Q4_1). The weights are a tiny GGUF's own blocks, read with the
`gguf` package; the graph is the exporter's own linear layer, run by onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.artifacts import hf_model
from tests.conftest import run_ocula
from tests.gguf_files import write_gguf

DOWN = "model.layers.0.mlp.down_proj.weight"


def _q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """llama.cpp's Q8_1 of rows x [M, K]: (q [M, K/32, 32], fp16(d), fp16(d * sum(q))), as
    float32 values."""
    xb = x.reshape(x.shape[0], -1, 32).astype(np.float32)
    amax = np.abs(xb).max(-1, keepdims=True)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(xb * inv)  # half to even, like _mm256_round_ps(_MM_ROUND_NEAREST)
    d16 = d.astype(np.float16).astype(np.float32)
    s = (d * q.sum(-1, keepdims=True)).astype(np.float16).astype(np.float32)
    return q, d16[..., 0], s[..., 0]


def _activations(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """Rows with blocks of very different sizes, ties at .5 steps and one all-zero block."""
    x = rng.standard_normal((m, k)).astype(np.float32)
    x *= (10.0 ** rng.uniform(-3, 2, (m, k // 32, 1))).repeat(32, -1).reshape(m, k)
    x[0, :32] = 0.0
    x[1, :32] = np.arange(-16, 16, dtype=np.float32) * 0.5  # x * 127 / amax lands on .5s
    return x.astype(np.float32)


def _linear_graph(gguf: Path, hf: Path, quant: str, activations: str, level: int) -> bytes:
    """One exported linear layer (the first down projection, the file's blocks) as ONNX."""
    from onnx import TensorProto, helper

    from export.fused.arch import load_config
    from export.fused.gguf_blocks import GgufBlocks, Plan
    from export.fused.graph import OPSET, Options, _Emitter
    from export.fused.quant import dequantize

    plan = Plan(GgufBlocks(gguf, load_config(hf)))
    e = _Emitter(Options(quant=quant, accuracy_level=level, activations=activations), plan)
    bits = 4 if quant == "int4" else 8
    exact = plan.quantized("probe", [DOWN], bits, 32)
    assert exact is not None
    w = dequantize(exact)
    plan.record.clear()
    y = e.linear("x", "down", w, None, [DOWN])
    k = w.shape[1]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "s", k])
    y_info = helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, "s", w.shape[0]])
    return e.model([x_info], [y_info], "probe", OPSET, 10).SerializeToString()


def _llama_cpp_dot(gguf: Path, hf: Path, x: np.ndarray) -> np.ndarray:
    """x @ W.T as llama.cpp's CPU computes it for the file's DOWN blocks (float64 sums)."""
    from export.fused.arch import load_config
    from export.fused.gguf_blocks import GgufBlocks

    c = GgufBlocks(gguf, load_config(hf)).codes(DOWN)
    qw = c.codes.astype(np.float64) - c.zero  # [N, kb, 32]
    q, d16, s = _q8(x)
    isum = np.einsum("nbi,mbi->mnb", qw, q.astype(np.float64))
    y = (isum * c.scales[None].astype(np.float64) * d16[:, None].astype(np.float64)).sum(-1)
    if c.mins is not None:
        y += s.astype(np.float64) @ c.mins.T.astype(np.float64)
    return y


@pytest.mark.parametrize(("qtype", "quant"), [("Q4_1", "int4"), ("Q8_0", "int8")])
@pytest.mark.parametrize("level", [4, 0])
def test_matmul_matches_llama_cpp_arithmetic(
    tmp_path: Path, qtype: str, quant: str, level: int
) -> None:
    import onnxruntime as ort

    hf = hf_model("tiny-llama")
    gguf = write_gguf(hf, tmp_path / f"tiny-{qtype}.gguf", qtype)
    x = _activations(np.random.default_rng(7), 5, 128)
    want = _llama_cpp_dot(gguf, hf, x)
    errors = {}
    for activations in ("q8", "float"):
        model = _linear_graph(gguf, hf, quant, activations, level)
        s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        got = s.run(None, {"x": x[None]})[0][0].astype(np.float64)
        errors[activations] = float(np.abs(got - want).max() / np.abs(want).max())
    # q8: llama.cpp's products, only the order of float sums differs
    assert errors["q8"] < 2e-6, errors
    # float activations at level 0, int8 ones with fp32 scales at level 4: visibly not llama.cpp's
    assert errors["float"] > 50 * max(errors["q8"], 1e-7), errors


def test_rounding_nodes_are_bit_exact() -> None:
    """x' = q * fp16(d) and Q8_1's s, from the graph, equal llama.cpp's bit for bit."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from export.fused.llama_q8 import round_q8
    from export.onnxgraph import GraphWriter

    g = GraphWriter()
    xq, s = round_q8(g, "x", 256, "probe", with_sums=True)
    assert s is not None
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", xq, s)]
    model = g.model(io[:1], io[1:], "probe", 21, 10).SerializeToString()
    x = _activations(np.random.default_rng(3), 9, 256)
    got_x, got_s = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"x": x[None]}
    )
    q, d16, want_s = _q8(x)
    np.testing.assert_array_equal(got_x[0], (q * d16[..., None]).reshape(x.shape))
    np.testing.assert_array_equal(got_s[0], want_s)


def test_cli_records_and_refuses(tmp_path: Path) -> None:
    """The option reaches the artifact (manifest) and a combination it cannot honour is one
    clear line."""
    gguf = write_gguf(hf_model("tiny-llama"), tmp_path / "tiny.gguf", "Q4_1", "Q8_0")
    art = tmp_path / "art"
    r = run_ocula("export", "llm", str(gguf), "--out", str(art), "--activations", "q8")
    assert r.code == 0, r.err
    m = json.loads((art / "manifest.json").read_text())
    assert m["graphs"]["decoder"]["extra"]["activations"] == "q8"
    assert m["validation"]["passed"]
    for bad, word in (
        (["--activations", "q8", "--block-size", "64"], "--block-size 32"),
        (["--activations", "q8", "--quant", "fp16"], "--quant int4 or int8"),
        (["--activations", "int8"], "choose one of float, q8"),
    ):
        r = run_ocula("export", "llm", str(gguf), "--out", str(tmp_path / "x"), *bad)
        assert r.code == 2 and "Traceback" not in r.err, r.err  # a usage error
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ocula: error:"), r.err
        assert word in lines[0], r.err
        assert not (tmp_path / "x").exists()  # refused before anything is written

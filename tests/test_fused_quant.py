"""MatMulNBits / GatherBlockQuantized packing: onnxruntime must compute with exactly the weights
that `dequantize` says were stored (the reference the graph tests build their PyTorch model from)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.fused.quant import dequantize, dequantize_split, quantize, split8, unpack


def _session(nodes: list, inits: list, inputs: list, outputs: list) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "q", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("k", "block"), [(96, 32), (80, 16), (40, 32)])
def test_matmulnbits_computes_with_the_dequantized_weight(bits, symmetric, k, block):
    rng = np.random.default_rng(bits * 100 + k)
    n = 24
    w = rng.standard_normal((n, k)).astype(np.float32)
    plain = quantize(w, bits, block, symmetric, search=False)
    # rounding to nearest: every weight within one step of its block's grid (the symmetric
    # grid's top code is one short, so the largest positive value may be a full step off)
    step = np.abs(np.repeat(plain.scales, block, axis=1)[:, :k])
    assert np.all(np.abs(dequantize(plain) - w) <= step * (1.0 if symmetric else 0.51) + 1e-6)
    q = quantize(w, bits, block, symmetric)
    ref = dequantize(q)
    assert ref.shape == (n, k)
    inits = [numpy_helper.from_array(q.packed, "B"), numpy_helper.from_array(q.scales, "S")]
    ins = ["x", "B", "S"]
    if q.zero_points is not None:
        inits.append(numpy_helper.from_array(q.zero_points, "Z"))
        ins.append("Z")
    node = helper.make_node(
        "MatMulNBits", ins, ["y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=block
    )
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    x = rng.standard_normal((3, k)).astype(np.float32)
    (y,) = _session([node], inits, [x_info], [y_info]).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ ref.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gather_block_quantized_reads_the_matmulnbits_bytes(bits, symmetric):
    """The tied embedding: one packed initializer serves the lookup and the head."""
    rng = np.random.default_rng(7)
    v, h, block = 50, 64, 32
    q = quantize(rng.standard_normal((v, h)).astype(np.float32), bits, block, symmetric)
    ref = dequantize(q)
    inits = [
        numpy_helper.from_array(q.packed, "B"),
        numpy_helper.from_array(q.scales[..., None], "S3"),
    ]
    ins = ["B", "ids", "S3"]
    if q.zero_points is not None:
        zp = unpack(q.zero_points, bits, q.packed.shape[1])[..., None]
        inits.append(numpy_helper.from_array(zp, "Z3"))
        ins.append("Z3")
    node = helper.make_node(
        "GatherBlockQuantized",
        ins,
        ["rows"],
        domain="com.microsoft",
        bits=bits,
        block_size=block,
        gather_axis=0,
        quantize_axis=2,
    )
    ids_info = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])
    out_info = helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)
    ids = np.array([[0, 3, 49, 3]], np.int64)
    (rows,) = _session([node], inits, [ids_info], [out_info]).run(None, {"ids": ids})
    np.testing.assert_array_equal(rows.reshape(1, 4, h), ref[ids])


def test_symmetric_search_never_loses_to_plain_rounding():
    rng = np.random.default_rng(3)
    w = rng.standard_t(3, size=(64, 256)).astype(np.float32)  # heavy tails, like real weights
    plain = np.square(dequantize(quantize(w, 4, 32, True, search=False)) - w).sum()
    searched = np.square(dequantize(quantize(w, 4, 32, True, search=True)) - w).sum()
    assert searched < plain


def test_all_zero_block_is_exact():
    w = np.zeros((2, 64), np.float32)
    w[1, 40] = 0.5
    for symmetric in (True, False):
        ref = dequantize(quantize(w, 4, 32, symmetric))
        np.testing.assert_array_equal(ref, w)


def test_split8_planes_recombine_to_an_8_bit_grid():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((40, 72)).astype(np.float32)
    w[3, 5] = 9.0  # an outlier: its block's step grows, the others' do not
    s = split8(w, 32)
    step = np.abs(np.repeat(s.high.scales / 16, 32, axis=1)[:, :72])
    # both planes: rounding to nearest on the 8-bit step
    assert np.all(np.abs(dequantize_split(s) - w) <= step * 0.5 + 1e-6)
    # the high plane alone: a 4-bit grid 16 steps wide, off by at most half of it (plus the
    # 8-bit rounding it starts from)
    assert np.all(np.abs(dequantize(s.high) - w) <= step * 8.5 + 1e-6)
    assert s.low.shape == s.high.packed.shape and s.low.dtype == np.uint8


def test_split8_is_plain_8_bit_quantization_where_its_planes_allow():
    """The peak maps to code -128 (plain 8-bit quantization's step) unless a value of the other
    sign would need a code above 119, the most the two planes hold; then the step grows just
    enough, and rounding stays to nearest."""
    rng = np.random.default_rng(3)
    w = rng.uniform(-0.8, 0.8, (16, 64)).astype(np.float32)
    w[:, ::32] = -1.0  # every block's peak is -1, no other value within 0.8 of it
    np.testing.assert_array_equal(
        dequantize_split(split8(w, 32)), dequantize(quantize(w, 8, 32, True))
    )
    w[0, 1] = 1.0  # this block's other sign reaches the peak: step 1 / 119, not 1 / 128
    s = split8(w, 32)
    assert np.isclose(abs(s.high.scales[0, 0]) / 16, 1 / 119)
    assert np.all(np.abs(dequantize_split(s) - w)[0, :32] <= 0.5 / 119 + 1e-7)
    assert np.isclose(abs(s.high.scales[1, 0]) / 16, 1 / 128)

"""Activations rounded as llama.cpp's CPU rounds them before a quantized matmul (`activations="q8"`).

llama.cpp multiplies a Q4_0 / Q4_1 / Q8_0 weight by a row of activations only after converting
that row to Q8_0 or Q8_1 (ggml-cpu quantize_row_q8_0 / quantize_row_q8_1), per block of 32:

    d = amax / 127 (fp32),  q = round_half_even(x * (127 / amax)) (0 when amax is 0)
    stored: fp16(d), the 32 int8 q, and for Q8_1 s = fp16(d * sum(q))
    dot:    d_w * fp16(d) * sum(q_w * q)  (+ m_w * s for Q4_1's block minimum)

so the products use x' = q * fp16(d), not x. The nodes here compute x' (and s) in the graph with
the same float operations: ONNX Round is half-to-even like _mm256_round_ps(_MM_ROUND_NEAREST),
Cast to float16 rounds to nearest-even like F16C. MatMulNBits then gets x': at accuracy level 4
its own int8 quantization of x' gives back q and fp16(d) exactly (amax of x' is 127 * fp16(d),
exact in fp32), at level 0 it multiplies x' in fp32; either way only the order of float sums
differs from llama.cpp. About ten small elementwise nodes per quantized matmul.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto

from export.fused.errors import FusedError

if TYPE_CHECKING:
    from export.onnxgraph import GraphWriter

BLOCK = 32  # llama.cpp's QK8_0 = QK8_1


def round_q8(e: GraphWriter, x: str, k: int, name: str, with_sums: bool) -> tuple[str, str | None]:
    """x [1, S, k] -> (x' [1, S, k], s [1, S, k / 32] or None): x on llama.cpp's Q8 grid, and
    Q8_1's per-block s = fp16(d * sum(q)) when `with_sums` (what multiplies a Q4_1 minimum)."""
    if k % BLOCK:
        raise FusedError(
            f"{name}: input width {k} is not a multiple of {BLOCK}, which --activations q8 "
            "(llama.cpp's Q8 blocks) needs; export with --activations float"
        )
    kb = k // BLOCK
    blocks = e.const(name + ".q8_blocks", np.array([1, -1, kb, BLOCK], np.int64))
    xb = e.op("Reshape", [x, blocks], name + ".q8_by_block")[0]
    axes = e.const(name + ".q8_axis", np.array([-1], np.int64))
    amax = e.op("ReduceMax", [e.op("Abs", [xb], name + ".q8_abs")[0], axes], name + ".q8_amax")[0]
    c127 = e.const(name + ".q8_127", np.array(127.0, np.float32))
    zero = e.const(name + ".q8_zero", np.array(0.0, np.float32))
    d = e.op("Div", [amax, c127], name + ".q8_d")[0]
    inv = e.op("Div", [c127, amax], name + ".q8_inv")[0]
    nonzero = e.op("Greater", [amax, zero], name + ".q8_nonzero")[0]
    inv = e.op("Where", [nonzero, inv, zero], name + ".q8_inv_safe")[0]
    q = e.op("Round", [e.op("Mul", [xb, inv], name + ".q8_scaled")[0]], name + ".q8_q")[0]
    d16 = _fp16(e, d, name + ".q8_d16")
    xq = e.op("Mul", [q, d16], name + ".q8_x")[0]
    flat = e.const(name + ".q8_flat", np.array([1, -1, k], np.int64))
    xq = e.op("Reshape", [xq, flat], name + ".q8_flat")[0]
    if not with_sums:
        return xq, None
    total = e.op("ReduceSum", [q, axes], name + ".q8_qsum")[0]  # integers: exact in fp32
    s = _fp16(e, e.op("Mul", [d, total], name + ".q8_s32")[0], name + ".q8_s")
    by_block = e.const(name + ".q8_sums_shape", np.array([1, -1, kb], np.int64))
    return xq, e.op("Reshape", [s, by_block], name + ".q8_sums")[0]


def _fp16(e: GraphWriter, x: str, name: str) -> str:
    """x rounded to the nearest float16 (ties to even), as float32."""
    half = e.op("Cast", [x], name + "/to_half", to=TensorProto.FLOAT16)[0]
    return e.op("Cast", [half], name, to=TensorProto.FLOAT)[0]

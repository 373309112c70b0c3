"""The shared core: emit a whole decoder as one ONNX graph of onnxruntime contrib operators.

Per layer (10 nodes when quantized):

    SkipSimplifiedLayerNormalization   residual add + RMS norm (layer 0: SimplifiedLayerNormalization)
    MatMulNBits qkv                    q, k and v packed into one weight (bias as its input)
    GroupQueryAttention                rotary inside (cos/sin tables as initializers), per-head
                                       q/k RMS norm inside where the family has it, past and
                                       present KV sharing one [1, kv_heads, max_length, head_dim]
                                       buffer (float32, or float16 with `Options.kv_dtype`:
                                       q/k/v cast to fp16 before it, its output back after)
    MatMulNBits o
    SkipSimplifiedLayerNormalization
    MatMulNBits gate_up                gate and up packed into one weight
    Split, QuickGelu(alpha=1) = SiLU, Mul
    MatMulNBits down

then the final norm, a Slice to the last `num_logits` positions, and the head. `num_logits`
(int64 [1]) is an input with a default of 1 (an initializer of the same name, which onnxruntime
lets a run override): prefill and decode feed nothing and get the last position's logits
[1, 1, V]; a speculative verify run feeds m and gets [1, m, V] for its last m positions. The embedding table is stored
once: in float, Gather and Gemm(transB) share one initializer. Quantized and tied, the head
is MatMulNBits over row chunks of the table's bytes: each chunk is its own initializer, a
`View` that the artifact's external data file points at inside the table's bytes (see
builder._save). onnxruntime prepacks every MatMulNBits weight into a copy of its own and
frees the original, so the head holds the table once in memory. The lookup is the runtime's
(`Options.runtime_lookup`, symmetric tables): the table is in the data file only, where the
runtime reads the rows it needs (`embed_codes`, `embed_scales` inputs: the rows' bytes and
scales as stored) and the graph dequantizes them as GatherBlockQuantized would; onnxruntime
never maps the table (a mapped table looked up in place became resident a 2 MB folio around
every row, on real text all of it). Otherwise GatherBlockQuantized reads the table in the
graph. Chunks bound the
load-time peak: while a chunk is prepacked its source pages are resident beside everything
prepacked before it.

Split head (`Options.head_candidates` > 0, int4 layers with an 8-bit tied table, off by
default): the table is stored as two 4-bit planes (`quant.Split8`); the lookup gathers both
rows; the head scores the whole vocabulary on the high plane (MatMulNBits, 4 bits read per
weight), takes the TopK candidates, adds the low plane's share to them (one small gather and a
Gemm in float) and scatters them over the approximations. The K best logits are the 8-bit
table's; the others are 4-bit approximations. On SmolLM2 (export/fidelity's passage)
perplexity is x1.171 of fp32 with K = 64, x1.160 with 256, x1.146 with 2048, against x1.133
for the plain 8-bit head and x1.248 for a 4-bit table; top-1 0.695 against 0.703. On
qwen2.5-0.5b's head (V = 151936) the second stage costs 0.2 ms at K = 64, 0.3-0.4 ms at
256 and 1.2 ms at 1024 (TopK a third to a half of it, the gather and Gemm the rest) against
the 1.6 ms that reading 4 bits instead of 8 saves (BENCHMARKS.md, "Fused LLM graph").

`Weights` hands out float32 arrays by Hugging Face name; this module never reads files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.fused.arch import Shape
from export.fused.heads import attn_dim, pad_heads, pad_norm_weight, pad_o_proj, pad_rotary
from export.fused.llama_q8 import round_q8
from export.fused.quant import Quantized, quantize, split8, unpack
from export.onnxgraph import GraphWriter

if TYPE_CHECKING:
    from export.fused.gguf_blocks import Plan

Weights = Callable[[str], np.ndarray]

OPSET = 21
QUANTS = {"fp32": 0, "fp16": 0, "int8": 8, "int4": 4}
KV_TYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
}  # export.choices.KV_DTYPES


@dataclass(frozen=True)
class Options:
    quant: str = "int4"
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    embed_quant: str | None = None  # the embedding table (and a tied head); None: as `quant`
    embed_block_size: int | None = None  # None: as `block_size`
    scale_search: bool = False  # see quant.quantize: less weight error, worse perplexity
    # int4 with an 8-bit tied table: the head scores every token on the table's high 4-bit
    # plane, then recomputes this many best candidates at the full 8 bits (0: read all 8 bits).
    head_candidates: int = 0
    # A quantized symmetric table is looked up by the runtime (the graph takes the rows' codes
    # and scales; see `_rows_input`); False keeps GatherBlockQuantized in the graph.
    runtime_lookup: bool = True
    # The KV cache's element type: "float16" halves its memory; attention then runs in fp16
    # (onnxruntime's GroupQueryAttention takes one type for query, cache and rotary tables).
    kv_dtype: str = "float32"
    # "q8": every quantized matmul's input is first rounded as llama.cpp's CPU rounds it (Q8_0 /
    # Q8_1 per block of 32, fp16 scales; see llama_q8), so a GGUF's tokens follow llama.cpp's.
    activations: str = "float"

    @property
    def embed_block(self) -> int:
        return self.embed_block_size or self.block_size

    @property
    def bits(self) -> int:
        return QUANTS[self.quant]

    @property
    def embed_bits(self) -> int:
        return QUANTS[self.embed_quant] if self.embed_quant and self.bits else self.bits

    def split_head(self, tied: bool) -> bool:
        """Whether the table is stored as two 4-bit planes and the head runs in two stages."""
        return (
            tied
            and self.bits == 4
            and self.embed_bits == 8
            and self.symmetric
            and self.head_candidates > 0
        )


def past_name(layer: int, kind: str) -> str:
    return f"past_key_values.{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    return f"present.{layer}.{kind}"


# The graph inputs of a table that the runtime looks up (Options.runtime_lookup): the rows'
# packed codes [1, S, k_blocks, block * bits / 8] and scales [1, S, k_blocks, 1].
CODES, SCALES = "embed_codes", "embed_scales"
# How many last positions get logits (see the module docstring); its default is 1.
NUM_LOGITS = "num_logits"
# The tied head's row chunks hold at most this many bytes of packed weight (see the module
# docstring); rows per chunk are a multiple of VIEW_ROWS so every chunk starts on a page.
HEAD_CHUNK_BYTES = 24 << 20
VIEW_ROWS = 4096


@dataclass(frozen=True)
class View:
    """An initializer whose bytes are a contiguous range of another initializer's."""

    base: str
    offset: int  # bytes into the base


class _Emitter(GraphWriter):
    """The decoder's writer: the options and the GGUF plan its weights follow, and the
    initializers that are views of others."""

    def __init__(self, opts: Options, plan: Plan | None = None) -> None:
        super().__init__()
        self.opts = opts
        self.plan = plan  # a GGUF source: weights whose blocks are kept as the file has them
        self.views: dict[str, View] = {}

    def view(self, name: str, base: str, base_value: np.ndarray, start: int, stop: int) -> str:
        """Rows [start, stop) of the initializer `base` (whose value is `base_value`) as an
        initializer of their own that shares the base's bytes in the saved artifact."""
        part = np.ascontiguousarray(base_value[start:stop])
        self.const(name, part)
        self.views[name] = View(base, start * (base_value.nbytes // len(base_value)))
        return name

    def float_weight(self, name: str, w: np.ndarray) -> str:
        """A float weight: fp32 as is, fp16 stored half-size and cast once at load."""
        if self.opts.quant == "fp16":
            half = self.const(name + ".fp16", w.astype(np.float16))
            return self.op("Cast", [half], name + "/cast", to=TensorProto.FLOAT)[0]
        return self.const(name, w.astype(np.float32))

    def quantized(
        self, name: str, parts: list[str], w: np.ndarray, bits: int, block: int, lookup: bool
    ) -> Quantized:
        """W (the HF weights `parts`, concatenated) quantized: the source file's own blocks
        where they map exactly (checked against W), otherwise quantized here."""
        if self.plan is not None and not parts:
            self.plan.record[name] = f"re-quantized to {bits}-bit (head size padded)"
        if self.plan is not None and parts:
            q = self.plan.quantized(name, parts, bits, block, allow_mins=not lookup)
            if q is not None:
                from export.fused.gguf_blocks import check_exact

                check_exact(q, w, name)
                return q
        o = self.opts
        return quantize(w, bits, block, o.symmetric, o.scale_search)

    def linear(
        self, x: str, name: str, w: np.ndarray, bias: np.ndarray | None, parts: list[str]
    ) -> str:
        """y = x @ W.T + b for W [N, K] (Hugging Face layout; `parts`: its HF names)."""
        n, k = w.shape
        o = self.opts
        if o.bits:
            q = self.quantized(name, parts, w, o.bits, o.block_size, lookup=False)
            sums = None
            if o.activations == "q8":
                x, sums = round_q8(self, x, k, name, with_sums=q.mins is not None)
            ins = [
                x,
                self.const(name + ".qweight", q.packed),
                self.const(name + ".scales", q.scales),
            ]
            ins.append("" if q.zero_points is None else self.const(name + ".zp", q.zero_points))
            if bias is not None:
                ins += ["", self.const(name + ".bias", bias.astype(np.float32))]
            attrs = {"K": k, "N": n, "bits": o.bits, "block_size": q.block_size}
            y = self.op("MatMulNBits", ins, name, accuracy_level=o.accuracy_level, **attrs)[0]
            return y if q.mins is None else self.block_mins(x, y, name, q, sums)
        w_t = self.float_weight(name + ".weight_t", w.T)
        b = None if bias is None else self.const(name + ".bias", bias.astype(np.float32))
        return self.matmul(x, w_t, name, b)

    def block_mins(self, x: str, y: str, name: str, q: Quantized, sums: str | None) -> str:
        """y + (x's sums over each block) @ mins.T: the blocks' minimums (w = ... + min), which
        MatMulNBits has no input for. `sums`: the block sums already computed (llama_q8's s),
        else x's are summed here. Minimums that are fp16 values (GGUF's) are stored so."""
        kb = q.scales.shape[1]
        if sums is None:
            shape = self.const(name + ".by_block", np.array([1, -1, kb, q.block_size], np.int64))
            xb = self.op("Reshape", [x, shape], name + ".by_block")[0]
            axes = self.const(name + ".block_axis", np.array([-1], np.int64))
            sums = self.op("ReduceSum", [xb, axes], name + ".block_sums", keepdims=0)[0]
        assert q.mins is not None
        mins_t = np.ascontiguousarray(q.mins.T)
        if np.array_equal(mins_t.astype(np.float16).astype(np.float32), mins_t):
            half = self.const(name + ".mins_t.fp16", mins_t.astype(np.float16))
            m = self.op("Cast", [half], name + ".mins_t/cast", to=TensorProto.FLOAT)[0]
        else:
            m = self.const(name + ".mins_t", mins_t)
        offset = self.op("MatMul", [sums, m], name + ".mins")[0]
        return self.op("Add", [y, offset], name + ".with_mins")[0]


def _bias(weights: Weights, name: str, present: bool) -> np.ndarray | None:
    return weights(name) if present else None


def _attention(e: _Emitter, s: Shape, weights: Weights, i: int, x: str) -> str:
    p = f"model.layers.{i}.self_attn."
    d, big = s.head_dim, attn_dim(s.head_dim)  # heads padded to what GQA runs (heads.py)
    heads = {"q_proj": s.num_heads, "k_proj": s.kv_heads, "v_proj": s.kv_heads}

    def proj(name: str, part: str) -> np.ndarray:
        return pad_heads(weights(p + name + part), heads[name], d, big, name != "v_proj")

    w = np.concatenate([proj(n, ".weight") for n in heads])
    bias = None
    if s.attention_bias:
        bias = np.concatenate([proj(n, ".bias") for n in heads])
    # a source file's own blocks are kept only where the heads are not padded
    parts = [p + n + ".weight" for n in heads] if big == d else []
    qkv = e.linear(x, f"layers.{i}.attn.qkv", w, bias, parts)
    ins = [
        qkv,
        "",
        "",
        past_name(i, "key"),
        past_name(i, "value"),
        "seqlens_k",
        "total_sequence_length",
    ]
    ins += ["cos_cache", "sin_cache"]
    attrs: dict[str, object] = {
        "num_heads": s.num_heads,
        "kv_num_heads": s.kv_heads,
        "do_rotary": 1,
    }
    if big != d:
        attrs["scale"] = float(1 / np.sqrt(d))
    if s.family.qk_norm:
        ins[0] = _qk_norm(e, s, weights, i, qkv)
    half = e.opts.kv_dtype == "float16"
    if half:
        ins[0] = e.op("Cast", [ins[0]], f"layers.{i}.attn.to_half", to=TensorProto.FLOAT16)[0]
        ins[-2:] = ["cos_cache.fp16", "sin_cache.fp16"]
    out, _, _ = e.op("GroupQueryAttention", ins, f"layers.{i}.attn.gqa", n_out=3, **attrs)
    # The present outputs are named for the runtime: it binds them to the past buffers.
    node = e.nodes[-1]
    node.output[1] = present_name(i, "key")
    node.output[2] = present_name(i, "value")
    if half:
        out = e.op("Cast", [out], f"layers.{i}.attn.to_float", to=TensorProto.FLOAT)[0]
    o_bias = _bias(weights, p + "o_proj.bias", s.attention_bias and not s.family.qkv_bias)
    o_name = p + "o_proj.weight"
    o = pad_o_proj(weights(o_name), s.num_heads, d, big)
    return e.linear(out, f"layers.{i}.attn.o", o, o_bias, [o_name] if big == d else [])


def _qk_norm(e: _Emitter, s: Shape, weights: Weights, i: int, qkv: str) -> str:
    """Per-head RMS norm of q and k inside packed qkv (onnxruntime's CPU GroupQueryAttention
    has no q/k-norm inputs). q and k heads are normalized together with a unit scale, then
    multiplied by their own weights, so it costs one norm and one Mul per layer."""
    p = f"model.layers.{i}.self_attn."
    name = f"layers.{i}.attn.qk_norm"
    d, big = s.head_dim, attn_dim(s.head_dim)
    heads = s.num_heads + s.kv_heads
    sizes = e.const(name + ".sizes", np.array([heads * big, s.kv_heads * big], np.int64))
    qk, v = e.op("Split", [qkv, sizes], name + ".split", n_out=2, axis=-1)
    by_head = e.const(name + ".by_head", np.array([1, -1, heads, big], np.int64))
    x = e.op("Reshape", [qk, by_head], name + ".by_head")[0]
    ones = e.const(name + ".ones", np.ones(big, np.float32))
    eps = s.rms_eps * d / big
    x = e.op("SimplifiedLayerNormalization", [x, ones], name, axis=-1, epsilon=eps)[0]
    gamma = np.concatenate(
        [
            np.tile(pad_norm_weight(weights(p + "q_norm.weight"), d, big), (s.num_heads, 1)),
            np.tile(pad_norm_weight(weights(p + "k_norm.weight"), d, big), (s.kv_heads, 1)),
        ]
    )
    x = e.op("Mul", [x, e.const(name + ".weight", gamma.astype(np.float32))], name + ".scale")[0]
    flat = e.const(name + ".flat", np.array([1, -1, heads * big], np.int64))
    x = e.op("Reshape", [x, flat], name + ".flat")[0]
    return e.op("Concat", [x, v], name + ".packed", axis=-1)[0]


def _mlp(e: _Emitter, s: Shape, weights: Weights, i: int, x: str) -> str:
    p = f"model.layers.{i}.mlp."
    w = np.concatenate([weights(p + "gate_proj.weight"), weights(p + "up_proj.weight")])
    bias = None
    if s.mlp_bias:
        bias = np.concatenate([weights(p + "gate_proj.bias"), weights(p + "up_proj.bias")])
    gate_up = e.linear(
        x, f"layers.{i}.mlp.gate_up", w, bias, [p + "gate_proj.weight", p + "up_proj.weight"]
    )
    gate, up = e.op("Split", [gate_up, "split_sizes"], f"layers.{i}.mlp.split", n_out=2, axis=-1)
    act = e.op("QuickGelu", [gate], f"layers.{i}.mlp.silu", alpha=1.0)[0]
    h = e.op("Mul", [act, up], f"layers.{i}.mlp.mul")[0]
    return e.linear(
        h,
        f"layers.{i}.mlp.down",
        weights(p + "down_proj.weight"),
        _bias(weights, p + "down_proj.bias", s.mlp_bias),
        [p + "down_proj.weight"],
    )


def _norm(
    e: _Emitter, x: str, residual: str | None, gamma: np.ndarray, name: str, eps: float
) -> tuple[str, str]:
    """RMS norm of x (+ residual); returns (normed, new residual)."""
    g = e.const(name + ".weight", gamma.astype(np.float32))
    if residual is None:
        return e.layer_norm(x, g, eps, name), x
    return e.skip_norm(x, residual, g, eps, name)


@dataclass(frozen=True)
class _Table:
    """The embedding table's initializers, so a tied head reads the same bytes."""

    weight: str  # float: [V, H]; quantized: packed [V, k_blocks, blob]
    scales: str = ""  # quantized: [V, k_blocks], the layout MatMulNBits wants
    zero_points: str = ""
    quantized: Quantized | None = None  # quantized and tied: the `Quantized` table the head views
    low: str = ""  # split 8-bit table: the low plane (`weight` is then the high plane)
    scales3: str = ""  # split: [V, k_blocks, 1], the layout GatherBlockQuantized wants
    width: int = 0  # split: k_blocks * block (the padded hidden size)


def _embedding(e: _Emitter, s: Shape, weights: Weights) -> tuple[str, _Table]:
    """The token lookup: embeddings [1, S, H] and the table for a tied head."""
    table = weights("model.embed_tokens.weight")
    o = e.opts
    bits = o.embed_bits
    if not bits:
        w = e.float_weight("embed.weight", table)
        return e.op("Gather", [w, "input_ids"], "embed.lookup", axis=0)[0], _Table(w)
    if o.split_head(s.tied):
        return _split_embedding(e, s, table)
    embed = "model.embed_tokens.weight"
    q = e.quantized("embed", [embed], table, bits, o.embed_block, lookup=True)
    kb = q.packed.shape[1]
    packed = e.const("embed.qweight", q.packed)
    if o.runtime_lookup and q.zero_points is None:
        # No node reads the table: it is saved in the data file only (builder._save), where the
        # tied head's chunks view it and the runtime reads the rows it looks up (pread), so
        # onnxruntime never maps it.
        e.const("embed.scales3", q.scales[..., None])
        flat = _rows_input(e, bits, kb * o.embed_block)
        if kb * o.embed_block != s.hidden:
            flat = _slice(e, flat, 0, s.hidden, 2, "embed.unpad")
        return flat, _Table(packed, "embed.scales3", quantized=q if s.tied else None)
    # Viewed as [V, k_blocks, block] the packed rows are blocks along the last axis, the bytes
    # of MatMulNBits' weight; the tied head reads them through views (`_tied_head`).
    ins = [packed, "input_ids", e.const("embed.scales3", q.scales[..., None])]
    if q.zero_points is not None:
        ins.append(e.const("embed.zp3", unpack(q.zero_points, bits, kb)[..., None]))
    attrs = {"bits": bits, "block_size": o.embed_block, "gather_axis": 0, "quantize_axis": 2}
    rows = e.op("GatherBlockQuantized", ins, "embed.lookup", **attrs)[0]
    width = kb * o.embed_block
    shape = e.const("embed.shape", np.array([1, -1, width], np.int64))
    flat = e.op("Reshape", [rows, shape], "embed.flat")[0]
    if width != s.hidden:
        flat = _slice(e, flat, 0, s.hidden, 2, "embed.unpad")
    return flat, _Table(packed, "embed.scales3", quantized=q if s.tied else None)


def _rows_input(e: _Emitter, bits: int, width: int) -> str:
    """Embeddings [1, S, width] from the rows the runtime read: (code - 2^(bits-1)) * scale
    in float32 per block, codes unsigned, the low nibble first at 4 bits; the arithmetic of
    GatherBlockQuantized, so the result is bit-identical."""
    codes = CODES
    if bits == 4:
        lo = e.op(
            "BitwiseAnd", [codes, e.const("embed.low_mask", np.array(15, np.uint8))], "embed.lo"
        )
        hi = e.op(
            "BitShift",
            [codes, e.const("embed.shift", np.array(4, np.uint8))],
            "embed.hi",
            direction="RIGHT",
        )
        axis = e.const("embed.pair_axis", np.array([-1], np.int64))
        pair = [
            e.op("Unsqueeze", [x[0], axis], f"embed.{n}_pair")[0]
            for x, n in ((lo, "lo"), (hi, "hi"))
        ]
        both = e.op("Concat", pair, "embed.nibbles", axis=-1)[0]
        codes = e.op(
            "Reshape",
            [
                both,
                e.const(
                    "embed.blocks",
                    np.array([1, -1, width // e.opts.embed_block, e.opts.embed_block], np.int64),
                ),
            ],
            "embed.unpacked",
        )[0]
    x = e.op("Cast", [codes], "embed.cast", to=TensorProto.FLOAT)[0]
    zero = e.const("embed.zero", np.array(1 << (bits - 1), np.float32))
    x = e.op("Sub", [x, zero], "embed.centre")[0]
    x = e.op("Mul", [x, SCALES], "embed.scale")[0]
    shape = e.const("embed.shape", np.array([1, -1, width], np.int64))
    return e.op("Reshape", [x, shape], "embed.flat")[0]


def _tied_head(e: _Emitter, s: Shape, last: str, t: _Table) -> None:
    """MatMulNBits over row chunks of the quantized table, logits concatenated."""
    q = t.quantized
    assert q is not None
    o = e.opts
    row_bytes = q.packed.nbytes // q.n
    rows = max(1, HEAD_CHUNK_BYTES // (row_bytes * VIEW_ROWS)) * VIEW_ROWS
    outs = []
    for i, start in enumerate(range(0, q.n, rows)):
        stop = min(start + rows, q.n)
        name = f"head.lm.{i}"
        ins = [
            last,
            e.view(name + ".qweight", t.weight, q.packed, start, stop),
            e.view(name + ".scales", t.scales, q.scales, start, stop),
        ]
        if q.zero_points is not None:
            ins.append(e.const(name + ".zp", q.zero_points[start:stop]))
        attrs = {"K": s.hidden, "N": stop - start, "bits": q.bits, "block_size": q.block_size}
        outs += e.op("MatMulNBits", ins, name, accuracy_level=o.accuracy_level, **attrs)
    if len(outs) > 1:
        e.op("Concat", outs, "head.lm", axis=-1)


def _split_embedding(e: _Emitter, s: Shape, table: np.ndarray) -> tuple[str, _Table]:
    """The 8-bit table as two 4-bit planes (see `quant.Split8`): a lookup gathers both rows."""
    block = e.opts.embed_block
    sp = split8(table, block)
    kb = sp.high.packed.shape[1]
    t = _Table(
        weight=e.const("embed.qweight_high", sp.high.packed),
        scales=e.const("embed.scales", sp.high.scales),
        low=e.const("embed.qweight_low", sp.low),
        scales3=e.const("embed.scales3", sp.high.scales[..., None]),
        width=kb * block,
    )
    e.const("embed.low_scale", np.array(1 / 16, np.float32))
    e.const("embed.shape", np.array([1, -1, t.width], np.int64))
    rows = _split_rows(e, t, "input_ids", "embed.lookup")
    flat = e.op("Reshape", [rows, "embed.shape"], "embed.flat")[0]
    if t.width != s.hidden:
        flat = _slice(e, flat, 0, s.hidden, 2, "embed.unpad")
    return flat, t


def _split_rows(e: _Emitter, t: _Table, ids: str, name: str) -> str:
    """Rows `ids` of a split table at 8 bits: [*ids.shape, k_blocks, block]."""
    attrs = {"bits": 4, "block_size": e.opts.embed_block, "gather_axis": 0, "quantize_axis": 2}
    hi = e.op("GatherBlockQuantized", [t.weight, ids, t.scales3], name + ".high", **attrs)[0]
    lo = e.op("GatherBlockQuantized", [t.low, ids, t.scales3], name + ".low", **attrs)[0]
    lo = e.op("Mul", [lo, "embed.low_scale"], name + ".low_scale")[0]
    return e.op("Add", [hi, lo], name)[0]


def _split_head(e: _Emitter, s: Shape, last: str, t: _Table) -> None:
    """Two-stage tied head: every logit from the high plane (4 bits read per weight), then the
    `head_candidates` best corrected by the low plane: logit += x . low rows (one gather of
    the low plane and a [1, K] Gemm in float, x scaled by 1/16 once), written over their
    approximations. A top-k of at most that many sees the 8-bit table's logits (with the
    high part's activations quantized as `accuracy_level` says, as the plain 8-bit head's)."""
    o = e.opts
    k = min(o.head_candidates, s.vocab)
    attrs = {"K": s.hidden, "N": s.vocab, "bits": 4, "block_size": o.embed_block}
    ins = [last, t.weight, t.scales]
    approx = e.op("MatMulNBits", ins, "head.approx", accuracy_level=o.accuracy_level, **attrs)[0]
    kc = e.const("head.k", np.array([k], np.int64))
    # unsorted: the scatter below does not need the order (measured no slower either way)
    top, idx = e.op("TopK", [approx, kc], "head.top", n_out=2, axis=-1, sorted=0)
    flat_idx = e.op("Reshape", [idx, e.const("head.k_flat", np.array([k], np.int64))], "head.ids")
    gather = {"bits": 4, "block_size": o.embed_block, "gather_axis": 0, "quantize_axis": 2}
    rows = e.op("GatherBlockQuantized", [t.low, flat_idx[0], t.scales3], "head.low", **gather)[0]
    rows = e.op(
        "Reshape",
        [rows, e.const("head.rows_shape", np.array([-1, k, t.width], np.int64))],
        "head.rows_flat",
    )[0]
    x = e.op(
        "Reshape", [last, e.const("head.x_shape", np.array([-1, s.hidden], np.int64))], "head.x"
    )[0]
    if t.width != s.hidden:
        x = e.op(
            "Pad",
            [x, e.const("head.x_pad", np.array([0, 0, 0, t.width - s.hidden], np.int64))],
            "head.x_pad",
        )[0]
    x = e.op("Mul", [x, "embed.low_scale"], "head.x_low")[0]
    # one [k, width] x [width, 1] product per position: rows [m, k, width] @ x [m, width, 1]
    x = e.op(
        "Reshape", [x, e.const("head.x_col", np.array([-1, t.width, 1], np.int64))], "head.x_col"
    )[0]
    low = e.op("MatMul", [rows, x], "head.low_dot")[0]
    low = e.op(
        "Reshape",
        [low, e.const("head.low_shape", np.array([1, -1, k], np.int64))],
        "head.low_3d",
    )[0]
    exact = e.op("Add", [top, low], "head.exact")[0]
    e.op("ScatterElements", [approx, idx, exact], "head.lm", axis=-1)


def _slice(e: _Emitter, x: str, start: int, end: int, axis: int, name: str) -> str:
    ins = [
        x,
        e.const(name + ".starts", np.array([start], np.int64)),
        e.const(name + ".ends", np.array([end], np.int64)),
    ]
    ins.append(e.const(name + ".axes", np.array([axis], np.int64)))
    return e.op("Slice", ins, name)[0]


def _head(e: _Emitter, s: Shape, weights: Weights, x: str, table: _Table) -> None:
    """Logits [1, m, vocab] for the last m = `num_logits` positions of x [1, S, H]."""
    e.const(NUM_LOGITS, np.array([1], np.int64))
    start = e.op("Neg", [NUM_LOGITS], "head.start")[0]
    ins = [
        x,
        start,
        e.const("head.last.ends", np.array([2**62], np.int64)),
        e.const("head.last.axes", np.array([1], np.int64)),
    ]
    last = e.op("Slice", ins, "head.last")[0]
    o = e.opts
    if o.activations == "q8" and (table.low or (s.tied and o.bits)):
        last, _ = round_q8(e, last, s.hidden, "head", with_sums=False)
    if table.low:
        _split_head(e, s, last, table)
    elif s.tied and o.bits:
        _tied_head(e, s, last, table)
    elif o.bits:
        e.linear(last, "head.lm", weights("lm_head.weight"), None, ["lm_head.weight"])
    else:
        w = table.weight if s.tied else e.float_weight("head.weight", weights("lm_head.weight"))
        flat_shape = e.const("head.flat", np.array([-1, s.hidden], np.int64))
        flat = e.op("Reshape", [last, flat_shape], "head.flat")[0]
        logits = e.op("Gemm", [flat, w], "head.lm", transB=1)[0]
        shape = e.const("head.shape", np.array([1, -1, s.vocab], np.int64))
        e.op("Reshape", [logits, shape], "head.unflat")
    e.nodes[-1].output[0] = "logits"


def emit(
    s: Shape, weights: Weights, opts: Options, plan: Plan | None = None
) -> tuple[onnx.ModelProto, dict[str, View]]:
    """The whole decoder graph for one model (batch 1, last positions' logits), and the
    initializers that are views of others (to be saved as such: builder._save). With `plan`
    (a GGUF source) weights keep the file's blocks where they map exactly."""
    e = _Emitter(opts, plan)
    big = attn_dim(s.head_dim)
    cos, sin = pad_rotary(s.cos, big, 1.0), pad_rotary(s.sin, big, 0.0)
    if opts.kv_dtype == "float16":
        e.const("cos_cache.fp16", cos.astype(np.float16))
        e.const("sin_cache.fp16", sin.astype(np.float16))
    else:
        e.const("cos_cache", cos)
        e.const("sin_cache", sin)
    e.const("split_sizes", np.array([s.intermediate, s.intermediate], np.int64))
    x, table = _embedding(e, s, weights)
    residual: str | None = None
    for i in range(s.num_layers):
        ln1 = weights(f"model.layers.{i}.input_layernorm.weight")
        h, residual = _norm(e, x, residual, ln1, f"layers.{i}.ln1", s.rms_eps)
        a = _attention(e, s, weights, i, h)
        ln2 = weights(f"model.layers.{i}.post_attention_layernorm.weight")
        h, residual = _norm(e, a, residual, ln2, f"layers.{i}.ln2", s.rms_eps)
        x = _mlp(e, s, weights, i, h)
    h, _ = _norm(e, x, residual, weights("model.norm.weight"), "final_norm", s.rms_eps)
    _head(e, s, weights, h, table)
    return _model(e, s), e.views


def _model(e: _Emitter, s: Shape) -> onnx.ModelProto:
    # The length axis is symbolic: the runtime sizes the shared buffers for the conversation it
    # expects, up to max_length (the rotary tables' length).
    kv: list[int | str] = [1, s.kv_heads, "max_length", attn_dim(s.head_dim)]
    f32 = TensorProto.FLOAT
    kv_type = KV_TYPES[e.opts.kv_dtype]
    firsts = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "sequence_length"])]
    if any(CODES in n.input for n in e.nodes):
        kb = -(-s.hidden // e.opts.embed_block)
        blob = e.opts.embed_block * e.opts.embed_bits // 8
        firsts = [
            helper.make_tensor_value_info(
                CODES, TensorProto.UINT8, [1, "sequence_length", kb, blob]
            ),
            helper.make_tensor_value_info(SCALES, f32, [1, "sequence_length", kb, 1]),
        ]
    inputs = [
        *firsts,
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        # overridable: its initializer is the default (1)
        helper.make_tensor_value_info(NUM_LOGITS, TensorProto.INT64, [1]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, [1, "num_logits", s.vocab])]
    for i in range(s.num_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(past_name(i, kind), kv_type, kv))
            outputs.append(helper.make_tensor_value_info(present_name(i, kind), kv_type, kv))
    return e.model(inputs, outputs, "ocula_fused_decoder", OPSET, 10, "ocula.export.fused")

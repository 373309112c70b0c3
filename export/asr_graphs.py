"""The two Whisper graphs, written directly from the model's weights with onnxruntime's fused ops.

    encoder.onnx   input_features float32 [1, n_mels, frames]       (frames: any even count)
                   -> cross.{i}.key / cross.{i}.value [1, heads, frames/2, head_dim]
    decoder.onnx   input_ids int64 [1, S], position_ids int64 [1, S],
                   seqlens_k int32 [1] (= past + S - 1), total_sequence_length int32 [] (= past + S),
                   cross.{i}.key/value, past.{i}.key/value [1, heads, max_length, head_dim]
                   -> logits [1, 1, vocab] (last position only), present.{i}.key/value (same
                   shape as the past: bind the same buffer to both, the graph writes rows
                   past .. past + S - 1 in place)

Encoder: two convolutions with Gelu, the positional table sliced to the frames given (Whisper's
transformers code insists on 3000 frames; the graph does not, so a runtime may trim short audio),
per layer q/k/v MatMuls into MultiHeadAttention (biases inside), Add + LayerNormalization for
the residuals (SkipLayerNormalization measured 5x slower at [1500, d] on this CPU), BiasGelu.
After the final norm, one MatMul computes every decoder layer's cross-attention K and V at once
([d, 2 * layers * d]); a transpose puts them in the [heads, frames, head_dim] layout the
decoder's attention reads directly, so the decoder never touches the encoder states and never
re-lays the cross K/V out per token.

Decoder: per layer a packed q/k/v MatMul into GroupQueryAttention (self-attention; past and
present share one buffer of max_length rows, so no per-token allocation or copy of the cache),
attention over the cross K/V, SkipLayerNormalization, BiasGelu: about 20 kernels per layer.
The head (tied to the token embedding) runs on the last position only. With `head="rescore8"`
the decoder returns the greedy token instead of logits: the head is read at 8 bits, and the
few tokens that the quantization error bound cannot rule out are re-scored in fp32 from the
embedding table (`_rescore_head`), so the token is the fp32 head's argmax while a token reads a
quarter of the head's bytes (whisper-tiny: 131 MB of fp32 per token, 80 MB of it the head).

Every op computes in float32 what the PyTorch model computes; `export.asr` checks parity
against it on every export.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.onnxgraph import GraphWriter

OPSET = 17
IR_VERSION = 8
EPS = 1e-5  # Whisper's layer norms


def names(layers: int) -> tuple[list[str], list[str], list[str]]:
    """(cross names, past names, present names) in graph order."""
    cross = [f"cross.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    past = [f"past.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    present = [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    return cross, past, present


class _Graph(GraphWriter):
    """The Whisper graphs' writer: weights by their transformers name (`t`), and the pieces
    the model kind adds to the shared writer (layer norms with their weights, linear layers,
    cross-attention)."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.state = state

    def t(self, key: str) -> np.ndarray:
        return np.ascontiguousarray(self.state[key].detach().float().numpy())

    def linear(self, x: str, prefix: str, name: str, bias: bool = False) -> str:
        w = self.const(f"{prefix}.weight.T", self.t(f"{prefix}.weight").T)
        b = self.const(f"{prefix}.bias", self.t(f"{prefix}.bias")) if bias else None
        return self.matmul(x, w, name, b)

    def _ln(self, ln: str) -> tuple[str, str]:
        return (
            self.const(f"{ln}.weight", self.t(f"{ln}.weight")),
            self.const(f"{ln}.bias", self.t(f"{ln}.bias")),
        )

    def skip_ln(self, a: str, skip: str, bias: str, ln: str, name: str) -> tuple[str, str]:
        """(LayerNorm(a + skip + bias), a + skip + bias)."""
        gamma, beta = self._ln(ln)
        return self.skip_norm(a, skip, gamma, EPS, name, beta=beta, bias=bias)

    def norm(self, x: str, ln: str, name: str) -> str:
        gamma, beta = self._ln(ln)
        return self.layer_norm(x, gamma, EPS, name, beta=beta)

    def cross_attention(self, q: str, k: str, v: str, heads: int, hd: int, name: str) -> str:
        """Attention of q [1, S, d] (already scaled) over K/V [1, heads, T, hd], in plain
        kernels. For one query row MLAS has dedicated M = 1 kernels (no packing of K or V),
        used only when the product is unscaled, so the scale lives in the q projection; this
        path measured faster than onnxruntime's MultiHeadAttention on a few query rows."""
        split = self.const(f"{name}.heads", np.array([0, 0, heads, hd], np.int64))
        merge = self.const(f"{name}.merge", np.array([0, 0, heads * hd], np.int64))
        q = self.op1("Reshape", [q, split], f"{name}.q")
        q = self.op1("Transpose", [q], f"{name}.qt", perm=[0, 2, 1, 3])
        w = self.op1("FusedMatMul", [q, k], f"{name}.qk", transB=1)
        w = self.op1("Softmax", [w], f"{name}.softmax", axis=-1)
        a = self.op1("MatMul", [w, v], f"{name}.av")
        a = self.op1("Transpose", [a], f"{name}.at", perm=[0, 2, 1, 3])
        return str(self.op1("Reshape", [a, merge], f"{name}.merge"))


def encoder(model: Any) -> onnx.ModelProto:
    c = model.config
    d, layers = int(c.d_model), int(c.decoder_layers)
    hd = d // int(c.decoder_attention_heads)
    g = _Graph({k: v for k, v in model.model.state_dict().items()})
    x = "input_features"
    for j, stride in ((1, 1), (2, 2)):
        x = g.op1(
            "Conv",
            [
                x,
                g.const(f"conv{j}.w", g.t(f"encoder.conv{j}.weight")),
                g.const(f"conv{j}.b", g.t(f"encoder.conv{j}.bias")),
            ],
            f"conv{j}",
            pads=[1, 1],
            strides=[stride],
            kernel_shape=[3],
        )
        x = g.op1("Gelu", [x], f"conv{j}.gelu")
    x = g.op1("Transpose", [x], "conv.btd", perm=[0, 2, 1])  # [1, T, d]
    t = g.op1("Shape", [x], "frames", start=1, end=2)
    zero = g.const("zero1", np.zeros(1, np.int64))
    pos = g.op1(
        "Slice", [g.const("enc.pos", g.t("encoder.embed_positions.weight")), zero, t], "pos"
    )
    x = g.op1("Add", [x, pos], "embed")
    h = g.norm(x, "encoder.layers.0.self_attn_layer_norm", "l0.ln1")
    n_enc = int(c.encoder_layers)
    for i in range(n_enc):
        p = f"encoder.layers.{i}"
        a = f"{p}.self_attn"
        q = g.linear(h, f"{a}.q_proj", f"l{i}.q")
        k = g.linear(h, f"{a}.k_proj", f"l{i}.k")
        v = g.linear(h, f"{a}.v_proj", f"l{i}.v")
        bias = np.concatenate(
            [g.t(f"{a}.q_proj.bias"), np.zeros(d, np.float32), g.t(f"{a}.v_proj.bias")]
        )
        att = g.op1(
            "MultiHeadAttention",
            [q, k, v, g.const(f"l{i}.qkv.bias", bias)],
            f"l{i}.mha",
            num_heads=int(c.encoder_attention_heads),
        )
        o = g.linear(att, f"{a}.out_proj", f"l{i}.o", bias=True)
        x = g.op1("Add", [x, o], f"l{i}.res1")
        h = g.norm(x, f"{p}.final_layer_norm", f"l{i}.ln2")
        f = g.op1(
            "MatMul", [h, g.const(f"{p}.fc1.weight.T", g.t(f"{p}.fc1.weight").T)], f"l{i}.fc1"
        )
        f = g.op1("BiasGelu", [f, g.const(f"{p}.fc1.bias", g.t(f"{p}.fc1.bias"))], f"l{i}.gelu")
        f = g.linear(f, f"{p}.fc2", f"l{i}.fc2", bias=True)
        x = g.op1("Add", [x, f], f"l{i}.res2")
        ln = (
            f"encoder.layers.{i + 1}.self_attn_layer_norm"
            if i + 1 < n_enc
            else "encoder.layer_norm"
        )
        h = g.norm(x, ln, f"l{i + 1}.ln1")
    # Every decoder layer's cross K and V in one MatMul: columns (layer, k|v, head, head_dim).
    ws, bs = [], []
    for i in range(layers):
        e = f"decoder.layers.{i}.encoder_attn"
        ws += [g.t(f"{e}.k_proj.weight").T, g.t(f"{e}.v_proj.weight").T]
        bs += [np.zeros(d, np.float32), g.t(f"{e}.v_proj.bias")]
    kv = g.op1("MatMul", [h, g.const("cross.weight", np.concatenate(ws, axis=1))], "cross")
    kv = g.op1("Add", [kv, g.const("cross.bias", np.concatenate(bs))], "cross.bias")
    n = d // hd
    kv = g.op1(
        "Reshape",
        [kv, g.const("cross.shape", np.array([1, -1, 2 * layers * n, hd], np.int64))],
        "cross.heads",
    )
    kv = g.op1("Transpose", [kv], "cross.bnsh", perm=[0, 2, 1, 3])  # [1, 2 L n, T, hd]
    cross, _, _ = names(layers)
    outs = g.op(
        "Split",
        [kv, g.const("cross.split", np.full(2 * layers, n, np.int64))],
        "cross.split",
        n_out=2 * layers,
        axis=1,
    )
    for o, name in zip(outs, cross, strict=True):
        g.rename(o, name)
    inputs = [
        helper.make_tensor_value_info(
            "input_features", TensorProto.FLOAT, [1, int(c.num_mel_bins), "frames"]
        )
    ]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, n, "positions", hd])
        for name in cross
    ]
    return g.model(inputs, outputs, "whisper-encoder", OPSET, IR_VERSION)


HEADS = ("fp32", "rescore8")
# fp32 rounding in the bound: a K-term dot product rounds by at most gamma_K * sum |w h|
# (gamma_K = K u / (1 - K u), u = 2^-24); the 8-bit product, its dequantization and the exact
# product each get one such term, and the whole bound 1% on top for the comparisons' own rounding.
_U = 2.0**-24
# MatMulNBits' int8-activation kernel: accuracy_level 0 (float activations) ran the 8-bit head
# at 108 ms per call here (a reference path), level 4 in well under a millisecond.
ACCURACY = 4


def _rescore_head(g: _Graph, h: str, table: str, weights: np.ndarray, block: int) -> list[str]:
    """Greedy token of h [1, 1, d] against the tied head `table` [V, d], exactly as the fp32
    head's argmax, reading the table at 8 bits.

    approx = MatMulNBits(h, q(w)) (8-bit rows, one fp32 scale per block of `block` columns;
    accuracy level 4 quantizes h per block to int8 with the scale max|h_b| / 127), plus the
    input `logit_mask` (0 or -inf: suppressed tokens, or everything but a few allowed ones).
    For row v, |h . w_v - approx_v| <= err_v = sum_b E[v, b] ||h_b||_1 + A[v, b] max|h_b|,
    where E[v, b] is the largest |w - q(w)| of row v in block b (plus the rounding terms
    above) and A[v, b] = ||q(w)_vb||_1 / 127 covers the activations' rounding (a full step
    where rounding to nearest makes half: a factor 2 of margin over how the kernel rounds).
    A token whose approx + err lies below the best approx - err cannot be the argmax; the
    others (the candidates) are re-scored in fp32 from rows gathered out of `table` (the
    embedding's initializer, stored once) and the first maximum wins, as numpy's argmax over
    the full fp32 logits picks. Outputs (token int64 [1], candidate count int64 [], the masked
    8-bit scores [1, 1, V]: within the bound of the fp32 logits, enough for the log-probability
    and no-speech probability that the runtime's loop guard reads, and for sampling)."""
    v, d = weights.shape
    nb = -(-d // block)
    pad = nb * block - d
    w = np.pad(weights.astype(np.float64), ((0, 0), (0, pad))).reshape(v, nb, block)
    amax = np.abs(w).max(axis=2)  # [V, nb]
    scale = (amax / 127.0).astype(np.float32)
    q = np.clip(np.rint(w / np.where(scale > 0, scale, 1.0)[..., None]), -127, 127)
    deq = q * scale.astype(np.float64)[..., None]
    gamma = block * nb * _U / (1 - block * nb * _U)
    err = np.abs(w - deq).max(axis=2) + (3 * gamma + _U) * amax
    act = np.abs(deq).sum(axis=2) / 127.0
    bound_w = (np.concatenate([err, act], axis=1) * 1.01).T.astype(np.float32)  # [2 nb, V]
    approx = g.op1(
        "MatMulNBits",
        [
            h,
            g.const("lm_head.q8", (q + 128).astype(np.uint8)),  # [V, nb, block]
            g.const("lm_head.q8.scales", scale.reshape(-1)),
            g.const("lm_head.q8.zero_points", np.full((v, nb), 128, np.uint8)),
        ],
        "lm_head.q8",
        K=d,
        N=v,
        bits=8,
        block_size=block,
        accuracy_level=ACCURACY,
    )
    approx = g.op1("Add", [approx, "logit_mask"], "lm_head.mask")  # [1, 1, V]
    hb = h
    if pad:
        hb = g.op1(
            "Pad", [h, g.const("lm_head.hpad", np.array([0, 0, 0, 0, 0, pad], np.int64))], "hpad"
        )
    hb = g.op1(
        "Reshape", [hb, g.const("lm_head.hblocks", np.array([nb, block], np.int64))], "hblocks"
    )
    l1 = g.op1("ReduceL1", [hb], "lm_head.l1", axes=[1], keepdims=1)  # [nb, 1]
    mx = g.op1("ReduceMax", [g.op1("Abs", [hb], "lm_head.abs")], "lm_head.max", axes=[1])
    norms = g.op1("Concat", [l1, mx], "lm_head.norms", axis=0)  # [2 nb, 1]
    bound = g.op1(
        "FusedMatMul", [norms, g.const("lm_head.bound", bound_w)], "lm_head.bound", transA=1
    )  # [1, V]
    hi = g.op1("Add", [approx, bound], "lm_head.hi")
    lo = g.op1("Sub", [approx, bound], "lm_head.lo")
    best = g.op1("ReduceMax", [lo], "lm_head.best", keepdims=1)
    keep = g.op1("GreaterOrEqual", [hi, best], "lm_head.keep")
    flat = g.const("lm_head.flat", np.array([-1], np.int64))
    keep = g.op1("Reshape", [keep, flat], "lm_head.keep.flat")
    idx = g.op1("NonZero", [keep], "lm_head.nonzero")  # [1, k]
    idx = g.op1("Reshape", [idx, flat], "lm_head.idx")
    rows = g.op1("Gather", [table, idx], "lm_head.rows")  # [k, d] fp32
    exact = g.op1("FusedMatMul", [h, rows], "lm_head.exact", transB=1)  # [1, 1, k]
    exact = g.op1("Reshape", [exact, flat], "lm_head.exact.flat")
    arg = g.op1("ArgMax", [exact], "lm_head.argmax", axis=0, keepdims=1)  # [1]
    token = g.op1("Gather", [idx, arg], "lm_head.token")
    count = g.op1("Size", [idx], "lm_head.count")
    return [str(token), str(count), str(approx)]


def head_model(weights: np.ndarray, block: int = 64) -> onnx.ModelProto:
    """The re-scoring head alone, for tests: hidden [1, 1, d] and logit_mask [V] -> token,
    candidates, with `weights` [V, d] as the fp32 table."""
    g = _Graph({})
    table = g.const("table", np.ascontiguousarray(weights, np.float32))
    token, count, approx = _rescore_head(g, "hidden", table, weights, block)
    g.rename(token, "token")
    g.rename(count, "candidates")
    g.rename(g.op1("Identity", [approx], "scores.copy"), "scores")
    v, d = weights.shape
    inputs = [
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, 1, d]),
        helper.make_tensor_value_info("logit_mask", TensorProto.FLOAT, [v]),
    ]
    outputs = [
        helper.make_tensor_value_info("token", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("candidates", TensorProto.INT64, []),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, v]),
    ]
    return g.model(inputs, outputs, "rescore-head", OPSET, IR_VERSION)


def decoder(model: Any, max_length: int, head: str = "fp32", block: int = 64) -> onnx.ModelProto:
    """`head="fp32"`: logits [1, 1, V]. `head="rescore8"`: the greedy token under an input
    `logit_mask` [V] (see `_rescore_head`), the same token the fp32 head's argmax gives."""
    if head not in HEADS:
        raise ValueError(f"unknown decoder head {head!r}; use one of {', '.join(HEADS)}")
    c = model.config
    d, n, layers = int(c.d_model), int(c.decoder_attention_heads), int(c.decoder_layers)
    hd = d // n
    g = _Graph({k: v for k, v in model.model.state_dict().items()})
    table = g.const("embed_tokens.weight", g.t("decoder.embed_tokens.weight"))
    x = g.op1("Gather", [table, "input_ids"], "embed")
    pos = g.op1(
        "Gather",
        [g.const("embed_positions.weight", g.t("decoder.embed_positions.weight")), "position_ids"],
        "pos",
    )
    x = g.op1("Add", [x, pos], "embed.pos")
    h = g.norm(x, "decoder.layers.0.self_attn_layer_norm", "l0.ln1")
    cross, past, present = names(layers)
    for i in range(layers):
        p = f"decoder.layers.{i}"
        a = f"{p}.self_attn"
        w = np.concatenate([g.t(f"{a}.{k}_proj.weight").T for k in "qkv"], axis=1)
        b = np.concatenate(
            [g.t(f"{a}.q_proj.bias"), np.zeros(d, np.float32), g.t(f"{a}.v_proj.bias")]
        )
        qkv = g.op1("MatMul", [h, g.const(f"{a}.qkv.weight.T", w)], f"l{i}.qkv")
        qkv = g.op1("Add", [qkv, g.const(f"{a}.qkv.bias", b)], f"l{i}.qkvb")
        att, pk, pv = g.op(
            "GroupQueryAttention",
            [qkv, "", "", past[2 * i], past[2 * i + 1], "seqlens_k", "total_sequence_length"],
            f"l{i}.gqa",
            n_out=3,
            num_heads=n,
            kv_num_heads=n,
        )
        g.rename(pk, present[2 * i])
        g.rename(pv, present[2 * i + 1])
        o = g.linear(att, f"{a}.out_proj", f"l{i}.o")
        h, x = g.skip_ln(
            o,
            x,
            g.const(f"{a}.out_proj.bias", g.t(f"{a}.out_proj.bias")),
            f"{p}.encoder_attn_layer_norm",
            f"l{i}.ln2",
        )
        e = f"{p}.encoder_attn"
        # q scaled as transformers does (q_proj(h) * head_dim^-0.5), folded into the weights:
        # exact, the scale being a power of two for Whisper's 64-wide heads.
        scale = np.float32(hd**-0.5)
        wq = g.const(f"{e}.q_proj.weight.T", g.t(f"{e}.q_proj.weight").T * scale)
        q = g.op1("MatMul", [h, wq], f"l{i}.cq")
        q = g.op1(
            "Add", [q, g.const(f"{e}.q_proj.bias", g.t(f"{e}.q_proj.bias") * scale)], f"l{i}.cqb"
        )
        att = g.cross_attention(q, cross[2 * i], cross[2 * i + 1], n, hd, f"l{i}.cross")
        o = g.linear(att, f"{e}.out_proj", f"l{i}.co")
        h, x = g.skip_ln(
            o,
            x,
            g.const(f"{e}.out_proj.bias", g.t(f"{e}.out_proj.bias")),
            f"{p}.final_layer_norm",
            f"l{i}.ln3",
        )
        f = g.op1(
            "MatMul", [h, g.const(f"{p}.fc1.weight.T", g.t(f"{p}.fc1.weight").T)], f"l{i}.fc1"
        )
        f = g.op1("BiasGelu", [f, g.const(f"{p}.fc1.bias", g.t(f"{p}.fc1.bias"))], f"l{i}.gelu")
        f = g.op1(
            "MatMul", [f, g.const(f"{p}.fc2.weight.T", g.t(f"{p}.fc2.weight").T)], f"l{i}.fc2"
        )
        if i + 1 < layers:
            ln = f"decoder.layers.{i + 1}.self_attn_layer_norm"
            h, x = g.skip_ln(
                f, x, g.const(f"{p}.fc2.bias", g.t(f"{p}.fc2.bias")), ln, f"l{i + 1}.ln1"
            )
    # The last position only: the residual and the last layer's output, then the final norm.
    last = g.const("last", np.array([-1], np.int64))
    f = g.op1("Gather", [f, last], "last.f", axis=1)
    x = g.op1("Gather", [x, last], "last.x", axis=1)
    lp = f"decoder.layers.{layers - 1}"
    h, _ = g.skip_ln(
        f, x, g.const(f"{lp}.fc2.bias", g.t(f"{lp}.fc2.bias")), "decoder.layer_norm", "final.ln"
    )
    kv = [1, n, max_length, hd]
    vocab = int(c.vocab_size)
    if head == "fp32":
        w_t = g.op1("Transpose", [table], "lm_head.T", perm=[1, 0])
        logits = g.op1("MatMul", [h, w_t], "lm_head")
        g.rename(logits, "logits")
        head_in = []
        head_out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, vocab])]
    else:
        token, count, approx = _rescore_head(g, h, table, g.t("decoder.embed_tokens.weight"), block)
        g.rename(token, "token")
        g.rename(count, "candidates")
        g.rename(g.op1("Identity", [approx], "scores.copy"), "scores")
        head_in = [helper.make_tensor_value_info("logit_mask", TensorProto.FLOAT, [vocab])]
        head_out = [
            helper.make_tensor_value_info("token", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("candidates", TensorProto.INT64, []),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, vocab]),
        ]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "sequence"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, "sequence"]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        *[
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, n, "positions", hd])
            for name in cross
        ],
        *[helper.make_tensor_value_info(name, TensorProto.FLOAT, kv) for name in past],
        *head_in,
    ]
    outputs = [
        *head_out,
        *[helper.make_tensor_value_info(name, TensorProto.FLOAT, kv) for name in present],
    ]
    return g.model(inputs, outputs, "whisper-decoder", OPSET, IR_VERSION)

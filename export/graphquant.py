"""Weight storage of an exported ONNX graph: quantization, the tied embedding, counting.

- `int4` / `int8`: every MatMul with a constant weight becomes onnxruntime's MatMulNBits
  (block-wise along the input dimension, weight-only: activations stay float, unlike
  `quantize_dynamic`, which measured perplexity 21.6 -> 35-39 on SmolLM2). The embedding
  becomes GatherBlockQuantized.
- Tied embedding (Qwen, SmolLM2): optimum writes the head as a MatMul on a transposed copy of
  the table, which the quantizer would skip or store a second time. Here the table is quantized
  once as MatMulNBits' [vocab, k_blocks, blob] bytes, and GatherBlockQuantized reads the same
  initializer viewed as blocks along its last axis (quantize_axis 2); only the small scales are
  stored in both ranks. In float, the head's [hidden, vocab] copy is kept and the lookup
  becomes Gather(axis=1) + Transpose on it, so the table is stored once there too.
- `fp16`: weights are stored in float16 with a Cast to float32 after each (folded by
  onnxruntime at load: half the file, the same arithmetic as fp32).
- `count_ops` records what really happened: quantized operators per type and the float
  MatMul/Gemm with constant weights that remain.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.errors import ExportError

log = logging.getLogger(__name__)

MS = "com.microsoft"
QUANT_OPS = (
    "MatMulNBits",
    "GatherBlockQuantized",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "QLinearMatMul",
    "DequantizeLinear",
    "DynamicQuantizeMatMul",
)
EXTERNAL_THRESHOLD = 64 << 20  # bytes of initializers above which weights go to a .data file


def load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=True)


def save(model: onnx.ModelProto, path: Path) -> list[str]:
    """Write the model; large weights go to one `NAME.data` file. Returns the file names."""
    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size > EXTERNAL_THRESHOLD:
        data = path.name + ".data"
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data,
            size_threshold=1024,
        )
        return [path.name, data]
    onnx.save_model(model, str(path))
    return [path.name]


def _inits(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _producer(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    for n in model.graph.node:
        if name in n.output:
            return n
    return None


def embedding(model: onnx.ModelProto) -> Any | None:
    """The token-embedding Gather: the one reading the largest 2-D constant table."""
    inits = _inits(model)
    gathers = [
        n
        for n in model.graph.node
        if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
    ]
    if not gathers:
        return None
    return max(gathers, key=lambda n: int(np.prod(inits[n.input[0]].dims)))


def find_tied(model: onnx.ModelProto, tied: bool) -> tuple[Any, Any] | None:
    """(embedding Gather node, head MatMul node) when the head reads the embedding table."""
    if not tied:
        return None
    inits = _inits(model)
    gather = embedding(model)
    head = _producer(model, "logits")
    if head is None or head.op_type != "MatMul" or gather is None:
        return None
    b = head.input[1]
    table = numpy_helper.to_array(inits[gather.input[0]])
    if b in inits:
        w = numpy_helper.to_array(inits[b])
        if w.shape == table.T.shape and np.array_equal(w, table.T):
            return gather, head
    t = _producer(model, b)
    if t is not None and t.op_type == "Transpose" and t.input[0] == gather.input[0]:
        return gather, head
    return None


def _remove_unused_initializers(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads, then the initializers nobody reads."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        _set_nodes(model.graph, [n for n in model.graph.node if n not in dead])
    used = {i for n in model.graph.node for i in n.input}
    used |= {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _table(model: onnx.ModelProto, gather: Any) -> np.ndarray:
    return numpy_helper.to_array(_inits(model)[gather.input[0]]).astype(np.float32)


def tie_float(model: onnx.ModelProto, gather: Any, head: Any) -> None:
    """Store the tied table once, as the head's [hidden, vocab] weight."""
    table = _table(model, gather)
    name = "lm_head.weight.T"
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(table.T), name))
    head.input[1] = name
    rows = gather.output[0] + ".hbs"
    gather.input[0] = name
    del gather.attribute[:]
    gather.attribute.append(helper.make_attribute("axis", 1))
    out = gather.output[0]
    gather.output[0] = rows
    nodes = list(model.graph.node)
    idx = nodes.index(gather)
    nodes.insert(
        idx + 1, helper.make_node("Transpose", [rows], [out], name="embed.bsh", perm=[1, 2, 0])
    )
    _set_nodes(model.graph, nodes)
    _remove_unused_initializers(model)


def quantize(
    model: onnx.ModelProto,
    bits: int,
    block_size: int,
    symmetric: bool,
    accuracy_level: int,
    tied: bool,
    embed_bits: int | None = None,
    float_head: bool = False,
) -> onnx.ModelProto:
    """Weight-only MatMulNBits for every constant MatMul, and the embedding quantized
    (with `embed_bits`, default `bits`; the tied head follows the table)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    pair = find_tied(model, tied)
    exclude = [pair[1].name] if pair else []
    if float_head:
        # what a plain quantizer run leaves: the head (and table) in float; for comparison only
        head = _producer(model, "logits")
        exclude = [head.name] if head is not None else []
    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level,
        op_types_to_quantize=("MatMul",),
        quant_axes=(("MatMul", 0),),
        bits=bits,
    )
    q = MatMulNBitsQuantizer(model, nodes_to_exclude=exclude, algo_config=config)
    q.process()
    out: onnx.ModelProto = q.model.model
    pair = find_tied(out, True) if pair else None
    if float_head:
        if pair:
            tie_float(out, *pair)
        _ensure_opset(out)
        return out
    gather = pair[0] if pair else embedding(out)
    if tied and pair is None:
        raise ExportError("the tied head was lost during quantization (a bug in Ocula)")
    if gather is not None:
        head = pair[1] if pair else None
        eb = embed_bits or bits
        if eb != bits:
            config = DefaultWeightOnlyQuantConfig(
                block_size=block_size,
                is_symmetric=symmetric,
                accuracy_level=accuracy_level,
                bits=eb,
            )
        _quantize_embedding(out, gather, head, eb, block_size, symmetric, accuracy_level, config)
    _ensure_opset(out)
    return out


def _quantize_embedding(
    model: onnx.ModelProto,
    gather: Any,
    head: Any | None,
    bits: int,
    block_size: int,
    symmetric: bool,
    accuracy_level: int,
    config: Any,
) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

    table = _table(model, gather)  # [V, H]
    vocab, hidden = table.shape
    packed, scales, zp = DefaultWeightOnlyQuantizer(config).qbits_block_quant(
        np.ascontiguousarray(table.T)
    )
    kb = packed.shape[1]
    g = model.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(packed, "embed.qweight"),
            numpy_helper.from_array(scales.astype(np.float32)[..., None], "embed.scales3"),
        ]
    )
    gather_in = ["embed.qweight", gather.input[1], "embed.scales3"]
    if not symmetric:
        per_block = _unpack(zp, bits, kb)[..., None]
        g.initializer.append(numpy_helper.from_array(per_block, "embed.zp3"))
        gather_in.append("embed.zp3")
    nodes = list(g.node)
    if head is not None:
        g.initializer.append(numpy_helper.from_array(scales.astype(np.float32), "embed.scales"))
        head_in = [head.input[0], "embed.qweight", "embed.scales"]
        if not symmetric:
            g.initializer.append(numpy_helper.from_array(zp, "embed.zp"))
            head_in.append("embed.zp")
        nodes[nodes.index(head)] = helper.make_node(
            "MatMulNBits",
            head_in,
            list(head.output),
            name="lm_head.MatMulNBits",
            domain=MS,
            K=hidden,
            N=vocab,
            bits=bits,
            block_size=block_size,
            accuracy_level=accuracy_level,
        )
    gi = nodes.index(gather)
    rows = gather.output[0] + ".blocks"
    new_gather = helper.make_node(
        "GatherBlockQuantized",
        gather_in,
        [rows],
        name="embed.GatherBlockQuantized",
        domain=MS,
        bits=bits,
        block_size=block_size,
        gather_axis=0,
        quantize_axis=2,
    )
    width = kb * block_size
    g.initializer.append(numpy_helper.from_array(np.array([0, 0, width], np.int64), "embed.shape"))
    flat = gather.output[0] if width == hidden else gather.output[0] + ".padded"
    reshape = helper.make_node("Reshape", [rows, "embed.shape"], [flat], name="embed.flat")
    extra = [new_gather, reshape]
    if width != hidden:
        for n, v in (("embed.s", 0), ("embed.e", hidden), ("embed.ax", 2)):
            g.initializer.append(numpy_helper.from_array(np.array([v], np.int64), n))
        extra.append(
            helper.make_node(
                "Slice",
                [flat, "embed.s", "embed.e", "embed.ax"],
                [gather.output[0]],
                name="embed.unpad",
            )
        )
    nodes[gi : gi + 1] = extra
    _set_nodes(g, nodes)
    _remove_unused_initializers(model)


def _set_nodes(g: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    copies = [onnx.NodeProto() for _ in nodes]
    for c, n in zip(copies, nodes, strict=True):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    if bits == 8:
        return packed[:, :count].astype(np.uint8)
    lo = packed & 0x0F
    hi = packed >> 4
    both = np.stack([lo, hi], axis=-1).reshape(packed.shape[0], -1)
    return both[:, :count].astype(np.uint8)


def to_fp16_storage(model: onnx.ModelProto, min_elements: int = 1024) -> None:
    """Float32 weights stored as float16, each followed by a Cast back to float32."""
    g = model.graph
    casts = []
    for t in list(g.initializer):
        if t.data_type != onnx.TensorProto.FLOAT or int(np.prod(t.dims)) < min_elements:
            continue
        arr = numpy_helper.to_array(t)
        name = t.name
        half = name + ".fp16"
        g.initializer.remove(t)
        g.initializer.append(numpy_helper.from_array(arr.astype(np.float16), half))
        casts.append(helper.make_node("Cast", [half], [name], name=name + ".cast", to=1))
    _set_nodes(g, casts + list(g.node))


def _ensure_opset(model: onnx.ModelProto) -> None:
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))


def count_ops(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    """(quantized operators by type, float MatMul/Gemm with a constant weight by type)."""
    inits = {t.name for t in model.graph.initializer}
    cast_of_init = {
        n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] in inits
    }
    transposed = {
        n.output[0] for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in inits
    }
    const = inits | cast_of_init | transposed
    q: Counter[str] = Counter()
    f: Counter[str] = Counter()
    for n in _all_nodes(model.graph):
        if n.op_type in QUANT_OPS:
            q[n.op_type] += 1
        elif n.op_type in ("MatMul", "Gemm") and any(i in const for i in n.input[1:2]):
            f[n.op_type] += 1
    return dict(q), dict(f)


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    out = []
    for n in graph.node:
        out.append(n)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out += _all_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    out += _all_nodes(sg)
    return out

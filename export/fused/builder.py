"""`build()`: a Hugging Face folder in, a fused ONNX decoder and the facts about it out."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from export.choices import ACTIVATIONS, KV_DTYPES
from export.fused.arch import read_shape
from export.fused.errors import FusedError
from export.fused.graph import (
    CODES,
    QUANTS,
    SCALES,
    Options,
    View,
    emit,
    past_name,
    present_name,
)
from export.fused.heads import attn_dim
from export.fused.weights import SafetensorsWeights

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# Above this many initializer bytes the weights go to one external data file (protobuf caps a
# message at 2 GiB; staying well under keeps serialization fast and memory flat).
EXTERNAL_DATA_BYTES = 1 << 30
# External tensors of at least this size start on a page (onnxruntime memory-maps those).
PAGE = 4096
ALIGN_BYTES = 1 << 16
BLOCK_SIZES = (16, 32, 64, 128, 256)
QUANTIZED_OPS = ("MatMulNBits", "GatherBlockQuantized")


@dataclass(frozen=True)
class KvLayout:
    """How the runtime must hold the KV cache of a fused graph (mirrors the manifest's)."""

    shape: list[int]  # of every past/present tensor: [1, kv_heads, max_length, attn_dim(head_dim)]
    dtype: str  # numpy name
    past: str  # name template with {layer} and {kind}
    present: str
    shared_buffer: bool  # past and present are one buffer, updated in place
    kinds: list[str] = field(default_factory=lambda: ["key", "value"])

    def names(self, layer: int, kind: str) -> tuple[str, str]:
        """(past, present) tensor names of one layer and kind."""
        return self.past.format(layer=layer, kind=kind), self.present.format(layer=layer, kind=kind)


@dataclass(frozen=True)
class FusedInfo:
    """Everything the artifact's manifest and the runtime need to know about a fused graph.

    `inputs` / `outputs` map tensor names to {"dtype", "shape"}; shapes use strings for
    dynamic axes. `feeds` says what the runtime feeds on every run, in words the runtime
    engine implements (see the package docstring for the contract).
    """

    graph: str
    files: list[str]
    onnx_file: str
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    kv: KvLayout
    feeds: dict[str, str]
    # "last": logits for the last position of each run only (older exports); "last_m": for the
    # last `num_logits` positions (an optional int64 [1] input, default 1; graph.NUM_LOGITS)
    logits: str
    batch_size: int
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_length: int
    tied_embeddings: bool
    rope_type: str
    rope_theta: float
    eos_token_ids: list[int]
    quant: str
    bits: int | None
    block_size: int | None
    symmetric: bool | None
    accuracy_level: int | None
    quantized_ops: dict[str, int]
    op_histogram: dict[str, int]
    node_count: int
    size_bytes: int
    build_seconds: float
    opset: dict[str, int] = field(default_factory=dict)
    # Set when the graph takes the rows' codes and scales: where the table lies in the data file
    # (runtime.engine.llm.embedding.EmbeddingLayout's fields); the runtime looks rows up.
    embedding: dict[str, Any] | None = None
    # A GGUF source: its block types, the weights kept exactly and those re-quantized (by name,
    # with the reason); see export.fused.gguf_blocks.
    source_blocks: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build(
    model_dir: Path,
    out_dir: Path,
    *,
    quant: str = "int4",
    block_size: int = 32,
    symmetric: bool = True,
    accuracy_level: int = 4,
    max_length: int = 2048,
    embed_quant: str | None = None,
    embed_block_size: int | None = None,
    scale_search: bool = False,
    head_candidates: int = 0,
    runtime_lookup: bool = True,
    gguf: Path | None = None,
    kv_dtype: str = "float32",
    activations: str = "float",
) -> FusedInfo:
    """Write `out_dir/model.onnx` (+ `model.onnx.data` when large) from an HF folder.

    `out_dir` must exist; only the files named in `FusedInfo.files` are written into it.
    `runtime_lookup`: a quantized symmetric embedding table (not the split head's) is looked up
    by the runtime, which reads its rows from the data file and feeds their codes and scales
    (`FusedInfo.embedding` says where the table is); False keeps the lookup in the graph.
    `gguf`: the GGUF file `model_dir` was converted from; its quantized blocks are kept as they
    are where MatMulNBits holds them exactly (`FusedInfo.source_blocks` says which).
    `activations="q8"`: quantized matmuls take their input rounded as llama.cpp's CPU rounds
    it (export.fused.llama_q8); needs int4/int8 weights in blocks of 32.
    Raises `FusedError` for unsupported architectures, rope types or options.
    """
    if quant not in QUANTS:
        raise FusedError(f"unknown quant {quant!r}; use one of {', '.join(QUANTS)}")
    for size in (block_size, embed_block_size or block_size):
        if QUANTS[quant] and size not in BLOCK_SIZES:
            raise FusedError(f"block size {size} is not supported; use 16, 32, 64, 128 or 256")
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise FusedError(f"accuracy level {accuracy_level} is not one of 0-4")
    start = time.perf_counter()
    model_dir = Path(model_dir)
    shape = read_shape(model_dir, max_length)
    weights = SafetensorsWeights(model_dir)
    if not shape.tied and "lm_head.weight" not in weights:
        raise FusedError(f"{model_dir}: untied embeddings but no lm_head.weight in the weights")
    if embed_quant not in (None, "int4", "int8"):
        raise FusedError(f"embed_quant must be int4 or int8, got {embed_quant!r}")
    if kv_dtype not in KV_DTYPES:
        raise FusedError(f"KV dtype {kv_dtype!r} is not one of {', '.join(KV_DTYPES)}")
    if activations not in ACTIVATIONS:
        raise FusedError(f"activations {activations!r} is not one of {', '.join(ACTIVATIONS)}")
    if activations == "q8" and (not QUANTS[quant] or {block_size, embed_block_size or 32} != {32}):
        raise FusedError(
            f"activations q8 (llama.cpp's rounding) needs int4 or int8 weights in blocks of 32, "
            f"not {quant} with block size {block_size}; drop --activations q8 or use those"
        )
    if not 0 <= head_candidates <= 4096:
        raise FusedError(f"head_candidates must be between 0 and 4096, got {head_candidates}")
    opts = Options(
        quant,
        block_size,
        symmetric,
        accuracy_level,
        embed_quant,
        embed_block_size,
        scale_search,
        head_candidates,
        runtime_lookup,
        kv_dtype,
        activations,
    )
    log.info(
        "emitting fused %s graph (%s, %d layers)", shape.family.model_type, quant, shape.num_layers
    )
    plan = None
    if gguf is not None and opts.bits:
        from export.fused.arch import load_config
        from export.fused.gguf_blocks import GgufBlocks, Plan

        plan = Plan(GgufBlocks(Path(gguf), load_config(model_dir)))
    model, views = emit(shape, weights, opts, plan)
    files, offsets = _save(model, views, Path(out_dir))
    embedding = None
    if any(i.name == CODES for i in model.graph.input):
        embedding = {
            "codes_input": CODES,
            "scales_input": SCALES,
            "file": DATA_FILE,
            "rows": shape.vocab,
            "hidden": shape.hidden,
            "bits": opts.embed_bits,
            "block_size": opts.embed_block,
            "weight_offset": offsets["embed.qweight"],
            "scales_offset": offsets["embed.scales3"],
        }
    hist = Counter(n.op_type for n in model.graph.node)
    info = FusedInfo(
        graph="fused",
        files=files,
        onnx_file=ONNX_FILE,
        inputs={v.name: _io(v) for v in model.graph.input},
        outputs={v.name: _io(v) for v in model.graph.output},
        kv=KvLayout(
            shape=[1, shape.kv_heads, max_length, attn_dim(shape.head_dim)],
            dtype=kv_dtype,
            past=past_name(0, "{kind}").replace(".0.", ".{layer}."),
            present=present_name(0, "{kind}").replace(".0.", ".{layer}."),
            shared_buffer=True,
        ),
        feeds={
            **(
                {
                    CODES: "uint8 [1, S, k_blocks, blob]: the S new tokens' rows of the table "
                    "`embedding` describes, bytes as stored",
                    SCALES: "float32 [1, S, k_blocks, 1]: their scales, as stored",
                }
                if embedding
                else {"input_ids": "int64 [1, S]: the S new tokens of this run (S >= 1)"}
            ),
            "seqlens_k": "int32 [1]: tokens in the cache after this run, minus 1 (past + S - 1)",
            "total_sequence_length": "int32 scalar: tokens in the cache after this run (past + S)",
            "past_key_values": "bind each past and its present to one preallocated buffer",
        },
        logits="last_m",
        batch_size=1,
        model_type=shape.family.model_type,
        num_layers=shape.num_layers,
        hidden_size=shape.hidden,
        num_heads=shape.num_heads,
        kv_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        vocab_size=shape.vocab,
        max_length=max_length,
        tied_embeddings=shape.tied,
        rope_type=shape.rope_type,
        rope_theta=shape.rope_theta,
        eos_token_ids=list(shape.eos_ids),
        quant=quant,
        bits=opts.bits or None,
        block_size=block_size if opts.bits else None,
        symmetric=symmetric if opts.bits else None,
        accuracy_level=accuracy_level if opts.bits else None,
        quantized_ops={op: hist[op] for op in QUANTIZED_OPS if hist[op]},
        op_histogram=dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        node_count=len(model.graph.node),
        size_bytes=sum((Path(out_dir) / f).stat().st_size for f in files),
        build_seconds=round(time.perf_counter() - start, 3),
        opset={o.domain or "ai.onnx": o.version for o in model.opset_import},
        embedding=embedding,
        source_blocks=plan.summary() if plan is not None else None,
    )
    log.info("fused graph: %d nodes, %.1f MB", info.node_count, info.size_bytes / 1e6)
    return info


def _save(
    model: onnx.ModelProto, views: dict[str, View], out_dir: Path
) -> tuple[list[str], dict[str, int]]:
    """Write the graph; with views, unread tensors or large weights, the weights go to one
    data file. Returns the files and each data-file tensor's offset.

    A view is written as a reference into its base's bytes, so the data file holds them once.
    An initializer that no node reads (a table the runtime looks up) is written to the data
    file only and left out of the graph. Tensors of ALIGN_BYTES or more start on a page, which
    lets onnxruntime map them instead of reading them.
    """
    if not out_dir.is_dir():
        raise FusedError(f"{out_dir}: output folder does not exist")
    read = {name for n in model.graph.node for name in n.input}
    unread = [t for t in model.graph.initializer if t.name not in read]
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    path = out_dir / ONNX_FILE
    if weight_bytes <= EXTERNAL_DATA_BYTES and not views and not unread:
        onnx.save_model(model, str(path))
        return [ONNX_FILE], {}
    offsets: dict[str, int] = {}
    with open(out_dir / DATA_FILE, "wb") as data:
        for t in model.graph.initializer:
            if t.name in views or (len(t.raw_data) < 1024 and t.name in read):
                continue
            if len(t.raw_data) >= ALIGN_BYTES:
                data.write(bytes(-data.tell() % PAGE))
            offsets[t.name] = data.tell()
            data.write(t.raw_data)
    for t in model.graph.initializer:
        if t.name in views:
            v = views[t.name]
            offset = offsets[v.base] + v.offset
        elif t.name in offsets:
            offset = offsets[t.name]
        else:
            continue
        _external(t, offset)
    for t in unread:
        model.graph.initializer.remove(t)
    onnx.save_model(model, str(path))
    return [ONNX_FILE, DATA_FILE], offsets


def _external(t: onnx.TensorProto, offset: int) -> None:
    length = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    del t.external_data[:]
    for key, value in (("location", DATA_FILE), ("offset", offset), ("length", length)):
        entry = t.external_data.add()
        entry.key, entry.value = key, str(value)


_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.UINT8: "uint8",
}


def _io(v: onnx.ValueInfoProto) -> dict[str, Any]:
    t = v.type.tensor_type
    dims: list[int | str] = [d.dim_param or d.dim_value for d in t.shape.dim]
    return {"dtype": _DTYPES[t.elem_type], "shape": dims}

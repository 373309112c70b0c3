"""Ocula's fused decoder graph: a Hugging Face Qwen2 / Qwen3 / Llama folder in, one ONNX file out.

The graph is written directly from the weights with onnxruntime's contrib operators
(GroupQueryAttention with rotary inside, SkipSimplifiedLayerNormalization, MatMulNBits with q/k/v
and gate/up packed, GatherBlockQuantized for the embedding, which the tied head shares), so that
decoding runs in about ten kernels per layer. `arch.py` describes what differs per family,
`graph.py` is the shared core that emits the layers, `quant.py` packs MatMulNBits weights,
`builder.py` writes the files and returns `FusedInfo`, `run.py` is a reference driver.

    info = build(model_dir, out_dir, quant="int4", block_size=32, symmetric=True,
                 accuracy_level=4, max_length=2048, embed_quant=None, embed_block_size=None)
    info.to_dict()   # JSON-ready: files, IO names/shapes, kv layout, feeds, quantized op counts

IO contract (batch size 1; what the runtime must do, every run):

    inputs   input_ids               int64 [1, S]    the S >= 1 new tokens of this run; or,
                                                     with a quantized symmetric table, their
                                                     rows as stored, read by the runtime at
                                                     the offsets `FusedInfo.embedding` gives:
             embed_codes             uint8 [1, S, k_blocks, blob]    packed codes
             embed_scales            float32 [1, S, k_blocks, 1]     scales
             seqlens_k               int32 [1]       past + S - 1 (tokens in the cache after
                                                     this run, minus one)
             total_sequence_length   int32 []        past + S
             past_key_values.{i}.key / .value   float32 [1, kv_heads, max_length, head_dim]
    outputs  logits                  float32 [1, 1, vocab]   for the LAST position of this run
             present.{i}.key / .value   same shape as the past tensors

- KV layout `shared-buffer`: allocate one buffer per layer and kind, of the full max length,
  once; bind it as both `past_key_values.{i}.key` and `present.{i}.key` (IO binding, the same
  OrtValue). The graph writes the S new rows at positions [past, past + S) in place; rows at or
  beyond past + S are never read, so a new conversation only resets `past` to 0 and a shared
  prefix (a system prompt) is reused by continuing from its length. Never feed zero-length
  inputs; past + S must not exceed `max_length` (the caller checks).
- Positions are implicit: rotary positions are past .. past + S - 1, taken from `seqlens_k`;
  there is no attention_mask or position_ids input.
- A prompt can be prefilled in one run or in chunks (each chunk is a run with its own S); the
  result is the same.
- Teacher-forced scoring of a passage (validation) runs one token per run, since logits come
  for the last position only.

Quantization: "int4"/"int8" = MatMulNBits weights (block-wise along the input dimension,
symmetric by default, optional per-block error search) for every projection
and the head; the embedding table is looked up by the runtime (`runtime_lookup`, the default:
onnxruntime never maps the table, which the tied head's chunks view in the data file) or by
GatherBlockQuantized in the graph (asymmetric tables, `runtime_lookup=False`, the split
head); `embed_quant="int8"` (and
`embed_block_size`) keep the embedding table and a tied head at 8 bits while the layers are 4,
the cheapest fidelity lever measured on SmolLM2 (tests/test_fused_smollm2.py has the table).
"fp16" stores weights in float16 and computes in float32 (a Cast per weight, folded by
onnxruntime at load); "fp32" is exact. Activations and the KV cache are float32 always.
Not supported (refused with `FusedError`): other architectures, sliding-window attention shorter
than max_length, partial rotary, rope types other than default/linear/llama3/yarn (and dynamic
within the original context), batch sizes above 1.
"""

from __future__ import annotations

from export.fused.builder import FusedInfo, KvLayout, build
from export.fused.errors import FusedError

__all__ = ["FusedError", "FusedInfo", "KvLayout", "build"]

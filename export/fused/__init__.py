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

IO contract (batch size 1; what the runtime must do, every run; `FusedInfo.inputs`, `outputs`
and `feeds` say the same for one graph):

    inputs   the S >= 1 new tokens of this run, one of:
             input_ids               int64 [1, S]    their ids (the table is looked up in the
                                                     graph: float tables, asymmetric ones, the
                                                     split head, `runtime_lookup=False`); or
             embed_codes             uint8 [1, S, k_blocks, blob]   their rows of the quantized
             embed_scales            float32 [1, S, k_blocks, 1]    table, codes and scales as
                                                     stored, read by the runtime at the offsets
                                                     `FusedInfo.embedding` gives (the default
                                                     for a quantized symmetric table)
             seqlens_k               int32 [1]       past + S - 1 (tokens in the cache after
                                                     this run, minus one)
             total_sequence_length   int32 []        past + S
             num_logits              int64 [1]       optional (default 1, an initializer a run
                                                     may override): score the last m positions
             past_key_values.{i}.key / .value   kv_dtype [1, kv_heads, max_length, d]
    outputs  logits                  float32 [1, m, vocab]   for the LAST m = num_logits
                                                     positions of this run (m <= S)
             present.{i}.key / .value   the past tensors themselves (same buffers)

  kv_dtype is float32, or float16 with `build(kv_dtype="float16")` (`KvLayout.dtype`); d is
  the head size GroupQueryAttention runs, head_dim rounded up to a multiple of 16
  (`heads.attn_dim`; `KvLayout.shape` has it).
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
- Without `num_logits` a run gives the last position's logits only (prefill and decode); a run
  that scores several positions (the runtime's speculative verify, runtime.engine.llm.runners)
  feeds `num_logits` = m and reads the logits of its last m positions.

Quantization: "int4"/"int8" = MatMulNBits weights (block-wise along the input dimension,
symmetric by default, optional per-block error search) for every projection
and the head; the embedding table is looked up by the runtime (`runtime_lookup`, the default:
onnxruntime never maps the table, which the tied head's chunks view in the data file) or by
GatherBlockQuantized in the graph (asymmetric tables, `runtime_lookup=False`, the split
head); `embed_quant="int8"` (and
`embed_block_size`) keep the embedding table and a tied head at 8 bits while the layers are 4,
the cheapest fidelity lever measured on SmolLM2 (tests/test_fused_smollm2.py has the table).
"fp16" stores weights in float16 and computes in float32 (a Cast per weight, folded by
onnxruntime at load); "fp32" is exact. Activations are float32 always; the KV cache is float32
unless `kv_dtype` says float16. `activations="q8"` rounds each quantized matmul's input onto
llama.cpp's Q8_0/Q8_1 grid first (`llama_q8.py`), for a GGUF to decode as llama.cpp does.
Not supported (refused with `FusedError`): other architectures, sliding-window attention shorter
than max_length, partial rotary, rope types other than default/linear/llama3/yarn (and dynamic
within the original context), batch sizes above 1.
"""

from __future__ import annotations

from export.fused.builder import FusedInfo, KvLayout, build
from export.fused.errors import FusedError

__all__ = ["FusedError", "FusedInfo", "KvLayout", "build"]

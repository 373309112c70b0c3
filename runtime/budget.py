"""A board's budgets, computed one way: artifact size, memory (RSS) and flash.

Export (`export.budget`: does one artifact fit a board?), the bundle (`board.bundle`: the RSS a
bundle declares), the agent (`runtime.agent.service`: refuse a bundle before it is stored) and
the LLM engine (`runtime.engine.llm`: how long a KV cache the board leaves room for) all call
these functions, so an artifact that passes the export check is not refused at flash for a
different sum.

Memory of one model = weights (its graph files as stored; onnxruntime maps them once) + its KV
cache at the length it runs with + the activations of a prefill (`activation_bytes`); a
process = the sum over its models + `RUNTIME_MB`, once. Flash holds two slots (A/B), so a
bundle fits when two copies of it do. Figures are in MiB (2^20 bytes), as the profiles'
`_mb` keys are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.manifest import LlmInfo, Manifest
from runtime.profile import Profile

__all__ = [
    "MIB",
    "PREFILL",
    "RUNTIME_MB",
    "SLOTS",
    "Memory",
    "fits_flash",
    "kv_bytes_per_token",
    "kv_room",
    "llm_length",
    "memory",
    "process_rss_mb",
    "weights_bytes",
]

MIB = 1 << 20
# What a process needs besides its models' weights, KV caches and estimated activations: the
# interpreter, numpy, onnxruntime and its arenas, the tokenizers, the agent. Measured while
# generating with qwen2.5-0.5b int4 here: 150-190 MiB besides weights and KV.
RUNTIME_MB = 200
PREFILL = 512  # the prefill whose activations are counted (tokens)
SLOTS = 2  # A/B: flash holds two copies of a bundle


@dataclass(frozen=True)
class Memory:
    """One model's memory, in bytes, without the process's `RUNTIME_MB`."""

    weights: int
    kv: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.activations

    @property
    def rss_mb(self) -> float:
        """This model alone in a process."""
        return self.total / MIB + RUNTIME_MB


def weights_bytes(m: Manifest) -> int:
    """The graph files as stored: what onnxruntime maps."""
    return sum(
        f.size for f in m.files if f.role in ("model", "weights") or f.path.endswith(".onnx")
    )


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int = 4) -> int:
    """Keys and values of every layer for one token."""
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def _llm_per_token(info: LlmInfo) -> int:
    size = 2 if info.kv is not None and info.kv.dtype == "float16" else 4
    return kv_bytes_per_token(info.layers, info.kv_heads, info.kv_head_dim, size)


def _llm_activations(info: LlmInfo, length: int) -> int:
    """A prefill of min(length, PREFILL) tokens: the logits the graph returns (every position
    in the optimum graph, the last one in the fused graph) and the widest per-layer tensors
    (MLP intermediate, attention scores), float32."""
    p = min(length, PREFILL)
    logit_rows = 1 if info.graph_kind == "fused" else p
    inter = info.intermediate_size or 4 * info.hidden_size
    return 4 * (
        info.vocab_size * logit_rows + 2 * inter * p + 4 * info.hidden_size * p + info.heads * p * p
    )


def llm_length(info: LlmInfo, profile: Profile | None) -> int:
    """The KV length an LLM runs with by default on a board: the board's
    `budget.llm_max_tokens`, at most the export's max length (the engine may take less: see
    `kv_room`)."""
    if profile is None:
        return info.max_length
    return min(profile.budget.llm_max_tokens, info.max_length)


def memory(m: Manifest, length: int | None = None) -> Memory:
    """One model's weights, KV cache (an LLM's at `length`, default its export's max length;
    Whisper's self and cross attention at their full size) and activations."""
    weights = weights_bytes(m)
    if m.llm is not None:
        n = length or m.llm.max_length
        return Memory(weights, _llm_per_token(m.llm) * n, _llm_activations(m.llm, n))
    if m.asr is not None:
        a = m.asr
        kv = a.decoder_layers * 4 * a.d_model * (a.max_target_positions + a.n_frames // 2) * 4
        return Memory(weights, kv, 4 * (a.n_frames * a.d_model * 8 + a.n_mels * a.n_frames))
    return Memory(weights, 0, 0)


def process_rss_mb(models: Iterable[Memory]) -> int:
    """The RSS of a process that holds `models` (a bundle's artifacts), rounded up."""
    return math.ceil(sum(m.total for m in models) / MIB + RUNTIME_MB)


def kv_room(info: LlmInfo, weights: int, profile: Profile | None) -> int:
    """The longest KV cache (tokens) that the board's `budget.max_rss_mb` leaves beside the
    weights, a prefill's activations and `RUNTIME_MB`, at most the export's max length."""
    if profile is None or info.kv is None:
        return info.max_length
    used = weights + _llm_activations(info, info.max_length) + RUNTIME_MB * MIB
    free = profile.budget.max_rss_mb * MIB - used
    return max(0, min(info.max_length, free // _llm_per_token(info)))


def fits_flash(total_bytes: int, flash_mb: int) -> bool:
    """Two slots of a bundle of `total_bytes` fit `flash_mb` of flash."""
    return SLOTS * total_bytes <= flash_mb * MIB

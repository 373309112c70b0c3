"""Will an artifact fit a board? Artifact size and an estimate of runtime memory vs the budget.

Runtime memory = weights (the graph files as stored; onnxruntime maps them once) + the KV cache
at max length + activations of a prefill + a fixed runtime overhead. The KV cache is float32,
layers x 2 x kv_heads x head_dim x max_length x 4 bytes; activations are estimated for a
prefill of `min(max_length, 512)` tokens: the logits the graph returns (every position in the
optimum graph, the last one in the fused graph), and the widest per-layer tensors (MLP
intermediate, attention scores). Figures are in MiB (2^20 bytes; the profiles' `_mb` keys are MiB too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from export.errors import BudgetError
from runtime.manifest import Manifest

MIB = 1 << 20
RUNTIME_OVERHEAD_MB = 80  # CPython + numpy + onnxruntime + tokenizers, measured RSS on the host
PREFILL = 512


@dataclass
class Fit:
    board: str
    artifact_mb: float
    max_artifact_mb: int
    weights_mb: float
    kv_mb: float
    activations_mb: float
    rss_mb: float
    max_rss_mb: int

    @property
    def fits(self) -> bool:
        return self.artifact_mb <= self.max_artifact_mb and self.rss_mb <= self.max_rss_mb

    def as_dict(self) -> dict[str, Any]:
        d = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        return {**d, "fits": self.fits}


def estimate(m: Manifest, profile: Any, max_length: int | None = None) -> Fit:
    artifact = m.total_bytes / MIB
    weights = sum(f.size for f in m.files if f.role in ("model", "weights")) / MIB
    kv = act = 0.0
    if m.llm is not None:
        L = max_length or m.llm.max_length
        i = m.llm
        size = 2 if i.kv is not None and i.kv.dtype == "float16" else 4
        kv = i.layers * 2 * i.kv_heads * i.kv_head_dim * L * size / MIB
        p = min(L, PREFILL)
        logit_rows = 1 if i.graph_kind == "fused" else p
        inter = i.intermediate_size or 4 * i.hidden_size
        act = (
            4
            * (i.vocab_size * logit_rows + 2 * inter * p + 4 * i.hidden_size * p + i.heads * p * p)
        ) / MIB
    elif m.asr is not None:
        a = m.asr
        kv = (
            (a.decoder_layers * 4 * a.d_model * (a.max_target_positions + a.n_frames // 2))
            * 4
            / MIB
        )
        act = 4 * (a.n_frames * a.d_model * 8 + a.n_mels * a.n_frames) / MIB
    rss = weights + kv + act + RUNTIME_OVERHEAD_MB
    b = profile.budget
    return Fit(profile.name, artifact, b.max_artifact_mb, weights, kv, act, rss, b.max_rss_mb)


def check(m: Manifest, profile: Any, max_length: int | None = None) -> Fit:
    fit = estimate(m, profile, max_length)
    if fit.fits:
        return fit
    parts = []
    if fit.artifact_mb > fit.max_artifact_mb:
        parts.append(f"artifact {fit.artifact_mb:.0f} MiB > {fit.max_artifact_mb} MiB")
    if fit.rss_mb > fit.max_rss_mb:
        parts.append(
            f"memory {fit.rss_mb:.0f} MiB (weights {fit.weights_mb:.0f} + KV {fit.kv_mb:.0f} + "
            f"activations {fit.activations_mb:.0f} + runtime {RUNTIME_OVERHEAD_MB}) > "
            f"{fit.max_rss_mb} MiB"
        )
    raise BudgetError(f"does not fit board {fit.board}: {'; '.join(parts)}; {_suggest(m, fit)}")


def _suggest(m: Manifest, fit: Fit) -> str:
    tips = []
    q = next(iter(m.graphs.values())).quantization.scheme if m.graphs else ""
    lower = {"fp32": "fp16 or int8", "fp16": "int8", "int8": "int4"}.get(q)
    if lower:
        tips.append(f"a lower --quant ({lower})")
    if fit.kv_mb > 0.2 * fit.max_rss_mb and m.llm is not None:
        tips.append("a shorter --max-length")
    tips.append("a smaller model")
    return "try " + ", or ".join(tips)

"""Will an artifact fit a board? Its size and its memory against the board profile's budget.

The sums are `runtime.budget`'s, the same that the bundle declares, the agent checks at flash
and the LLM engine sizes its KV cache by: weights + KV cache at max length + activations of a
prefill + the runtime's one overhead (`RUNTIME_MB`). Figures are in MiB (2^20 bytes; the
profiles' `_mb` keys are MiB too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from export.errors import BudgetError
from runtime.budget import MIB, RUNTIME_MB, memory
from runtime.manifest import Manifest


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
    mem = memory(m, max_length)
    b = profile.budget
    return Fit(
        profile.name,
        m.total_bytes / MIB,
        b.max_artifact_mb,
        mem.weights / MIB,
        mem.kv / MIB,
        mem.activations / MIB,
        mem.rss_mb,
        b.max_rss_mb,
    )


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
            f"activations {fit.activations_mb:.0f} + runtime {RUNTIME_MB}) > "
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

"""The memory budget: KV cache length chosen from the profile, RSS watched while running.

`kv_cache_len` answers "how many tokens of KV cache fit": the profile's `budget.max_rss_mb`,
less the weights, less a reserve for the runtime itself (interpreter, onnxruntime arenas, the
audio ring, frames), divided by the bytes one token of cache takes (2 x layers x kv heads x
head dim x bytes per value), rounded down to a multiple of 64 and capped at the model's own
maximum. Too little room for 64 tokens is a `BudgetError` that says by how much.

`MemoryWatch.check` reads the resident set size (Linux `/proc/self/statm`, else the peak from
`resource`) into the `memory.rss_mb` gauge and counts each crossing of the budget in
`memory.over_budget` (and traces it): the runtime reports, the governor can shed a tier.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from runtime.budget import kv_bytes_per_token
from runtime.profile import Profile
from runtime.sched.errors import BudgetError
from runtime.telemetry import Telemetry

__all__ = ["MemoryWatch", "kv_bytes_per_token", "kv_cache_len", "rss_mb"]

log = logging.getLogger(__name__)

RESERVE_MB = 160
ALIGN = 64


def kv_cache_len(
    profile: Profile,
    *,
    weights_mb: float,
    layers: int,
    kv_heads: int,
    head_dim: int,
    max_len: int,
    dtype_bytes: int = 4,
    reserve_mb: float = RESERVE_MB,
    other_mb: float = 0.0,
) -> int:
    """Tokens of KV cache that fit the board's RSS budget (a multiple of 64, <= max_len)."""
    budget = profile.budget.max_rss_mb
    room_mb = budget - weights_mb - reserve_mb - other_mb
    per_token = kv_bytes_per_token(layers, kv_heads, head_dim, dtype_bytes)
    tokens = int(room_mb * 1024 * 1024 // per_token) if room_mb > 0 else 0
    tokens = min(max_len, tokens - tokens % ALIGN)
    if tokens < ALIGN:
        need = weights_mb + reserve_mb + other_mb + ALIGN * per_token / 2**20
        raise BudgetError(
            f"board {profile.name}: the models ({weights_mb + other_mb:.0f} MiB) leave room for "
            f"fewer than {ALIGN} tokens of KV cache in budget.max_rss_mb = {budget} MiB "
            f"(needs about {need:.0f} MiB); use a smaller model or quantization"
        )
    return tokens


def rss_mb() -> float:
    statm = Path("/proc/self/statm")
    try:
        pages = int(statm.read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class MemoryWatch:
    def __init__(self, profile: Profile, telemetry: Telemetry, read: object = None) -> None:
        self.budget_mb = float(profile.budget.max_rss_mb)
        self.telemetry = telemetry
        self._read = read if callable(read) else rss_mb
        self.over = False

    def check(self, now: float) -> float | None:
        mb = float(self._read())
        self.telemetry.metrics.gauge("memory.rss_mb", mb)
        over = mb > self.budget_mb
        if over and not self.over:
            self.telemetry.metrics.inc("memory.over_budget")
            self.telemetry.trace.instant(
                "memory over budget",
                "governor",
                "governor",
                rss_mb=round(mb, 1),
                budget_mb=self.budget_mb,
            )
            log.warning("RSS %.0f MiB is over the board's budget of %.0f MiB", mb, self.budget_mb)
        self.over = over
        return 0.0

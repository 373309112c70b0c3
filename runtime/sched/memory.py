"""The memory budget watched while running (what fits is `runtime.budget`'s one sum).

`MemoryWatch.check` reads the resident set size (Linux `/proc/self/statm`, else the peak from
`resource`) into the `memory.rss_mb` gauge and counts each crossing of the budget in
`memory.over_budget` (and traces it): the runtime reports, the governor can shed a tier.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from runtime.profile import Profile
from runtime.telemetry import Telemetry

__all__ = ["MemoryWatch", "rss_mb"]

log = logging.getLogger(__name__)


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

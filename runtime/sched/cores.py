"""Which CPUs each part of the runtime runs on, from the board profile.

The real-time loop (audio capture, display refresh), the ASR worker and the LLM worker get
disjoint CPU sets where the board has enough cores, so inference cannot take the real-time
loop's core:

- several clusters: the real-time loop goes on the slowest cluster's first core; the fastest
  cluster is split between ASR (first half) and LLM (the rest);
- one cluster of n cores: n >= 3 gives {0} / {1} / {2..}; n == 2 shares core 0 between the
  real-time loop and ASR and gives core 1 to the LLM; n == 1 shares everything.

CPU numbers follow the usual ARM Linux convention: clusters numbered from the slowest up.
Where the OS does not allow pinning (not Linux, or the CPUs are outside the process's allowed
set, as in a container), `pin_thread` returns False and the caller logs why; threads float.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from runtime.profile import Profile

__all__ = ["CorePlan", "allowed_cpus", "core_plan", "pin_thread"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorePlan:
    realtime: tuple[int, ...]
    asr: tuple[int, ...]
    llm: tuple[int, ...]

    def for_role(self, role: str) -> tuple[int, ...]:
        return {"realtime": self.realtime, "asr": self.asr, "llm": self.llm}.get(role, self.llm)


def allowed_cpus() -> set[int] | None:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return None


def core_plan(profile: Profile) -> CorePlan:
    clusters = sorted(profile.cpu.clusters, key=lambda c: (c.max_mhz, c.cores))
    ids: list[list[int]] = []
    n = 0
    for c in clusters:
        ids.append(list(range(n, n + c.cores)))
        n += c.cores
    if len(ids) > 1:
        big = ids[-1]
        half = max(1, len(big) // 2)
        asr = big[:half]
        llm = big[half:] or big
        return CorePlan((ids[0][0],), tuple(asr), tuple(llm))
    cores = ids[0]
    if len(cores) >= 3:
        return CorePlan((cores[0],), (cores[1],), tuple(cores[2:]))
    if len(cores) == 2:
        return CorePlan((cores[0],), (cores[0],), (cores[1],))
    return CorePlan((cores[0],), (cores[0],), (cores[0],))


def pin_thread(cpus: tuple[int, ...], role: str) -> bool:
    """Pin the calling thread to `cpus` if the OS allows; logs why not otherwise."""
    allowed = allowed_cpus()
    if allowed is None:
        log.info("%s: CPU pinning is not available on this OS; the thread floats", role)
        return False
    wanted = set(cpus) & allowed
    if not wanted:
        log.info(
            "%s: CPUs %s are outside this process's allowed set %s; the thread floats",
            role,
            sorted(cpus),
            sorted(allowed),
        )
        return False
    try:
        os.sched_setaffinity(0, wanted)
    except OSError as exc:
        log.info("%s: cannot pin to CPUs %s (%s); the thread floats", role, sorted(wanted), exc)
        return False
    return True

"""The scheduler and the guarantees it keeps (design.md section 6).

- `clock`: real and virtual clocks (tests run in virtual time).
- `scheduler`: the real-time loop and the inference workers, stepping jobs by priority.
- `ring`: the lock-free audio ring; `slot`: the latest-frame camera slot.
- `memory`: the RSS watch (what fits a board is `runtime.budget`).
- `governor`: the power/thermal ladder.
- `cores`: which CPUs each role runs on.
"""

from __future__ import annotations

from runtime.sched.clock import Clock, MonotonicClock, VirtualClock
from runtime.sched.cores import CorePlan, core_plan
from runtime.sched.errors import SchedError, SchedUsageError
from runtime.sched.governor import Backlog, Governor, Policy, ThermalModel
from runtime.sched.memory import MemoryWatch
from runtime.sched.ring import AudioRing, ring_seconds
from runtime.sched.scheduler import Job, Priority, Scheduler, Task
from runtime.sched.slot import LatestSlot, Stamped

__all__ = [
    "AudioRing",
    "Backlog",
    "Clock",
    "CorePlan",
    "Governor",
    "Job",
    "LatestSlot",
    "MemoryWatch",
    "MonotonicClock",
    "Policy",
    "Priority",
    "SchedError",
    "SchedUsageError",
    "Scheduler",
    "Stamped",
    "Task",
    "ThermalModel",
    "VirtualClock",
    "core_plan",
    "ring_seconds",
]

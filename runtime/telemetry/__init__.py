"""Telemetry: spans into a Chrome trace-event file, counters, latency histograms, energy.

`Telemetry(clock, profile)` bundles the three parts every runtime component writes into:
`trace` (spans, instants, counter tracks; `write(path)` gives JSON that Perfetto opens),
`metrics` (counters and histograms, `summary()` with p50/p90/p99), and `energy` (the
profile's power model applied to the trace, per stage and over time). See each module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.profile import Profile
from runtime.telemetry.energy import EnergyModel, Stage
from runtime.telemetry.metrics import Histogram, Metrics
from runtime.telemetry.trace import Trace

if TYPE_CHECKING:
    from runtime.sched.clock import Clock

__all__ = ["EnergyModel", "Histogram", "Metrics", "Stage", "Telemetry", "Trace"]


class Telemetry:
    def __init__(self, clock: Clock, profile: Profile, max_events: int = 200_000) -> None:
        self.clock = clock
        self.profile = profile
        self.trace = Trace(clock, max_events=max_events)
        self.metrics = Metrics()
        self.energy = EnergyModel(profile.power)

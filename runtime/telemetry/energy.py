"""The energy model: watts and joules from the board profile's power figures and the trace.

The model (profile `[power]`, figures marked as estimates where they are):

    P(t) = idle_w + display_w * display_on + camera_w * camera_on(t)
           + core_active_w * (cores busy at t)

A stage's energy is its compute on top of idle: the sum over its spans of duration * cores *
core_active_w, where `cores` is the span's `cores` arg (the threads the stage ran on; 1 when
absent). The camera's power is charged to the time it was on (spans of category "camera" mark
captures when `camera_duty` is not given). Everything here is a pure function of the spans, so
the same numbers come out on the device, in a report on the host, or against a measured power
trace (HIL power capture compares `power_series` with what the shunt read).

`Meter` is the running form the governor reads: busy core-seconds added as steps finish,
average watts over a sliding window.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from runtime.profile import Power
from runtime.telemetry.trace import Span

__all__ = ["EnergyModel", "Meter", "Stage"]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Stage:
    """Energy of one stage over a run: joules above idle, busy seconds, span count."""

    name: str
    joules: float
    busy_s: float
    spans: int


class EnergyModel:
    def __init__(self, power: Power) -> None:
        self.power = power

    def baseline_w(self, display_on: bool = True, camera_on: bool = False) -> float:
        p = self.power
        return p.idle_w + p.display_w * display_on + p.camera_w * camera_on

    def compute_w(self, cores: float) -> float:
        return self.power.core_active_w * cores

    def by_stage(self, spans: Iterable[Span]) -> dict[str, Stage]:
        acc: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
        for s in spans:
            cores = float(s.args.get("cores", 1))
            a = acc[s.name]
            a[0] += s.dur * cores * self.power.core_active_w
            a[1] += s.dur
            a[2] += 1
        return {k: Stage(k, v[0], v[1], int(v[2])) for k, v in sorted(acc.items())}

    def power_series(
        self,
        spans: Iterable[Span],
        t0: float,
        t1: float,
        bin_s: float = 0.1,
        display_on: bool = True,
        camera_duty: float | None = None,
    ) -> tuple[F64, F64]:
        """(bin start times, average watts per bin) over [t0, t1).

        Compute power comes from the spans' overlap with each bin; the camera draws while its
        spans ("camera" category) are running, or `camera_duty` of the time if given.
        """
        n = max(1, int(np.ceil((t1 - t0) / bin_s)))
        edges: F64 = (t0 + bin_s * np.arange(n + 1)).astype(np.float64)
        busy = np.zeros(n)
        cam = np.zeros(n)
        for s in spans:
            cores = float(s.args.get("cores", 1))
            target = cam if s.cat == "camera" else busy
            _spread(target, edges, s.start, s.end, 1.0 if s.cat == "camera" else cores)
        watts = (
            self.baseline_w(display_on, False)
            + self.power.core_active_w * busy / bin_s
            + self.power.camera_w
            * (np.full(n, camera_duty) if camera_duty is not None else np.minimum(1.0, cam / bin_s))
        )
        return edges[:-1].astype(np.float64), watts.astype(np.float64)

    def total_j(self, spans: Iterable[Span], duration_s: float, display_on: bool = True) -> float:
        spans = list(spans)
        compute = sum(
            st.joules for st in self.by_stage(s for s in spans if s.cat != "camera").values()
        )
        cam = sum(s.dur for s in spans if s.cat == "camera") * self.power.camera_w
        return self.baseline_w(display_on) * duration_s + compute + cam


def _spread(acc: F64, edges: F64, start: float, end: float, weight: float) -> None:
    """Add `weight` * overlap seconds of [start, end) to each bin of `acc`."""
    if end <= edges[0] or start >= edges[-1]:
        return
    i0 = max(0, int(np.searchsorted(edges, start, side="right")) - 1)
    i1 = min(len(acc), int(np.searchsorted(edges, end, side="left")))
    for i in range(i0, i1):
        overlap = min(end, edges[i + 1]) - max(start, edges[i])
        if overlap > 0:
            acc[i] += overlap * weight


class Meter:
    """Average power over a sliding window, fed as work finishes (for the governor)."""

    def __init__(self, model: EnergyModel, window_s: float = 10.0) -> None:
        self.model = model
        self.window_s = window_s
        self._work: collections.deque[tuple[float, float]] = collections.deque()
        # workers add while the governor (on the real-time loop) sums: one lock for both
        self._lock = threading.Lock()
        self.camera_on = False
        self.display_on = True

    def add(self, t_end: float, busy_s: float, cores: float = 1.0) -> None:
        """Record `busy_s` seconds of compute on `cores` cores, finished at `t_end`."""
        with self._lock:
            self._work.append((t_end, busy_s * cores))

    def average_w(self, now: float, window_s: float | None = None) -> float:
        window = self.window_s if window_s is None else window_s
        with self._lock:
            while self._work and self._work[0][0] < now - max(self.window_s, window):
                self._work.popleft()
            core_s = sum(w for t, w in self._work if t > now - window)
        base = self.model.baseline_w(self.display_on, self.camera_on)
        return base + self.model.compute_w(core_s / window)

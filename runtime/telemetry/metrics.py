"""Counters and latency histograms, with the percentiles the runtime reports.

Counters are named integers (`audio.dropped_samples`, `display.late_frames`,
`camera.stale_frames`, `captions.retracted_words`, ...); `inc` is one dict update under a lock.
A `Histogram` keeps its samples (bounded: past `max_samples` it keeps a uniform reservoir, so
memory stays fixed on a long run) and answers p50/p90/p99 by linear interpolation, the same
definition as `numpy.percentile`'s default.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np

__all__ = ["Histogram", "Metrics"]


class Histogram:
    def __init__(self, max_samples: int = 20_000, seed: int = 0) -> None:
        self.max_samples = max_samples
        self.count = 0
        self._samples: list[float] = []
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.count += 1
        if len(self._samples) < self.max_samples:
            self._samples.append(value)
            return
        i = self._rng.randrange(self.count)
        if i < self.max_samples:
            self._samples[i] = value

    def percentile(self, q: float) -> float:
        if not self._samples:
            return float("nan")
        return float(np.percentile(np.asarray(self._samples), q))

    @property
    def samples(self) -> list[float]:
        return list(self._samples)

    def summary(self) -> dict[str, float]:
        return {
            "count": float(self.count),
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "max": max(self._samples) if self._samples else float("nan"),
        }


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, float] = {}
        self.histograms: dict[str, Histogram] = {}

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def set_counter(self, name: str, value: int) -> None:
        with self._lock:
            self.counters[name] = value

    def gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def observe(self, name: str, value: float) -> None:
        h = self.histograms.get(name)
        if h is None:
            with self._lock:
                h = self.histograms.setdefault(name, Histogram())
        h.add(value)

    def counter(self, name: str) -> int:
        return self.counters.get(name, 0)

    def summary(self) -> dict[str, Any]:
        return {
            "counters": dict(sorted(self.counters.items())),
            "gauges": dict(sorted(self.gauges.items())),
            "latency_s": {k: h.summary() for k, h in sorted(self.histograms.items())},
        }

"""Telemetry: Chrome trace-event JSON, bounded histograms and traces, the energy model."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from board import profiles
from runtime.sched import MonotonicClock, VirtualClock
from runtime.telemetry import Telemetry
from runtime.telemetry.energy import Meter
from runtime.telemetry.metrics import Histogram


def _tel(profile: str = "ar1-ref") -> tuple[Telemetry, VirtualClock]:
    clock = VirtualClock()
    return Telemetry(clock, profiles.find(profile)), clock


def test_trace_events_follow_the_chrome_format(tmp_path) -> None:
    tel, clock = _tel()
    with tel.trace.span("asr", "inference", "worker 0", window=1) as extra:
        clock.advance(0.25)
        extra["tokens"] = 7
    tel.trace.instant("speech end", "audio", "audio", sample=16000)
    tel.trace.counter("power", watts=1.5)
    data = json.loads(tel.trace.write(tmp_path / "t.json", {"board": "ar1-ref"}).read_text())
    assert data["displayTimeUnit"] == "ms" and data["otherData"]["board"] == "ar1-ref"
    ev = {e["name"]: e for e in data["traceEvents"] if e["ph"] != "M"}
    assert ev["asr"]["ph"] == "X" and ev["asr"]["dur"] == pytest.approx(250000)
    assert ev["asr"]["args"] == {"window": 1, "tokens": 7}
    assert ev["speech end"]["ph"] == "i" and ev["speech end"]["s"] == "g"
    assert ev["power"]["ph"] == "C" and ev["power"]["args"] == {"watts": 1.5}
    meta = [e for e in data["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"]
    assert {"worker 0", "audio"} <= {m["args"]["name"] for m in meta}
    assert all(isinstance(e["ts"], float | int) for e in data["traceEvents"] if e["ph"] != "M")
    assert "origin_monotonic_s" not in data["otherData"]  # virtual time is on no machine clock


def test_a_real_clock_trace_says_where_zero_is_on_the_monotonic_clock(tmp_path) -> None:
    """Another process (the HIL power capture) reads time.monotonic(); an event at trace time
    ts lies at origin_monotonic_s + ts on that clock."""
    before = time.monotonic()
    clock = MonotonicClock()
    tel = Telemetry(clock, profiles.find("sim"))
    after = time.monotonic()
    mark = time.monotonic()
    tel.trace.complete("mark", clock.now(), clock.now())
    data = json.loads(tel.trace.write(tmp_path / "t.json").read_text())
    origin = data["otherData"]["origin_monotonic_s"]
    assert before - 1e-5 <= origin <= after + 1e-5
    ts = next(e["ts"] for e in data["traceEvents"] if e["name"] == "mark") / 1e6
    assert origin + ts == pytest.approx(mark, abs=2e-3)


def test_a_long_run_keeps_memory_bounded() -> None:
    tel, _ = _tel()
    tel.trace.max_events = 100
    for i in range(150):
        tel.trace.instant("tick", i=i)
    assert len(tel.trace.events()) <= 100 + 10 and tel.trace.dropped == 50
    h = Histogram(max_samples=1000)
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 0.1, 20000)
    for v in values:
        h.add(float(v))
    assert h.count == 20000 and len(h.samples) == 1000
    assert h.percentile(50) == pytest.approx(np.percentile(values, 50), abs=0.02)  # reservoir


def test_power_series_adds_compute_and_camera_to_the_baseline() -> None:
    tel, _clock = _tel()
    tel.trace.complete("llm", 0.0, 1.0, "inference", "worker 0", cores=2)
    tel.trace.complete("camera frame", 0.5, 1.5, "camera", "camera")
    _t, w = tel.energy.power_series(tel.trace.spans(), 0.0, 2.0, bin_s=0.5)
    p = profiles.find("ar1-ref").power
    base = p.idle_w + p.display_w
    np.testing.assert_allclose(
        w,
        [
            base + 2 * p.core_active_w,
            base + 2 * p.core_active_w + p.camera_w,
            base + p.camera_w,
            base,
        ],
    )
    assert tel.energy.total_j(tel.trace.spans(), 2.0) == pytest.approx(
        base * 2 + 2 * p.core_active_w + p.camera_w
    )


def test_meter_averages_over_its_window() -> None:
    tel, _ = _tel()
    m = Meter(tel.energy, window_s=10.0)
    m.add(1.0, 1.0, cores=1)
    m.add(2.0, 1.0, cores=1)
    p = profiles.find("ar1-ref").power
    assert m.average_w(2.0) == pytest.approx(p.idle_w + p.display_w + p.core_active_w * 0.2)
    assert m.average_w(2.0, window_s=1.0) == pytest.approx(p.idle_w + p.display_w + p.core_active_w)
    assert m.average_w(30.0) == pytest.approx(
        p.idle_w + p.display_w
    )  # old work has left the window


def test_meter_is_safe_to_feed_from_workers_while_the_governor_reads() -> None:
    tel, _ = _tel()
    meter = Meter(tel.energy, window_s=1e9)
    for i in range(100_000):
        meter.add(float(i), 0.001)
    stop = threading.Event()

    def feed() -> None:
        t = 1e5
        while not stop.is_set():
            t += 1.0
            meter.add(t, 0.001)

    worker = threading.Thread(target=feed)
    worker.start()
    try:
        readings = [meter.average_w(2e5) for _ in range(30)]
    finally:
        stop.set()
        worker.join()
    assert readings == sorted(readings)  # more work recorded, never less

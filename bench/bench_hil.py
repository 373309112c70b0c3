"""HIL rig figures: the fixture firmware under MicroPython's unix port, and power sync.

- sustained sample rate: the highest rate at which the fixture loop (INA226 register reads,
  framing, the line) misses no sample over a 2 s run, stepping up the rate; strict (each
  sample read within one period of its slot) and with a 1 ms jitter budget (`start RATE 1000`);
- fixture link: sample bytes per second reaching the host at 921600 baud over the virtual
  cable (`hil.cable`, when present) and over a bare pty;
- marker sync error: GPIO markers fitted on half the edges, error on the other half; and
  timestamps only (clock pings), error measured against the GPIO edges;
- energy repeatability: the same workload on a sim board, 5 runs, spread of energy per request.

    flock /tmp/ocula-heavy.lock .venv/bin/python -m bench bench_hil
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hil import simrig
from hil.ports import open_serial
from hil.power import fit_clock, fit_pings
from hil.rig import Fixture

RATES = (1000, 2000, 5000, 10000, 15000, 20000, 25000, 30000, 40000)


def _fixture(tmp: Path, **kw: Any) -> tuple[simrig.SimFixture, Fixture]:
    sim = simrig.SimFixture(tmp, **kw)
    assert sim.port is not None
    fx = Fixture(open_serial(sim.port, 921600), sim.port)
    fx.hello()
    sim.rail(1.0)
    return sim, fx


def sustained_rate(tmp: Path, seconds: float = 2.0, max_late: int = 0) -> dict[str, Any]:
    rows = []
    best = 0
    sim, fx = _fixture(tmp)
    try:
        for rate in RATES:
            fx.start(rate, max_late)
            fx.wait_samples(int(rate * seconds), timeout=seconds * 4 + 5)
            st = fx.stop()
            s = fx.samples()
            present = len(s) / max(1, int(s.seq[-1]) + 1) if len(s) else 0.0
            rows.append({"rate_hz": rate, "overruns": st["overruns"], "present": round(present, 5)})
            if st["overruns"] == 0:
                best = rate
    finally:
        fx.close()
        sim.close()
    return {"sustained_hz": best, "steps": rows}


def link_throughput(
    tmp: Path, seconds: float = 3.0, rate: int = 22000, max_late: int = 0
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sim, fx = _fixture(tmp)
    try:
        fx.start(40000, max_late)
        t0, b0 = time.monotonic(), fx.bytes_in
        fx.wait_samples(int(40000 * seconds), timeout=seconds * 10)
        dt, db = time.monotonic() - t0, fx.bytes_in - b0
        fx.stop()
        n = len(fx.samples())
        out["pty_unthrottled"] = {
            "wire_kBps": round(db / dt / 1000, 1),
            "sample_kBps": round(n * 4 / dt / 1000, 1),
        }
    finally:
        fx.close()
        sim.close()
    from hil.cable import Cable

    with Cable(baud=921600) as cable:
        sim = simrig.SimFixture(tmp / "cable", device=cable.b)
        fx = Fixture(open_serial(cable.a, 921600), cable.a)
        try:
            fx.hello()
            sim.rail(1.0)
            fx.start(rate, max_late)
            fx.wait_samples(3000)
            t0, b0, n0 = time.monotonic(), fx.bytes_in, len(fx.samples())
            fx.wait_samples(n0 + int(rate * 0.9 * seconds), timeout=seconds * 10)
            dt, db = time.monotonic() - t0, fx.bytes_in - b0
            n = len(fx.samples()) - n0
            st = fx.stop()
        finally:
            fx.close()
            sim.close()
    line = 921600 / 10
    out["cable_921600"] = {
        "wire_kBps": round(db / dt / 1000, 1),
        "sample_kBps": round(n * 4 / dt / 1000, 1),
        "line_kBps": line / 1000,
        "sample_share_of_line": round(n * 4 / dt / line, 3),
        "overruns": st["overruns"],
    }
    return out


def marker_sync(tmp: Path, edges: int = 40) -> dict[str, Any]:
    sim, fx = _fixture(tmp, clock_offset_us=7.5e8, drift_ppm=60.0)
    try:
        rate = 10000
        fx.start(rate)
        fx.wait_samples(rate // 10)
        host, pings = [], []
        for i in range(edges):
            host.append(sim.edge())
            fx.wait_markers(i + 1)
            pings += [fx.ping(i) for _ in range(3)]
            time.sleep(0.1)  # spread the edges over 4 s so that drift shows
        fx.stop()
        gpio = np.array([m.t_us for m in fx.markers() if m.source == "gpio"], dtype=np.float64)
    finally:
        fx.close()
        sim.close()
    board = np.array(host)
    fit = fit_clock(gpio[::2], board[::2])
    err_gpio = np.abs(fit.to_board(gpio[1::2]) - board[1::2])
    pfit = fit_pings(pings, keep=0.3)
    err_ts = np.abs(pfit.to_board(gpio) - board)
    return {
        "sample_period_us": 1e6 / rate,
        "gpio": {
            "max_us": round(float(err_gpio.max()), 1),
            "median_us": round(float(np.median(err_gpio)), 1),
            "drift_ppm_estimated": round(fit.drift_ppm, 1),
            "drift_ppm_true": 60.0,
        },
        "timestamps_only": {
            "max_us": round(float(err_ts.max()), 1),
            "median_us": round(float(np.median(err_ts)), 1),
            "drift_ppm_estimated": round(pfit.drift_ppm, 1),
        },
    }


def energy_repeatability(tmp: Path, runs: int = 5, requests: int = 400) -> dict[str, Any]:
    from hil.rigs import BoardUnderTest, PowerRig

    per_request = []
    board = BoardUnderTest("sim://bench", tmp / "board")
    rig = PowerRig(board, tmp / "power", rate_hz=200)  # the sim rail moves every 10 ms
    try:
        board.hello()
        for _ in range(runs):
            with rig.capture() as cap:
                t0 = time.monotonic_ns() / 1000
                for _ in range(requests):
                    board.call("info")
                t1 = time.monotonic_ns() / 1000
            s = cap.on_board
            sel = (s.t_us >= t0) & (s.t_us < t1)
            # energy above the idle floor over the workload; present samples only, scaled by
            # the fraction present (the gaps are counted and reported next to the figure)
            floor = board.profile.power.idle_w + board.profile.power.display_w
            w = s.watts[sel] - floor
            coverage = sel.sum() / max(1.0, (t1 - t0) / s.period_us)
            energy = float(w.mean() * (t1 - t0) * 1e-6) if sel.any() else float("nan")
            truth = rig.rail.energy_j(t0, t1, floor)  # what the simulated rail really drew
            per_request.append(
                {
                    "mJ": energy / requests * 1e3,
                    "reference_mJ": truth / requests * 1e3,
                    "error_pct": round((energy / truth - 1) * 100, 2) if truth > 0 else None,
                    "coverage": round(float(coverage), 3),
                }
            )
    finally:
        rig.close()
        board.close()
    values = [r["mJ"] for r in per_request]
    mean = statistics.mean(values)
    return {
        "runs": per_request,
        "mean_mJ_per_request": round(mean, 4),
        "spread_pct": round((max(values) - min(values)) / mean * 100, 2),
        "cv_pct": round(statistics.pstdev(values) / mean * 100, 2),
        "measurement_error_pct_max": max(
            (abs(r["error_pct"]) for r in per_request if r["error_pct"] is not None), default=None
        ),
    }


def run(out_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return {
            "fixture_sustained_rate": sustained_rate(tmp / "a"),
            "fixture_sustained_rate_1ms_jitter": sustained_rate(tmp / "a2", max_late=1000),
            "fixture_link": link_throughput(tmp / "b"),
            "fixture_link_1ms_jitter": link_throughput(tmp / "b2", max_late=1000),
            "marker_sync": marker_sync(tmp / "c"),
            "energy_repeatability": energy_repeatability(tmp / "d"),
        }

"""Power analysis: clock fits against known offsets and drifts, energy against closed forms,
gaps reported and never interpolated, and the files a report needs."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from hil import power
from hil.errors import PowerFailure


def _samples(watts: np.ndarray, period_us: int = 100, t0: int = 5_000, seq0: int = 0):
    n = watts.size
    seq = np.arange(seq0, seq0 + n, dtype=np.int64)
    volts = np.full(n, 5.0)
    return power.Samples(t0 + seq * period_us, volts, watts / volts, seq, period_us)


def test_marker_fit_recovers_offset_and_drift() -> None:
    rng = np.random.default_rng(1)
    fixture = np.sort(rng.uniform(0, 600e6, 40)).astype(np.int64)  # 10 minutes
    drift, offset = 80e-6, 1.234e9
    board = offset + fixture * (1 + drift) + rng.uniform(0, 100, fixture.size)  # 1 sample late
    fit = power.fit_clock(fixture[::2], board[::2])
    assert fit.drift_ppm == pytest.approx(-drift / (1 + drift) * 1e6, abs=0.5)
    err = np.abs(fit.to_board(fixture[1::2]) - board[1::2])
    assert err.max() < 100  # within one sample period at 10 kHz


def test_ping_fit_keeps_the_fast_round_trips() -> None:
    rng = np.random.default_rng(2)
    host = np.sort(rng.uniform(0, 60, 200))
    rtt = 0.0004 + rng.exponential(0.003, host.size)  # queueing only ever adds
    up = rtt * rng.uniform(0.4, 0.6, host.size)
    true = lambda t_s: 7_000_000 + (t_s * 1e6) * (1 - 30e-6)  # noqa: E731
    pings = [(h, int(true(h + u)), h + r) for h, u, r in zip(host, up, rtt, strict=True)]
    fit = power.fit_pings(pings, keep=0.3)
    probe = np.linspace(0, 60, 50)
    err = np.abs(fit.to_board(true(probe)) - probe * 1e6)
    assert err.max() < 1000  # 1 ms with timestamps alone


def test_fit_needs_pairs() -> None:
    with pytest.raises(PowerFailure, match="0 fixture markers and 0 trace markers"):
        power.fit_clock([], [])
    with pytest.raises(PowerFailure, match="3 fixture markers and 2"):
        power.fit_clock([1, 2, 3], [1, 2])


def test_energy_per_span_matches_closed_form() -> None:
    w = np.where(np.arange(20_000) < 10_000, 1.0, 3.0)  # 1 W then 3 W, 100 us samples
    s = _samples(w, t0=0)
    spans = [
        {"name": "idle", "ph": "X", "ts": 0, "dur": 500_000},
        {"name": "infer", "ph": "X", "ts": 1_000_000, "dur": 500_000},
        {"name": "infer", "ph": "X", "ts": 1_500_000, "dur": 250_000},
        {"name": "late", "ph": "X", "ts": 1_900_000, "dur": 500_000},
    ]
    e = power.energy_by_span(s, spans)
    assert e["idle"].energy_j == pytest.approx(0.5)
    assert e["infer"].count == 2
    assert e["infer"].energy_j == pytest.approx(3 * 0.75)
    assert e["infer"].summary()["mean_power_w"] == pytest.approx(3.0)
    assert e["late"].count == 0 and e["late"].incomplete == 1  # runs past the samples


def test_energy_per_span_counts_the_part_of_each_edge_sample_inside_the_span() -> None:
    # the rail steps between 1 W and 3 W every 100 us (edges at 4_950, 5_050, ...); the
    # fixture samples the middle of each step. Spans start and end inside steps, so a
    # span that took whole samples (or none) at its edges would be off by up to 2 * 300 uJ.
    def rail_w(t_us: np.ndarray) -> np.ndarray:
        return np.where(np.floor((t_us - 4_950) / 100) % 2 == 0, 1.0, 3.0)

    s = _samples(rail_w(5_000 + 100 * np.arange(40.0)))
    windows = [(5_020, 5_380), (5_130, 5_170), (5_490, 6_310), (6_010, 6_990)]
    e = power.energy_by_span(
        s, [{"name": f"s{i}", "ts": a, "dur": b - a} for i, (a, b) in enumerate(windows)]
    )
    for i, (a, b) in enumerate(windows):
        fine = np.arange(a, b, 0.5) + 0.25  # the rail itself, integrated in 0.5 us steps
        assert e[f"s{i}"].energy_j == pytest.approx(np.sum(rail_w(fine)) * 0.5e-6, rel=1e-9)
        assert e[f"s{i}"].count == 1 and e[f"s{i}"].seconds == pytest.approx((b - a) * 1e-6)


def test_gaps_are_reported_and_spans_over_them_are_incomplete() -> None:
    a = _samples(np.full(1000, 2.0), t0=0)
    b = _samples(np.full(1000, 2.0), t0=0, seq0=1500)  # 500 samples missing
    s = power.Samples(
        np.concatenate([a.t_us, b.t_us]),
        np.concatenate([a.volts, b.volts]),
        np.concatenate([a.amps, b.amps]),
        np.concatenate([a.seq, b.seq]),
        100,
    )
    assert s.gaps() == [power.Gap(99_900, 150_000, 500)]
    e = power.energy_by_span(
        s,
        [
            {"name": "over-gap", "ph": "X", "ts": 90_000, "dur": 70_000},
            {"name": "clean", "ph": "X", "ts": 160_000, "dur": 10_000},
        ],
    )
    assert e["over-gap"].incomplete == 1 and e["over-gap"].count == 0
    assert e["clean"].energy_j == pytest.approx(0.02)


def test_begin_end_spans_and_markers() -> None:
    trace = {
        "traceEvents": [
            {"name": "step", "ph": "B", "ts": 10, "pid": 1, "tid": 1},
            {"name": "marker", "ph": "i", "ts": 12, "args": {"id": 7}},
            {"name": "step", "ph": "E", "ts": 30, "pid": 1, "tid": 1},
        ]
    }
    assert [(s["name"], s["dur"]) for s in power.spans(trace)] == [("step", 20)]
    assert power.trace_markers(trace) == [(12.0, 7)]


def test_analyse_writes_csv_plot_trace_and_summary(tmp_path: Path) -> None:
    s = _samples(np.linspace(1.0, 2.0, 5000), t0=1_000)
    fit = power.fit_clock([1_000, 400_000], [2_001_000, 2_400_000])
    trace = {"traceEvents": [{"name": "infer", "ph": "X", "ts": 2_100_000, "dur": 100_000}]}
    rep = power.analyse(s, trace, fit, tmp_path, "test")
    rows = list(csv.DictReader((tmp_path / "power.csv").open()))
    assert len(rows) == 5000 and float(rows[0]["t_us"]) == pytest.approx(2_001_000)
    assert (tmp_path / "power.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    merged = json.loads((tmp_path / "trace.json").read_text())
    counters = [e for e in merged["traceEvents"] if e["ph"] == "C"]
    assert counters and counters[0]["name"] == "power" and "W" in counters[0]["args"]
    assert rep["spans"]["infer"]["count"] == 1
    assert rep["clock"]["offset_us"] == pytest.approx(2_000_000)


def test_energy_between_counts_the_fractions_of_the_edge_samples() -> None:
    # samples every 100 us from 5_000; 1 W for the first five, 3 W after: by the midpoint
    # rule 1 W holds over [4_950, 5_450), 3 W over [5_450, 5_950)
    s = _samples(np.array([1.0] * 5 + [3.0] * 5))
    assert s.energy_between(5_050, 5_850) == pytest.approx((400 * 1 + 400 * 3) * 1e-6)
    assert s.energy_between(5_530, 5_570, floor_w=0.5) == pytest.approx(40 * 2.5e-6)
    assert np.isnan(s.energy_between(4_900, 5_500))  # before the first sample: not covered
    keep = [0, 1, 2, 6, 7]
    holed = power.Samples(s.t_us[keep], s.volts[:5], s.amps[:5], s.seq[keep], 100)
    assert np.isnan(holed.energy_between(5_100, 5_700))  # a gap inside: never filled in
    assert holed.energy_between(5_000, 5_200) == pytest.approx(200e-6)


def test_fixture_edges_pair_with_the_boards_trace_markers(tmp_path: Path) -> None:
    """The real fixture (MicroPython, its clock 0.75e9 us off and 60 ppm fast) stamps edges
    the board raised at irregular moments; the board's trace logs each with its seq. One edge
    never reaches the fixture and one glitch the board never logged does: pairing by the
    trace's seq drops both and maps fixture time onto the board's clock."""
    from hil import fixture_sim
    from hil.fixture_link import Fixture
    from hil.transport import open_port

    sim = fixture_sim.SimFixture(tmp_path, clock_offset_us=7.5e8, drift_ppm=60.0)
    assert sim.port is not None
    events: list[dict] = []
    board_t: dict[int, float] = {}
    with sim, Fixture(open_port(sim.port), sim.port) as fx:
        fx.hello()
        fx.start(5000, 1000)
        seen = 0
        for seq in range(12):
            fx.wait_samples(fx.wait_samples(1) + 200 + 173 * (seq % 4))  # irregular spacing
            if seq == 5:  # the board logs it, the wire loses it
                t = time.monotonic_ns() / 1000
            else:
                t = sim.edge()
                seen += 1
                fx.wait_markers(seen)
            board_t[seq] = t
            events.append({"name": "marker", "ph": "i", "ts": t, "args": {"seq": seq}})
            if seq == 8:  # a glitch on the line: an edge the board never logged
                fx.wait_samples(fx.wait_samples(1) + 100)
                sim.edge()
                seen += 1
                fx.wait_markers(seen)
        fx.stop()
        edges = [m.t_us for m in fx.markers() if m.source == "gpio"]
    pairs = power.pair_markers(edges, power.trace_markers({"traceEvents": events}))
    assert pairs.seqs == [s for s in range(12) if s != 5]
    assert pairs.unmatched_seqs == [5] and len(pairs.unmatched_edges) == 1
    fit = power.fit_trace_markers(edges, {"traceEvents": events})
    err = np.abs(fit.to_board(np.array(pairs.fixture_us)) - np.array(pairs.board_us))
    assert err.max() < 200  # one sample period at 5 kHz
    assert fit.offset_us == pytest.approx(board_t[0] - pairs.fixture_us[0], abs=200)


def test_pairing_without_edges_says_what_to_wire() -> None:
    with pytest.raises(PowerFailure, match="marker line"):
        power.pair_markers([], [(1.0, 0)])


def test_energy_per_request_on_a_sim_rig_with_a_deterministic_rail(tmp_path: Path) -> None:
    """The whole chain (sim board, rail charging 150 us of a core per reply, the MicroPython
    fixture sampling it, GPIO markers, exact integration between them) gives back the energy
    the rail was told to draw per request, run after run."""
    from hil.targets import BoardUnderTest, PowerRig

    board = BoardUnderTest("sim://energy", tmp_path / "board")
    rig = PowerRig(board, tmp_path / "power", rate_hz=4000, model="work")
    try:
        board.hello()
        p = board.profile.power
        per_request = []
        for _ in range(3):
            with rig.capture() as cap:
                for _ in range(200):
                    board.call("info")
            per_request.append(cap.energy_j(floor_w=p.idle_w + p.display_w) / 200)
    finally:
        rig.close()
        board.close()
    assert per_request == pytest.approx([p.core_active_w * 150e-6] * 3, rel=0.02)

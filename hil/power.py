"""Power samples synchronised with a board's trace: energy per span, power per state, reports.

Samples come from the rig fixture (INA226 registers turned into volts and amps) on the
fixture's clock; the board's trace (Chrome trace-event JSON) is on the board's clock. Markers
seen by both sides (a GPIO edge the board raises and logs, or a command both are told of)
give pairs of timestamps; a least-squares line through them gives the clock offset and drift,
and the residuals say how good the fit is. With timestamps alone, round-trip pings give the
same pairs with an uncertainty of half the round trip; the pings with the shortest round trips
are kept.

Rules: a gap in the sample stream (a jump in the sample sequence) is reported with its extent
and any energy figure that overlaps it is marked incomplete; nothing is interpolated.
Energy over a window (a span, the work between markers) is integrated exactly by the midpoint
rule (`Samples.energy_between`), samples at the window's edges counted by the fraction inside.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.errors import PowerFailure

log = logging.getLogger(__name__)

__all__ = [
    "ClockFit",
    "Gap",
    "MarkerPairs",
    "Samples",
    "SpanEnergy",
    "analyse",
    "fit_clock",
    "fit_pings",
    "fit_trace_markers",
    "pair_markers",
]


@dataclass(frozen=True)
class Gap:
    start_us: int
    end_us: int
    missing: int


@dataclass
class Samples:
    """Samples on one clock: t_us (int64), volts, amps, seq (sample index, jumps are gaps)."""

    t_us: np.ndarray
    volts: np.ndarray
    amps: np.ndarray
    seq: np.ndarray
    period_us: int

    @classmethod
    def empty(cls) -> Samples:
        z = np.zeros(0)
        return cls(z.astype(np.int64), z, z, z.astype(np.int64), 0)

    def __len__(self) -> int:
        return int(self.t_us.size)

    @property
    def watts(self) -> np.ndarray:
        return self.volts * self.amps

    def gaps(self) -> list[Gap]:
        """Missing samples: jumps in `seq`, and a stream that starts after index 0."""
        if len(self) == 0:
            return []
        out = []
        if self.seq[0] > 0:
            first = int(self.t_us[0])
            out.append(Gap(first - int(self.seq[0]) * self.period_us, first, int(self.seq[0])))
        jumps = np.nonzero(np.diff(self.seq) != 1)[0]
        out += [
            Gap(int(self.t_us[i]), int(self.t_us[i + 1]), int(self.seq[i + 1] - self.seq[i] - 1))
            for i in jumps
        ]
        return out

    def energy_between(self, t0_us: float, t1_us: float, floor_w: float = 0.0) -> float:
        """Energy (J) above `floor_w` between two times on this clock, by the midpoint rule:
        each sample stands for the time from halfway after the previous sample to halfway
        before the next (half a period at either end of the stream), and the samples at
        either end of [t0, t1] count for the part of that span inside it, with no rounding
        to whole samples. (Holding each sample until the next one instead would start every
        window late by half a period on average: a bias, not noise.) NaN when the samples do
        not cover [t0, t1] or a gap falls inside it: never filled in."""
        if len(self) < 2 or t1_us <= t0_us:
            return float("nan")
        starts, ends = self._held_from_to
        if t0_us < starts[0] or t1_us > ends[-1]:
            return float("nan")
        i0, i1 = np.searchsorted(ends, t0_us), np.searchsorted(starts, t1_us)
        if np.any(np.diff(self.seq[i0:i1]) != 1):
            return float("nan")
        # the samples outside [i0, i1) hold for no time inside [t0, t1]
        starts, ends = starts[i0:i1], ends[i0:i1]
        held = np.clip(t1_us, starts, ends) - np.clip(t0_us, starts, ends)
        watts = self.volts[i0:i1] * self.amps[i0:i1]
        return float(np.sum((watts - floor_w) * held) * 1e-6)

    @functools.cached_property
    def _held_from_to(self) -> tuple[np.ndarray, np.ndarray]:
        """Where each sample starts and stops standing for the rail by the midpoint rule;
        worked out once, since a report asks `energy_between` once a span."""
        t = self.t_us.astype(np.float64)
        mid = (t[1:] + t[:-1]) / 2
        starts = np.concatenate([[t[0] - (t[1] - t[0]) / 2], mid])
        ends = np.concatenate([mid, [t[-1] + (t[-1] - t[-2]) / 2]])
        return starts, ends

    def mapped(self, fit: ClockFit) -> Samples:
        """The same samples with times on the board's clock."""
        return Samples(fit.to_board(self.t_us), self.volts, self.amps, self.seq, self.period_us)


@dataclass(frozen=True)
class ClockFit:
    """board_us = offset_us + slope * (fixture_us - ref_us) + ref_board... kept in one place."""

    ref_fixture_us: int
    ref_board_us: float
    slope: float
    residual_max_us: float
    residual_rms_us: float
    pairs: int
    method: str

    @property
    def offset_us(self) -> float:
        """board clock minus fixture clock at the reference point."""
        return self.ref_board_us - self.ref_fixture_us

    @property
    def drift_ppm(self) -> float:
        return (1.0 / self.slope - 1.0) * 1e6 if self.slope else 0.0

    def to_board(self, t_fixture_us: np.ndarray | int) -> np.ndarray:
        t = np.asarray(t_fixture_us, dtype=np.float64)
        return self.ref_board_us + self.slope * (t - self.ref_fixture_us)

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "pairs": self.pairs,
            "offset_us": round(self.offset_us, 1),
            "drift_ppm": round(self.drift_ppm, 2),
            "residual_max_us": round(self.residual_max_us, 1),
            "residual_rms_us": round(self.residual_rms_us, 1),
        }


def fit_clock(fixture_us: Any, board_us: Any, method: str = "markers") -> ClockFit:
    """Least-squares line board = f(fixture) through marker pairs (one pair: offset only)."""
    f = np.asarray(fixture_us, dtype=np.float64)
    b = np.asarray(board_us, dtype=np.float64)
    if f.size == 0 or f.size != b.size:
        raise PowerFailure(
            f"cannot synchronise power with the trace: {f.size} fixture markers and {b.size} "
            "trace markers; the board must log a marker for every edge it raises"
        )
    ref_f, ref_b = float(f[0]), float(b[0])
    x, y = f - ref_f, b - ref_b
    slope = 1.0 if f.size < 2 or np.ptp(x) == 0 else float(np.dot(x, y) / np.dot(x, x))
    # intercept through the means keeps the fit unbiased
    icpt = float(np.mean(y - slope * x))
    res = y - (icpt + slope * x)
    return ClockFit(
        ref_fixture_us=int(ref_f),
        ref_board_us=ref_b + icpt,
        slope=slope,
        residual_max_us=float(np.max(np.abs(res))),
        residual_rms_us=float(np.sqrt(np.mean(res**2))),
        pairs=int(f.size),
        method=method,
    )


def fit_pings(pings: list[tuple[float, int, float]], keep: float = 0.5) -> ClockFit:
    """Clock fit from (host send s, device tick us, host receive s) round trips.

    The device tick is assumed to fall at the midpoint of the round trip; only the `keep`
    fraction with the shortest round trips is used (queueing delay only ever adds).
    """
    if not pings:
        raise PowerFailure("no clock pings: the fixture never answered 'ping'")
    arr = np.array([(t0, tick, t1) for t0, tick, t1 in pings], dtype=np.float64)
    rtt = arr[:, 2] - arr[:, 0]
    n = max(2, int(len(arr) * keep)) if len(arr) >= 2 else 1
    best = np.sort(np.argsort(rtt)[:n])
    mid_us = (arr[best, 0] + arr[best, 2]) / 2 * 1e6
    return fit_clock(arr[best, 1], mid_us, method="pings")


@dataclass
class SpanEnergy:
    """Energy of the spans of one name. Only spans with every sample present count towards
    energy; spans with missing samples are counted as `incomplete`, and their present samples
    still count towards `mean_power_w` (with `coverage` saying how much was there)."""

    name: str
    count: int = 0
    energy_j: float = 0.0
    seconds: float = 0.0
    incomplete: int = 0
    per_span_j: list[float] = field(default_factory=list)
    watts_sum: float = 0.0
    present: int = 0
    expected: int = 0

    def summary(self) -> dict[str, Any]:
        nan = float("nan")
        return {
            "name": self.name,
            "count": self.count,
            "energy_j": self.energy_j,
            "mean_energy_j": self.energy_j / self.count if self.count else nan,
            "mean_power_w": self.watts_sum / self.present if self.present else nan,
            "seconds": self.seconds,
            "incomplete": self.incomplete,
            "coverage": self.present / self.expected if self.expected else 0.0,
        }


def spans(trace: dict[str, Any] | list[Any]) -> list[dict[str, Any]]:
    """Complete spans (ph X, or B/E pairs) of a Chrome trace as dicts with ts and dur in us."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    out: list[dict[str, Any]] = []
    open_: dict[tuple[Any, Any, str], list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        ph = ev.get("ph")
        if ph == "X":
            out.append(ev)
        elif ph == "B":
            open_[(ev.get("pid"), ev.get("tid"), ev.get("name", ""))].append(ev)
        elif ph == "E":
            stack = open_.get((ev.get("pid"), ev.get("tid"), ev.get("name", "")))
            if stack:
                b = stack.pop()
                out.append({**b, "ph": "X", "dur": ev["ts"] - b["ts"]})
    return out


def trace_markers(trace: dict[str, Any] | list[Any]) -> list[tuple[float, int]]:
    """(ts us, seq) of the marker instant events a board logs when it raises its marker line
    (name "marker..."; the sequence number in args "seq" or "id", else the event's order)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    out = []
    for i, ev in enumerate(events):
        if ev.get("ph") in ("i", "I", "R") and str(ev.get("name", "")).startswith("marker"):
            args = ev.get("args") or {}
            out.append((float(ev["ts"]), int(args.get("seq", args.get("id", i)))))
    return sorted(out)


@dataclass(frozen=True)
class MarkerPairs:
    """GPIO edges the fixture stamped, paired with the marker events of the board's trace."""

    fixture_us: list[float]
    board_us: list[float]
    seqs: list[int]  # the board's sequence number of each pair
    unmatched_seqs: list[int]  # logged by the board, no edge seen (a missed edge)
    unmatched_edges: list[float]  # seen by the fixture, not in the trace (a glitch)


def pair_markers(
    edges_us: Any, markers: list[tuple[float, int]], tolerance_us: float | None = None
) -> MarkerPairs:
    """Pairs fixture edges with trace markers (`trace_markers`) on two unsynchronised clocks.

    Either side may lack some: an edge the fixture missed, a glitch the board never logged.
    Every (edge, marker) among the first few of each is tried as an anchor (offset only);
    the anchor under which most markers find an edge within `tolerance_us` wins (ties: the
    smaller residual), then a line fitted through its pairs re-pairs everything, which takes
    out the drift. The tolerance defaults to a quarter of the shortest interval between the
    board's markers, so a marker's nearest edge is never its neighbour's.
    """
    f = np.sort(np.asarray(edges_us, dtype=np.float64))
    b = np.array([t for t, _ in markers], dtype=np.float64)
    seq = [s for _, s in markers]
    if f.size == 0 or b.size == 0:
        raise PowerFailure(
            f"cannot pair markers: {f.size} fixture edges and {b.size} trace markers; the board "
            "must raise its marker line (wired to the fixture's marker pin) and log each edge"
        )
    tol = tolerance_us or (float(np.min(np.diff(b))) / 4 if b.size > 1 else 1e6)

    def match(to_board: Any, tol: float) -> tuple[list[int], list[int], float]:
        mapped = to_board(f)
        fi, bi, err = [], [], 0.0
        for j, t in enumerate(b):
            k = int(np.argmin(np.abs(mapped - t)))
            d = abs(float(mapped[k]) - t)
            if d <= tol and k not in fi:
                fi.append(k)
                bi.append(j)
                err += d
        return fi, bi, err

    best: tuple[int, float, list[int], list[int]] | None = None
    for i in range(min(8, f.size)):
        for j in range(min(8, b.size)):
            off = b[j] - f[i]
            fi, bi, err = match(lambda x, off=off: x + off, tol)
            if best is None or (len(fi), -err) > (best[0], -best[1]):
                best = (len(fi), err, fi, bi)
    assert best is not None
    fi, bi = best[2], best[3]
    if len(fi) >= 2:
        fit = fit_clock(f[fi], b[bi], method="trace markers")
        fi, bi, _ = match(fit.to_board, tol)
    order = np.argsort(bi)
    fi = [fi[k] for k in order]
    bi = [bi[k] for k in order]
    return MarkerPairs(
        fixture_us=[float(f[k]) for k in fi],
        board_us=[float(b[k]) for k in bi],
        seqs=[seq[k] for k in bi],
        unmatched_seqs=[seq[k] for k in range(b.size) if k not in set(bi)],
        unmatched_edges=[float(f[k]) for k in range(f.size) if k not in set(fi)],
    )


def fit_trace_markers(edges_us: Any, trace: dict[str, Any] | list[Any]) -> ClockFit:
    """Clock fit from the fixture's GPIO edges paired with the board trace's marker events;
    edges or markers left unpaired are logged by sequence number."""
    pairs = pair_markers(edges_us, trace_markers(trace))
    if pairs.unmatched_seqs or pairs.unmatched_edges:
        log.warning(
            "marker pairing: board markers %s have no edge at the fixture; %d fixture edges "
            "are not in the trace",
            pairs.unmatched_seqs,
            len(pairs.unmatched_edges),
        )
    return fit_clock(pairs.fixture_us, pairs.board_us, method="gpio markers paired by trace seq")


def energy_by_span(samples: Samples, span_list: list[dict[str, Any]]) -> dict[str, SpanEnergy]:
    """Energy of each span name; samples must already be on the board's clock. Each span is
    integrated exactly over its own window (`Samples.energy_between`: the samples at its
    edges count for the part of their interval inside it); an instant span draws 0 J."""
    out: dict[str, SpanEnergy] = {}
    if len(samples) == 0:
        return out
    t = samples.t_us.astype(np.float64)
    wsum = np.concatenate([[0.0], np.cumsum(samples.watts)])
    gaps = samples.gaps()
    for sp in span_list:
        t0, t1 = float(sp["ts"]), float(sp["ts"]) + float(sp.get("dur", 0))
        acc = out.setdefault(sp["name"], SpanEnergy(sp["name"]))
        i0, i1 = (int(i) for i in np.searchsorted(t, [t0, t1]))
        acc.present += i1 - i0
        acc.watts_sum += float(wsum[i1] - wsum[i0])
        acc.expected += max(1, round((t1 - t0) / samples.period_us)) if samples.period_us else 0
        # the midpoint rule would stretch the samples either side of a gap over it: a span
        # that touches a gap is refused here, whatever energy_between makes of it
        overlaps_gap = any(g.start_us < t1 and g.end_us > t0 for g in gaps)
        e = samples.energy_between(t0, t1) if t1 > t0 else 0.0
        if overlaps_gap or np.isnan(e):
            acc.incomplete += 1
            continue
        acc.count += 1
        acc.energy_j += e
        acc.seconds += (t1 - t0) * 1e-6
        acc.per_span_j.append(e)
    return out


def counter_events(samples: Samples, pid: Any = 0, max_points: int = 20000) -> list[dict[str, Any]]:
    """A Perfetto counter track ("power", watts) for the samples, decimated by averaging."""
    n = len(samples)
    if n == 0:
        return []
    step = max(1, -(-n // max_points))
    w = samples.watts
    events = []
    for i in range(0, n, step):
        seg = slice(i, min(n, i + step))
        events.append(
            {
                "name": "power",
                "ph": "C",
                "ts": float(samples.t_us[i]),
                "pid": pid,
                "args": {"W": round(float(np.mean(w[seg])), 6)},
            }
        )
    return events


def write_csv(samples: Samples, path: Path) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t_us", "seq", "volts", "amps", "watts"])
        for row in zip(
            samples.t_us.tolist(),
            samples.seq.tolist(),
            samples.volts.tolist(),
            samples.amps.tolist(),
            samples.watts.tolist(),
            strict=True,
        ):
            out.writerow(
                [f"{row[0]:.1f}", row[1], f"{row[2]:.5f}", f"{row[3]:.6f}", f"{row[4]:.6f}"]
            )


def plot(samples: Samples, span_list: list[dict[str, Any]], path: Path, title: str) -> None:
    """Power over time with the trace's stages shaded and gaps in red (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4), dpi=100)
    if len(samples):
        t0 = float(samples.t_us[0])
        ax.plot((samples.t_us - t0) * 1e-6, samples.watts, lw=0.6, color="#1f5fbf", label="power")
        colours = plt.get_cmap("tab10")
        names = sorted({s["name"] for s in span_list})
        for sp in span_list:
            c = colours(names.index(sp["name"]) % 10)
            a = (float(sp["ts"]) - t0) * 1e-6
            ax.axvspan(a, a + float(sp.get("dur", 0)) * 1e-6, color=c, alpha=0.15, lw=0)
        for i, name in enumerate(names[:10]):
            ax.plot([], [], color=colours(i), lw=6, alpha=0.4, label=name)
        for g in samples.gaps():
            ax.axvspan((g.start_us - t0) * 1e-6, (g.end_us - t0) * 1e-6, color="red", alpha=0.4)
    ax.set_xlabel("time on the board's clock (s)")
    ax.set_ylabel("power (W)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def analyse(
    samples: Samples,
    trace: dict[str, Any],
    fit: ClockFit,
    out_dir: Path,
    title: str = "power",
) -> dict[str, Any]:
    """Writes power.csv, power.png, trace.json (with the power counter) and power.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    on_board = samples.mapped(fit)
    span_list = spans(trace)
    energy = energy_by_span(on_board, span_list)
    gaps = samples.gaps()
    if gaps:
        log.warning(
            "power samples: %d gaps, %d samples missing (first at fixture t=%d us); "
            "they are reported, not interpolated",
            len(gaps),
            sum(g.missing for g in gaps),
            gaps[0].start_us,
        )
    write_csv(on_board, out_dir / "power.csv")
    plot(on_board, span_list, out_dir / "power.png", title)
    merged = dict(trace) if isinstance(trace, dict) else {"traceEvents": list(trace)}
    merged["traceEvents"] = list(merged.get("traceEvents", [])) + counter_events(on_board)
    (out_dir / "trace.json").write_text(json.dumps(merged))
    report = {
        "samples": len(samples),
        "period_us": samples.period_us,
        "mean_power_w": float(np.mean(samples.watts)) if len(samples) else None,
        "energy_j": float(np.sum(samples.watts) * samples.period_us * 1e-6),
        "clock": fit.summary(),
        "gaps": [g.__dict__ for g in gaps],
        "spans": {k: v.summary() for k, v in sorted(energy.items())},
    }
    (out_dir / "power.json").write_text(json.dumps(report, indent=2))
    return report

"""`ocula profile`: latency and power of one app on a board, synchronised, in one folder.

The power rig samples while the board works; marker edges at the start and the end put the
samples on the board's clock (`hil.targets.PowerRig.capture`); the board's trace gives the
spans. Out come power.csv, power.png (power with the stages shaded), trace.json (the trace plus
a "power" counter track, for Perfetto), power.json (energy per span name, mean power per
state, clock offset and drift, gaps) and index.html.

Workloads: an app the board runs over the link (`run` request, trace fetched with `trace`),
or `requests`, the board's agent serving bursts of info/stats requests between idle spells,
which needs nothing but the agent and is traced on this host (for a sim board this host's
monotonic clock is the board's clock).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hil import power as pw
from hil.boardio import fetch_trace
from hil.errors import HilError
from hil.report import Objective, TestRecord
from hil.report import write as write_report
from hil.targets import BoardUnderTest, PowerRig
from runtime.errors import OculaError

log = logging.getLogger(__name__)

BUILTIN = ("requests",)


def _requests_workload(board: BoardUnderTest, seconds: float) -> tuple[dict[str, Any], list[float]]:
    """Alternating idle and busy spells; spans on this host's monotonic clock (us)."""
    events: list[dict[str, Any]] = [
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "agent"}}
    ]
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic_ns() / 1000
        time.sleep(0.25)  # the idle state: the board does nothing for a quarter second
        t1 = time.monotonic_ns() / 1000
        events.append(
            {
                "name": "idle",
                "cat": "state",
                "ph": "X",
                "ts": t0,
                "dur": t1 - t0,
                "pid": 1,
                "tid": 1,
            }
        )
        busy_end = time.monotonic() + 0.25
        while time.monotonic() < busy_end:
            r0 = time.monotonic_ns() / 1000
            board.call("info")
            r1 = time.monotonic_ns() / 1000
            latencies.append((r1 - r0) / 1000)
            events.append(
                {
                    "name": "request",
                    "cat": "stage",
                    "ph": "X",
                    "ts": r0,
                    "dur": r1 - r0,
                    "pid": 1,
                    "tid": 1,
                }
            )
        events.append(
            {
                "name": "busy",
                "cat": "state",
                "ph": "X",
                "ts": t1,
                "dur": time.monotonic_ns() / 1000 - t1,
                "pid": 1,
                "tid": 1,
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}, latencies


def _app_workload(
    board: BoardUnderTest, app: str, seconds: float
) -> tuple[dict[str, Any], list[float]]:
    """Runs `app` on the board and fetches its trace, shifted onto the board's monotonic clock.

    The trace's times count from its own start. When the trace says where that is
    (otherData.origin_monotonic_s) it is used; otherwise the start is estimated as the reply's
    arrival minus the run's duration, and the report says the alignment is estimated.
    """
    try:
        reply = board.call("run", app=app, seconds=seconds)
    except HilError as e:
        raise HilError(
            f"{board.url}: the board did not run app {app!r} ({e}); "
            f"profile the agent itself with --app {BUILTIN[0]}"
        ) from e
    arrived_us = time.monotonic_ns() / 1000
    name = reply.get("trace") or f"{app}.json"
    try:
        trace = json.loads(fetch_trace(board.client, name, f"{board.url}: board"))
    except OculaError as e:
        raise HilError(f"{e} after running {app}") from e
    other = trace.setdefault("otherData", {})
    if "origin_monotonic_s" in other:
        origin_us = float(other["origin_monotonic_s"]) * 1e6
        other["alignment"] = "trace origin on the board's monotonic clock"
    else:
        origin_us = arrived_us - float(reply.get("seconds", seconds)) * 1e6
        other["alignment"] = "estimated: reply arrival minus run duration"
    for ev in trace.get("traceEvents", []):
        if "ts" in ev:
            ev["ts"] = float(ev["ts"]) + origin_us
    latencies = [
        v * 1e3
        for vals in reply.get("latency_s", {}).values()
        if isinstance(vals, list)
        for v in vals
    ]
    return trace, latencies


def profile(
    url: str,
    app: str,
    out: Path,
    seconds: float = 3.0,
    fixture_port: str | None = None,
    rate_hz: int = 2000,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    board = BoardUnderTest(url, out / "work")
    rig = None
    try:
        board.hello()
        rig = PowerRig(board, out / "work", fixture_port, rate_hz)
        with rig.capture() as cap:
            if app in BUILTIN:
                trace, latencies = _requests_workload(board, seconds)
            else:
                trace, latencies = _app_workload(board, app, seconds)
        edges = [m.t_us for m in cap.markers if m.source == "gpio"]
        if edges and pw.trace_markers(trace):
            # the board logged its marker edges in the trace: pair them with what the
            # fixture stamped (the rig's own start/end edges stay unpaired)
            cap.refit(pw.fit_trace_markers(edges, trace))
        assert cap.fit is not None
        result = pw.analyse(
            cap.samples, trace, cap.fit, out, title=f"{app} on {board.profile.name}"
        )
        states = {k: v for k, v in result["spans"].items() if k in ("idle", "busy")}
        result["mean_power_by_state_w"] = {k: v["mean_power_w"] for k, v in states.items()}
        result["app"], result["board"] = app, board.profile.name
        (out / "power.json").write_text(json.dumps(result, indent=2))
        rec = TestRecord(f"profile {app} on {url}", seconds=seconds)
        rec.images["power with stages"] = str(out / "power.png")
        if latencies:
            rec.latencies_ms[app] = latencies
        p = board.profile.power
        rec.objectives.append(
            Objective("power.average_w", p.average_budget_w, result["mean_power_w"] or 0.0, "W")
        )
        rec.steps = list(board.evidence.steps)
        rec.files = {
            "samples": str(out / "power.csv"),
            "trace (Perfetto)": str(out / "trace.json"),
            "summary": str(out / "power.json"),
        }
        meta = {
            "board": url,
            "app": app,
            "clock fit": json.dumps(result["clock"]),
            "gaps": len(result["gaps"]),
        }
        write_report([rec], out, meta)
        return result
    finally:
        if rig is not None:
            rig.close()
        board.close()

"""App latency objectives from the board profile: run each app on the board over the link,
fetch its trace, and hold its display cadence and stage latencies to the profile's targets.
A board whose agent cannot run an app, or whose bundle lacks the app's models (pass --bundle),
says why, and the test is skipped with that reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hil.errors import LinkFailure
from hil.power import spans

APPS = ("captions", "translate", "look")


def _run(board, app: str, seconds: float) -> dict:
    try:
        reply = board.call("run", app=app, seconds=seconds)
    except LinkFailure as e:
        if "not wired" in str(e) or "no app" in str(e):
            pytest.skip(f"the board cannot run {app}: {e}")
        if "needs a" in str(e) and "rebuild the bundle" in str(e):
            pytest.skip(f"flash a bundle with {app}'s models (--bundle FILE): {e}")
        raise
    name = reply.get("trace") or f"{app}.json"
    data, offset = bytearray(), 0
    while True:
        r, blob = board.client.call("trace", {"name": name, "offset": offset})
        assert r.get("ok"), f"no trace {name!r}: {r.get('error')}"
        data += blob
        offset += len(blob)
        if not blob or offset >= r["size"]:
            return json.loads(bytes(data))


@pytest.mark.parametrize("app", APPS)
@pytest.mark.objective("display.frame_ms")
def test_app_latency_objectives(board, objectives, hil_record, app):
    board.hello()
    trace = _run(board, app, seconds=5.0)
    by_name: dict[str, list[float]] = {}
    for sp in spans(trace):
        by_name.setdefault(sp["name"], []).append(float(sp.get("dur", 0)) / 1000)
    assert by_name, f"{app} produced an empty trace"
    hil_record.latencies_ms.update(by_name)
    display = [v for k, vals in by_name.items() if k.startswith("display") for v in vals]
    if display:
        objectives.check("display.frame_ms", float(np.percentile(display, 95)))

"""Power budget per app state, from the rig fixture, against the board profile's budgets."""

from __future__ import annotations

import numpy as np


def test_idle_power_within_average_budget(board, power, objectives, hil_record, tmp_path):
    board.hello()
    with power.capture() as cap:
        power.fixture.wait_samples(power.rate_hz // 2)
    assert not cap.samples.gaps() or cap.samples.gaps()[0].missing >= 0
    hil_record.files["power fit"] = str(cap.fit.summary() if cap.fit else None)
    _plot(cap, tmp_path / "idle.png", hil_record, "idle power")
    objectives.check("power.average_w", cap.mean_w())


def test_busy_power_within_burst_budget(board, power, objectives, hil_record, tmp_path):
    board.hello()
    with power.capture() as cap:
        for _ in range(300):
            board.call("info")
    watts = cap.samples.watts
    _plot(cap, tmp_path / "busy.png", hil_record, "busy power (300 info requests)")
    assert len(watts) > 0
    objectives.check("power.burst_w", float(np.percentile(watts, 99)))
    objectives.check("power.average_w", float(watts.mean()))


def _plot(cap, path, hil_record, title):
    from hil.power import plot

    plot(cap.on_board, [], path, title)
    hil_record.images[title] = str(path)

"""Soak: minutes of requests (--hil-soak-minutes); no RSS or open-file growth, counters flat."""

from __future__ import annotations

import time


def test_soak(board, request, hil_record):
    minutes = request.config.getoption("--hil-soak-minutes")
    board.hello()
    for _ in range(50):  # warm-up: first-call allocations are not growth
        board.call("info")
    first = board.call("stats")
    end = time.monotonic() + minutes * 60
    requests = 0
    while time.monotonic() < end:
        board.call("info")
        board.call("stats")
        requests += 2
    last = board.call("stats")
    hil_record.steps.append((f"soak: {requests} requests", minutes * 60))
    growth_kb = last["max_rss_kb"] - first["max_rss_kb"]
    assert growth_kb <= 2048, f"RSS grew by {growth_kb} kB over {requests} requests"
    assert last["open_files"] == first["open_files"], "open files grew"
    errors = last["counters"].get("errors", 0) - first["counters"].get("errors", 0)
    assert errors == 0, f"{errors} request errors during the soak"
    dropped = last["counters"].get("audio_dropped", 0) - first["counters"].get("audio_dropped", 0)
    assert dropped == 0, f"{dropped} audio blocks dropped"

"""The scheduler's guarantees, checked in virtual time (deterministic, no sleeps)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from board import profiles
from runtime.sched import (
    AudioRing,
    Backlog,
    Governor,
    LatestSlot,
    MonotonicClock,
    Priority,
    Scheduler,
    VirtualClock,
    core_plan,
)
from runtime.sched.scheduler import RT_SWITCH_INTERVAL_S, Job
from runtime.telemetry import Telemetry
from runtime.telemetry.energy import Meter


def _sched(profile: str = "sim", workers: int = 1) -> tuple[Scheduler, VirtualClock, Telemetry]:
    clock = VirtualClock()
    tel = Telemetry(clock, profiles.find(profile))
    return Scheduler(clock, tel, workers=workers), clock, tel


def _steps(
    n: int, cost: float, log: list[tuple[str, float]] | None = None, name: str = "", clock=None
):
    for _ in range(n):
        if log is not None:
            log.append((name, clock.now()))
        yield cost


def test_higher_priority_waits_at_most_one_step() -> None:
    s, clock, _ = _sched()
    log: list[tuple[str, float]] = []
    s.submit(Job("llm", _steps(20, 0.5, log, "llm", clock), Priority.LLM))
    s.run_for(1.2)  # mid-step: the LLM step that started at 1.0 runs until 1.5
    asr = s.submit(Job("asr", _steps(3, 0.1, log, "asr", clock), Priority.ASR))
    s.run_for(5.0)
    assert asr.first_step_at == pytest.approx(1.5)
    assert asr.first_step_at - asr.ready_at <= 0.5
    # the ASR job ran all its steps before the LLM got the worker back
    order = [n for n, t in log if 1.5 <= t < 1.8]
    assert order == ["asr", "asr", "asr"]


def test_equal_priority_runs_earliest_deadline_first() -> None:
    s, _, _ = _sched()
    late = s.submit(Job("late", _steps(1, 0.1), Priority.LLM, deadline=10.0))
    soon = s.submit(Job("soon", _steps(1, 0.1), Priority.LLM, deadline=1.0))
    s.run_for(1.0)
    assert soon.done_at is not None and late.done_at is not None
    assert soon.done_at < late.done_at


def test_realtime_display_is_never_blocked_by_inference() -> None:
    s, _, tel = _sched()
    frames: list[float] = []
    s.every("display", 1 / 30, lambda now: frames.append(now) and None)
    for _ in range(3):
        s.submit(Job("llm", _steps(5, 2.0), Priority.LLM))  # 2 s steps: a pathological stall
    s.run_for(10.0)
    assert len(frames) == pytest.approx(300, abs=1)
    assert tel.metrics.counter("late.display") == 0
    gaps = np.diff(frames)
    assert gaps.max() == pytest.approx(1 / 30)


def test_late_display_frames_are_counted_once_and_skipped_slots_apart() -> None:
    s, _, tel = _sched()
    # every 10th frame takes 50 ms: written after its deadline (due + 33 ms), so late; the
    # next slot's deadline is still ahead, so it runs (late to start, on time when done)
    n = {"i": 0}

    def draw(now: float) -> float:
        n["i"] += 1
        return 0.05 if n["i"] % 10 == 0 else 0.001

    s.every("display", 1 / 30, draw)
    s.run_for(3.0 - 1e-9)
    m = tel.metrics
    assert m.counter("late.display") == 9
    assert m.counter("skipped.display") == 0
    assert m.counter("ticks.display") == 90
    delays = m.histograms["tick_delay.display"]
    assert delays.count == 90
    assert max(delays.samples) == pytest.approx(0.05)
    # one 120 ms stall: that frame is late once; the two slots whose deadlines passed during
    # it are skipped (never drawn), and the loop is on time again after
    s2, _, tel2 = _sched()
    k = {"i": 0}

    def stall(now: float) -> float:
        k["i"] += 1
        return 0.12 if k["i"] == 5 else 0.001

    s2.every("display", 1 / 30, stall)
    s2.run_for(1.0 - 1e-9)
    m2 = tel2.metrics
    assert m2.counter("late.display") == 1
    assert m2.counter("skipped.display") == 2
    assert m2.counter("ticks.display") == 28


def _capture_pipeline(ring: AudioRing, s: Scheduler, stall_s: float):
    produced = {"n": 0}
    received: list[np.ndarray] = []

    def capture(now: float) -> float:
        block = np.arange(produced["n"], produced["n"] + 160) % 30000
        produced["n"] += 160
        ring.write(block.astype(np.int16))
        return 0.0002

    def consume():
        while True:
            received.append(ring.read()[:, 0].copy())
            yield 0.005

    s.every("audio", 0.01, capture)
    s.submit(Job("vad", consume(), Priority.VAD))
    # a stall: a long step of a job that outranks the consumer
    s.submit(Job("stall", _steps(1, stall_s), Priority.VAD + 1))
    s.run_for(stall_s + 2.0)
    got = np.concatenate(received)
    return produced["n"], got


def test_audio_ring_sized_from_profile_survives_the_worst_stall() -> None:
    s, _, _ = _sched()
    ring = AudioRing.for_profile(profiles.find("sim"))
    assert ring.capacity == 16000 * 32  # a 30 s utterance + margin, at the profile's rate
    produced, got = _capture_pipeline(ring, s, stall_s=25.0)
    assert ring.overflowed == 0
    assert len(got) == produced - ring.available
    np.testing.assert_array_equal(got, np.arange(len(got)) % 30000)  # nothing lost, in order


def test_audio_overflow_is_counted_never_silent() -> None:
    s, _, _ = _sched()
    ring = AudioRing(8000)  # 0.5 s: too small for a 3 s stall
    produced, got = _capture_pipeline(ring, s, stall_s=3.0)
    assert ring.overflowed > 0
    assert len(got) + ring.available + ring.overflowed == produced
    # what was kept is the oldest unread audio, contiguous from the start
    np.testing.assert_array_equal(got[:8000], np.arange(8000) % 30000)


def test_camera_slot_drops_stale_frames_and_stays_bounded() -> None:
    s, _, _ = _sched()
    slot: LatestSlot[int] = LatestSlot()
    n = {"i": 0}
    seen: list[int] = []

    def capture(now: float) -> float:
        n["i"] += 1
        slot.put(n["i"], now)
        return 0.001

    def vision(now: float) -> float:
        item = slot.take()
        if item is not None:
            seen.append(item.value)
        return 0.15

    s.every("camera", 1 / 30, capture)
    s.every("ocr", 0.2, vision, realtime=False, priority=Priority.VISION)
    s.run_for(4.0)
    left = 1 if slot.take() is not None else 0
    assert slot.stale == n["i"] - len(seen) - left
    assert slot.stale > 80
    assert seen == sorted(seen)  # always the newest frame, never an old one after a newer


def test_deadline_misses_and_failing_jobs_are_counted_and_others_run() -> None:
    s, _, tel = _sched()

    def broken():
        yield 0.1
        raise RuntimeError("engine exploded")

    stopped: list[BaseException] = []

    def camera(now: float) -> float:
        raise OSError("camera unplugged")

    s.every("camera", 0.1, camera, on_error=stopped.append)
    ticks: list[float] = []
    s.every("display", 0.1, lambda now: ticks.append(now) and None)
    bad = s.submit(Job("bad", broken(), Priority.LLM))
    slow = s.submit(Job("slow", _steps(5, 0.5), Priority.LLM, deadline=1.0))
    s.run_for(5.0)
    assert isinstance(bad.error, RuntimeError)
    assert slow.done_at is not None
    assert tel.metrics.counter("errors.bad") == 1
    assert tel.metrics.counter("deadline_miss.slow") == 1
    assert tel.metrics.counter("errors.camera") == 1 and len(stopped) == 1
    assert len(ticks) == pytest.approx(50, abs=1)  # the display kept going


def test_governor_sheds_quality_over_budget_and_says_so() -> None:
    s, _clock, tel = _sched("ar1-ref")
    p = profiles.find("ar1-ref")
    meter = Meter(tel.energy)
    gov = Governor(p, meter, tel, camera_fps=30, max_tokens=64, small_tier=False)
    s.meter = meter
    policies = []
    gov.on_change(policies.append)
    s.every("governor", 1.0, lambda now: gov.update(now) and 0.0)
    # one core busy all the time: 0.05 + 0.03 + 0.35 W > 0.2 W average budget
    s.submit(Job("llm", _steps(400, 0.1), Priority.LLM))
    s.run_for(20.0)
    assert [x.level for x in policies][:3] == [1, 2, 4]
    assert policies[0].camera_fps == 15
    assert policies[1].max_tokens == 32
    assert policies[2].translation_paused
    actions = [e["args"]["action"] for e in tel.trace.instants("governor")]
    assert actions[:4] == [
        "camera rate lowered",
        "LLM tokens capped",
        "no smaller tier bundled; skipped",
        "translation paused",
    ]
    assert "average" in tel.trace.instants("governor")[0]["args"]["reason"]
    # idle again: it climbs back
    s.run_for(60.0)
    assert gov.policy.level == 0
    assert any(
        "restored" in a for a in (e["args"]["action"] for e in tel.trace.instants("governor"))
    )


def test_governor_uses_a_bundled_smaller_tier() -> None:
    _, clock, tel = _sched("ar1-ref")
    meter = Meter(tel.energy)
    gov = Governor(
        profiles.find("ar1-ref"),
        meter,
        tel,
        camera_fps=30,
        max_tokens=64,
        small_tier=True,
        hold_s=0,
    )
    seen = []
    gov.on_change(seen.append)
    for t in range(1, 10):
        meter.add(float(t), 1.0, 2)
        clock.set(float(t))
        gov.update(clock.now())
    assert [p.level for p in seen] == [1, 2, 3, 4]
    assert seen[2].tier == "small" and not seen[2].translation_paused


def test_trace_is_chrome_json_and_percentiles_match_numpy(tmp_path) -> None:
    s, _, tel = _sched()
    s.every("display", 0.1, lambda now: 0.001)
    s.submit(Job("asr", _steps(10, 0.2), Priority.ASR))
    s.run_for(3.0)
    data = json.loads(tel.trace.write(tmp_path / "t.json").read_text())
    events = data["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"realtime", "worker 0"} <= names
    spans = [e for e in events if e["ph"] == "X" and e["name"] == "asr"]
    assert len(spans) == 10 and all(e["dur"] == pytest.approx(200000) for e in spans)
    vals = np.random.default_rng(0).exponential(size=1000)
    for v in vals:
        tel.metrics.observe("lat", float(v))
    summ = tel.metrics.summary()["latency_s"]["lat"]
    assert summ["p90"] == pytest.approx(np.percentile(vals, 90))
    assert summ["p99"] == pytest.approx(np.percentile(vals, 99))


def test_energy_per_stage_follows_the_power_model() -> None:
    s, _, tel = _sched("ar1-ref")
    s.submit(Job("asr", _steps(10, 0.2), Priority.ASR, cores=2))
    s.run_for(3.0)
    stages = tel.energy.by_stage(tel.trace.spans("inference"))
    assert stages["asr"].joules == pytest.approx(10 * 0.2 * 2 * 0.35)
    _t, w = tel.energy.power_series(tel.trace.spans(), 0.0, 3.0, bin_s=0.5)
    assert w[0] == pytest.approx(0.05 + 0.03 + 2 * 0.35)
    assert w[-1] == pytest.approx(0.05 + 0.03)


def test_core_plan_keeps_the_realtime_loop_off_inference_cores() -> None:
    ar1 = core_plan(profiles.find("ar1-ref"))
    assert set(ar1.realtime).isdisjoint(ar1.asr + ar1.llm)
    assert set(ar1.asr).isdisjoint(ar1.llm)
    rpi = core_plan(profiles.find("rpi5"))
    assert set(rpi.realtime).isdisjoint(rpi.llm)
    sim = core_plan(profiles.find("sim"))
    assert sim.realtime == (0,) and sim.llm == (1,)


def test_real_threads_run_the_same_tasks() -> None:
    clock = MonotonicClock()
    tel = Telemetry(clock, profiles.find("sim"))
    s = Scheduler(clock, tel, workers=1, plan=core_plan(profiles.find("sim")))
    ticks: list[float] = []
    s.every("display", 0.01, lambda now: ticks.append(now) and None)
    switch: list[float] = []
    s.every("switch", 0.01, lambda now: switch.append(sys.getswitchinterval()) and None)
    job = s.submit(Job("asr", iter([None, None, None]), Priority.ASR))
    before = sys.getswitchinterval()
    s.run_realtime(30.0, until=lambda: job.done_at is not None and len(ticks) >= 3)
    assert job.done_at is not None and job.steps_done == 3
    assert len(ticks) >= 3
    # while the loop runs, the GIL changes hands every 0.1 ms; afterwards as it was
    assert switch and all(v == pytest.approx(RT_SWITCH_INTERVAL_S) for v in switch)
    assert sys.getswitchinterval() == before


def test_worker_pools_keep_speech_off_the_llm_worker() -> None:
    clock = VirtualClock()
    tel = Telemetry(clock, profiles.find("ar1-ref"))
    s = Scheduler(clock, tel, workers=("asr", "llm"))
    llm = s.submit(Job("llm", _steps(10, 0.5), Priority.LLM, pool="llm"))
    s.run_for(1.2)
    asr = s.submit(Job("asr", _steps(3, 0.1), Priority.ASR, pool="asr"))
    ocr = s.submit(Job("ocr", _steps(1, 0.1), Priority.VISION, pool="vision"))  # no such pool
    s.run_for(10.0)
    assert asr.first_step_at == pytest.approx(1.2)  # no wait at all: its own worker
    assert ocr.first_step_at == pytest.approx(1.5)  # ran on the first worker that was free
    assert llm.done_at == pytest.approx(5.1)  # yielded once, to the more urgent OCR step
    tracks = {sp.track for sp in tel.trace.spans("inference") if sp.name == "asr"}
    assert tracks == {"worker 0"}


def test_governor_sheds_translation_backlog_and_recovers() -> None:
    """Sentences arrive every 2 s; the LLM clears one every 5 s (its core is shared with a hog),
    then the hog stops. The backlog ladder moves down and back up, each move in the trace."""
    s, _clock, tel = _sched("sim")
    p = profiles.find("sim")
    gov = Governor(
        p, Meter(tel.energy), tel, camera_fps=10, max_tokens=48, small_tier=False, hold_s=2.0
    )
    waiting: list[float] = []  # speech-end times of the sentences not yet translated
    gov.watch_backlog(lambda now: Backlog(len(waiting), now - waiting[0] if waiting else 0.0))
    seen = []
    gov.on_change(seen.append)
    s.every("governor", 1.0, lambda now: gov.update(now) and 0.0)

    def speaker(now: float) -> float:
        if now < 30:
            waiting.append(now)
        return 0.0

    def llm(now: float) -> float:
        if gov.policy.translation_paused:
            waiting.clear()
        elif waiting:
            if gov.policy.latest_only:
                del waiting[:-1]
            waiting.pop(0)
        return 0.0

    s.every("speaker", 2.0, speaker)
    s.every("llm", 5.0, llm)
    s.run_for(30.0)
    levels = [x.backlog_level for x in seen]
    assert levels[:3] == [1, 2, 4]  # no smaller tier bundled: rung 3 skipped
    assert seen[0].max_tokens == 24 and not seen[0].latest_only
    assert seen[1].latest_only and seen[2].translation_paused
    assert all(x.level == 0 and x.camera_fps == 10 for x in seen)  # power ladder untouched
    events = [e["args"] for e in tel.trace.instants("governor")]
    assert [e["action"] for e in events if e.get("ladder") == "backlog"][:4] == [
        "LLM tokens capped",
        "skipping to the newest sentence",
        "no smaller tier bundled; skipped",
        "translation paused",
    ]
    assert "backlog: " in events[0]["reason"] and "waiting" in events[0]["reason"]
    # the speaker stops at 30 s: nothing waits, the ladder climbs back to normal
    s.run_for(60.0)
    assert gov.policy.backlog_level == 0 and not gov.policy.translation_paused
    actions = [e["args"]["action"] for e in tel.trace.instants("governor")]
    assert "restored: translation paused lifted" in actions

"""App latency objectives from the board profile: run each app on the board over the link,
fetch its trace, and hold its display cadence and stage latencies to the profile's targets.
A board whose agent cannot run an app, or whose bundle lacks the app's models (pass --bundle),
says why, and the test is skipped with that reason. Without --bundle, a sim:// board is first
flashed with a signed bundle of the tiny models (tiny-qwen2 int4, tiny-whisper int8, Silero
VAD, PP-OCR), built once and cached by `tests/artifacts.py` when this runs from a checkout.
captions and translate hear a known speech clip (`data/speech.wav`, two sentences), injected
as the board's microphone, and look sees a sign (`data/sign.png`) injected as its camera, so
their event -> display latencies are measured on real words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hil.boardio import fetch_trace, inject_clip
from hil.errors import LinkFailure
from hil.power import spans

APPS = ("captions", "translate", "look")
SPEECH = Path(__file__).parent / "data" / "speech.wav"
SIGN = Path(__file__).parent / "data" / "sign.png"
# each app's event -> display latency and the profile objective its p90 is held to
LATENCY = {
    "captions": ("speech_end_to_caption_s", "caption_s"),
    "translate": ("speech_end_to_first_translation_s", "translation_s"),
    "look": ("frame_to_answer_s", "answer_s"),
}


@pytest.fixture
def app_board(board, request):
    """The board, with the apps' models installed (see the module notes)."""
    if request.config.getoption("--bundle") or board.sim is None:
        return board
    board.hello()
    if getattr(board, "apps_bundle", None) != board.call("info").get("booted"):
        try:
            from tests.artifacts import apps_bundle
        except ImportError:  # an installed Ocula without its checkout's tests
            return board
        path, _ = apps_bundle(board.profile.name)
        result = board.flash(path, reboot_timeout=60)
        assert result.ok, f"the apps bundle did not boot: {result.reason}"
        board.apps_bundle = result.booted
    return board


def _run(board, app: str, seconds: float, **fields) -> tuple[dict, dict]:
    try:
        reply = board.call("run", app=app, seconds=seconds, **fields)
    except LinkFailure as e:
        if "not wired" in str(e) or "no app" in str(e):
            pytest.skip(f"the board cannot run {app}: {e}")
        if "needs a" in str(e) and "rebuild the bundle" in str(e):
            pytest.skip(f"flash a bundle with {app}'s models (--bundle FILE): {e}")
        raise
    name = reply.get("trace") or f"{app}.json"
    return reply, json.loads(fetch_trace(board.client, name, f"board {board.profile.name}"))


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


@pytest.mark.parametrize("app", APPS)
@pytest.mark.objective("display.frame_ms")
@pytest.mark.objective("camera.frame_ms")
@pytest.mark.objective("audio.dropped_samples")
@pytest.mark.objective("rss_mb")
@pytest.mark.objective("caption_s")
@pytest.mark.objective("translation_s")
@pytest.mark.objective("answer_s")
def test_app_latency_objectives(app_board, objectives, hil_record, app):
    """Per app: the display's write time (p95) within a refresh period, camera capture within a
    frame period, no audio dropped, the app's event -> display latency (p90) within the
    profile's objective, and the board's peak RSS within the profile's budget."""
    board = app_board
    board.hello()
    where = f"board {board.profile.name}"
    if app == "look":
        sign = inject_clip(board.client, SIGN, where, "camera")
        reply, trace = _run(board, app, seconds=5.0, camera=sign)
    else:
        reply, trace = _run(board, app, seconds=9.0, audio=inject_clip(board.client, SPEECH, where))
    by_name: dict[str, list[float]] = {}
    for sp in spans(trace):
        by_name.setdefault(sp["name"], []).append(float(sp.get("dur", 0)) / 1000)
    assert by_name, f"{app} produced an empty trace"
    hil_record.latencies_ms.update(by_name)
    display = [v for k, vals in by_name.items() if k.startswith("display") for v in vals]
    assert display, f"{app} wrote no display frame in 5 s (spans: {sorted(by_name)})"
    objectives.check("display.frame_ms", _p95(display))
    camera = by_name.get(f"{app}.capture", []) if app == "look" else []
    if camera:
        objectives.check("camera.frame_ms", _p95(camera))
    counters = reply.get("counters", {})
    if "audio.dropped_samples" in counters:
        objectives.check("audio.dropped_samples", float(counters["audio.dropped_samples"]))
    mark, objective = LATENCY[app]
    latency = reply.get("latency_s", {}).get(mark)
    assert latency, (
        f"{app} showed nothing for the injected clip (latencies: "
        f"{sorted(reply.get('latency_s', {}))}, notes: {reply.get('notes')})"
    )
    objectives.check(objective, float(latency["p90"]))
    objectives.check("rss_mb", board.call("stats")["max_rss_kb"] / 1024)

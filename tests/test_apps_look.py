"""`look` end to end on tiny models in virtual time: camera -> OCR -> LLM -> display."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.apps import Devices, make_app
from runtime.io import FileCamera, VirtualDisplay
from runtime.io.screen import FINAL, SOURCE, CaptionScreen
from runtime.sched import VirtualClock
from tests.apps_helpers import atlas, host, models_dir

IMAGES = Path(__file__).parent / "data" / "images"
TRUTH = json.loads((IMAGES / "images.json").read_text())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("look")
    return models_dir(root / "models", ("llm", "vision")), atlas(root)


@pytest.mark.parametrize("image", ["sign_en.png", "sign_zh.png"])
def test_look_reads_the_sign_and_answers_on_the_display(env, tmp_path: Path, image: str) -> None:
    models, glyphs = env
    display = VirtualDisplay(tmp_path / "display", 480, 640)
    h = host(models, Devices(camera=FileCamera(IMAGES / image), display=display), glyphs, once=True)
    assert h.add(make_app("look"))
    report = h.run(30.0)
    look = report.app_summaries["look"]
    assert look["read"] == [" / ".join(TRUTH[image])]
    assert len(look["answers"]) == 1
    lat = report.metrics["latency_s"]
    assert lat["frame_to_text_s"]["count"] == 1 and lat["frame_to_answer_s"]["count"] == 1
    assert lat["frame_to_answer_s"]["p50"] > lat["frame_to_text_s"]["p50"] > 0
    # the display shows exactly what an independent render of the same paragraphs shows
    ref = CaptionScreen(480, 640, glyphs)
    ref.commit(f"[{look['read'][0]}]", SOURCE)
    ref.commit(look["answers"][0], FINAL)
    expected, _ = ref.render(0.0)
    np.testing.assert_array_equal(display.last, expected)
    frames = json.loads((tmp_path / "display" / "frames.json").read_text())["frames"]
    last = np.asarray(Image.open(tmp_path / "display" / frames[-1]["file"]))
    assert (last[..., 1] > 0).sum() == (expected > 0).sum()  # green where the text is


def test_a_camera_that_disappears_stops_look_and_the_runtime_goes_on(env, tmp_path: Path) -> None:
    models, glyphs = env
    cam_dir = tmp_path / "cam"
    cam_dir.mkdir()
    shutil.copy(IMAGES / "sign_en.png", cam_dir / "a.png")
    clock = VirtualClock()
    h = host(
        models,
        Devices(camera=FileCamera(cam_dir), display=VirtualDisplay(tmp_path / "d", 480, 640)),
        glyphs,
        clock,
    )
    assert h.add(make_app("look"))
    h.sched.every(
        "unplug",
        100.0,
        lambda now: shutil.rmtree(cam_dir) if now > 0 else None,
        realtime=False,
        phase_s=5.0,
    )
    report = h.run(12.0)
    assert report.app_summaries["look"]["camera_lost"]
    assert any("disappeared" in n and "other apps keep running" in n for n in report.notes)
    c = report.metrics["counters"]
    assert c["errors.look.capture"] == 1
    # the display and the governor kept running after the loss, to the end of the run
    for task in ("display", "governor"):
        last = max(s.end for s in h.trace.spans("realtime") if s.name == task)
        assert last >= report.duration_s - 1.0
    assert len(report.app_summaries["look"]["read"]) >= 1


def test_an_app_without_its_model_fails_alone(env, tmp_path: Path) -> None:
    models, glyphs = env
    h = host(models, Devices(camera=FileCamera(IMAGES / "sign_en.png")), glyphs, once=True)
    assert not h.add(make_app("captions"))  # the bundle has no VAD/ASR
    assert h.add(make_app("look"))
    report = h.run(20.0)
    assert "needs a 'vad' model" in report.failures["captions"]
    assert "ocula export vad" in report.failures["captions"]
    assert report.apps == ["look"] and report.app_summaries["look"]["read"]


def test_frames_that_are_not_images_are_skipped_and_counted(env, tmp_path: Path, caplog) -> None:
    models, glyphs = env
    cam = tmp_path / "cam"
    cam.mkdir()
    (cam / "0-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    shutil.copy(IMAGES / "label_mixed.png", cam / "1.png")
    camera = FileCamera(cam)
    h = host(models, Devices(camera=camera), glyphs, once=True)
    assert h.add(make_app("look"))
    report = h.run(20.0)
    assert report.app_summaries["look"]["read"] == [" / ".join(TRUTH["label_mixed.png"])]
    assert camera.bad_frames >= 1 and "0-broken.png" in caplog.text


def test_on_a_board_with_separate_asr_and_llm_cores_each_has_its_worker(
    env, tmp_path: Path
) -> None:
    from board import profiles
    from runtime.apps import AppOptions, Host, Models

    models, glyphs = env
    profile = profiles.find("ar1-ref")
    h = Host(
        profile,
        VirtualClock(),
        Devices(camera=FileCamera(IMAGES / "sign_en.png")),
        glyphs,
        Models.scan(models),
        AppOptions(once=True),
    )
    assert h.pools == ("asr", "llm") and h.threads("asr") == 1 and h.threads("llm") == 1
    assert h.add(make_app("look"))
    report = h.run(30.0)
    assert report.app_summaries["look"]["answers"]
    tracks = {
        (s.name, s.track) for s in h.trace.spans("inference") if s.name in ("look.ocr", "look.llm")
    }
    assert tracks == {("look.ocr", "worker 0"), ("look.llm", "worker 1")}


def test_the_governor_lowers_the_camera_rate_and_says_so(env) -> None:
    models, glyphs = env
    h = host(models, Devices(camera=FileCamera(IMAGES / "sign_en.png")), glyphs)
    look = make_app("look")
    assert h.add(look)
    fps = h.profile.camera.fps
    assert look._capture_task.period_s == pytest.approx(1 / fps)
    h.governor._set(1, 0.0, "average 4.00 W > budget 3.00 W", down=True)
    assert look._capture_task.period_s == pytest.approx(2 / fps)
    event = h.trace.instants("governor")[-1]["args"]
    assert event["action"] == "camera rate lowered" and "budget" in event["reason"]

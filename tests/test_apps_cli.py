"""`ocula run`: what a user sees, including every bad input named in the issue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from board.bundle import Bundle
from board.client import Board
from board.flash import flash
from board.keys import load_public_raw
from hil.sim import SimBoard
from hil.transport import open_port
from tests.apps_helpers import models_dir
from tests.artifacts import apps_bundle
from tests.conftest import run_ocula

IMAGES = Path(__file__).parent / "data" / "images"
SPEECH = Path(__file__).parent / "data" / "speech_padded.wav"
TRUTH = json.loads((IMAGES / "images.json").read_text())


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return models_dir(tmp_path_factory.mktemp("cli") / "models", ("llm", "vision"))


def test_run_look_locally_prints_counters_and_writes_the_trace(
    models: Path, tmp_path: Path
) -> None:
    r = run_ocula(
        "run", "look", "--port", "local", "--models", str(models), "--camera", str(IMAGES / "sign_en.png"),
        "--display", str(tmp_path / "d"), "--trace", str(tmp_path / "t.json"), "--once", "--virtual",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert " / ".join(TRUTH["sign_en.png"]) in r.out
    assert "late.display" in r.out and "frame_to_answer_s" in r.out and "p90" in r.out
    trace = json.loads((tmp_path / "t.json").read_text())
    names = {e["name"] for e in trace["traceEvents"]}
    assert {"look.ocr", "display", "camera frame"} <= names
    assert (tmp_path / "d" / "preview.png").is_file()


def test_host_devices_are_refused_for_a_board_and_a_missing_port_is_named(
    models: Path, tmp_path: Path
) -> None:
    r = run_ocula("run", "look", "--port", "/dev/ttyACM7", "--models", str(models))
    assert r.code == 2 and "--models" in r.err and "--port local" in r.err
    assert "Traceback" not in r.err
    r = run_ocula("run", "look", "--port", str(tmp_path / "ttyNOPE"), "--duration", "1")
    assert r.code == 1 and "ttyNOPE" in r.err and "Traceback" not in r.err


def test_run_on_a_sim_board_over_a_pty(tmp_path: Path) -> None:
    """The board's agent runs the app with its installed models; the host prints the board's
    counters and percentiles and fetches its trace."""
    bundle, pub = apps_bundle("sim")
    with SimBoard("runner", base=tmp_path, key=load_public_raw(pub)) as board:
        # the factory image has no models: the board says which one the app needs
        r = run_ocula("run", "look", "--port", board.port, "--duration", "2", timeout=120)
        assert r.code == 1 and "did not run look" in r.err and "needs a 'vision' model" in r.err
        assert "Traceback" not in r.err
        client = Board(lambda: open_port(board.port), name=board.port)
        try:
            client.reconnect(30)
            assert flash(Bundle.open(bundle), client, reboot_timeout=60).ok
        finally:
            client.close()
        trace_file = tmp_path / "board-trace.json"
        r = run_ocula(
            "run", "look", "--port", board.port, "--duration", "3", "--once",
            "--trace", str(trace_file), "--json", timeout=180,
        )  # fmt: skip
        assert r.code == 0, r.err
        report = json.loads(r.out)
        counters = report["metrics"]["counters"]
        assert counters["ticks.display"] >= 1
        assert "tick_delay.display" in report["metrics"]["latency_s"]
        assert any("ran on board sim" in n for n in report["notes"])
        assert any("synthetic pattern camera" in n for n in report["notes"])
        trace = json.loads(trace_file.read_text())
        assert trace["otherData"]["app"] == "look" and trace["otherData"]["origin_monotonic_s"] > 0
        spans = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
        assert sum(e["name"] == "display" for e in spans) == counters["ticks.display"]
        # the options travel with the request: the board's app refuses a language it lacks
        r = run_ocula(
            "run", "look", "--port", board.port, "--target-lang", "xx", "--duration", "1",
            timeout=120,
        )  # fmt: skip
        assert r.code == 1 and "language 'xx' is not known" in r.err
        # --audio: the clip is injected as the board's microphone, so the ASR hears real speech
        r = run_ocula(
            "run", "captions", "--port", board.port, "--audio", str(SPEECH), "--duration", "9",
            "--json", timeout=180,
        )  # fmt: skip
        assert r.code == 0, r.err
        report = json.loads(r.out)
        assert any("injected clip" in n for n in report["notes"])
        assert report["metrics"]["counters"]["audio.dropped_samples"] == 0
        assert "speech_end_to_caption_s" in report["metrics"]["latency_s"]
        # --camera: an injected image stands in for the camera; the board reads its text
        r = run_ocula(
            "run", "look", "--port", board.port, "--camera", str(IMAGES / "sign_en.png"),
            "--once", "--duration", "20", "--json", timeout=180,
        )  # fmt: skip
        assert r.code == 0, r.err
        report = json.loads(r.out)
        assert any("injected image" in n for n in report["notes"])
        read = json.dumps(report["app_summaries"]["look"], ensure_ascii=False)
        assert all(line in read for line in TRUTH["sign_en.png"]), read
        # a file that is not a WAV is refused before anything is sent
        r = run_ocula("run", "captions", "--port", board.port, "--audio", str(trace_file))
        assert r.code == 2 and "not a WAV file" in r.err
        r = run_ocula("run", "look", "--port", board.port, "--camera", str(SPEECH))
        assert r.code == 2 and "not a PNG or PPM/PGM image" in r.err


def test_a_bundle_without_the_model_the_app_needs(models: Path) -> None:
    wav = str(Path(__file__).parent / "data" / "speech_short.wav")
    r = run_ocula("run", "captions", "--port", "local", "--models", str(models), "--audio", wav)
    assert r.code == 1
    assert "app 'captions' needs a 'vad' model" in r.err and "ocula export vad" in r.err


def test_a_display_that_cannot_be_opened(models: Path) -> None:
    r = run_ocula(
        "run",
        "look",
        "--port",
        "local",
        "--models",
        str(models),
        "--camera",
        "pattern",
        "--display",
        "fb:/dev/fb9",
    )
    assert r.code == 1 and "/dev/fb9" in r.err and "Traceback" not in r.err


def test_audio_that_is_not_a_wav(models: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    r = run_ocula(
        "run", "captions", "--port", "local", "--models", str(models), "--audio", str(bad)
    )
    assert r.code == 1 and "notes.wav: not a readable PCM WAV" in r.err


def test_a_camera_file_that_is_not_an_image_fails_in_one_line(models: Path, tmp_path: Path) -> None:
    bad = tmp_path / "photo.png"
    bad.write_text("not an image")
    r = run_ocula(
        "run", "look", "--port", "local", "--models", str(models), "--camera", str(bad), "--virtual", "--duration", "3",
    )  # fmt: skip
    assert r.code == 1, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocula: error: camera:")
    assert "photo.png: not an image" in lines[0] and "Traceback" not in r.err

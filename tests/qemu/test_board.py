"""The image boots as a board: the agent answers on the UART as a systemd service, a bundle of
the tiny models flashes over the emulated UART, and the apps run on the kernel's own drivers
(vivid's V4L2 camera, snd-aloop's ALSA loopback, virtio-gpu's framebuffer)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from board.client import Board
from hil.qemu import QemuBoard
from hil.transport import open_port
from tests.artifacts import apps_bundle
from tests.conftest import run_ocula
from tests.qemu.conftest import record

SPEECH = Path(__file__).parent.parent / "data" / "speech_padded.wav"


def _client(board: QemuBoard) -> Board:
    return Board(lambda: open_port(board.port), name=f"qemu://{board.name}", timeout=30)


def test_the_agent_answers_as_a_service_of_the_image(qemu_board: QemuBoard) -> None:
    client = _client(qemu_board)
    try:
        hello, _ = client.request("hello")
        info, _ = client.request("info")
    finally:
        client.close()
    assert hello["board"] == "qemu" and hello["slot"] in ("factory", "a", "b")
    assert info["booted"] == "factory" and info["code"] == "/opt/ocula"  # the image's install
    assert info["free_bytes"] > 100 << 20  # the slot store is its own partition, not the root
    console = qemu_board.console_log.read_text(errors="replace")
    assert "systemd[1]" in console, console[-2000:]  # the kernel logs on hvc0; systemd is init


def test_flash_the_tiny_models_then_run_the_apps_on_real_drivers(qemu_board: QemuBoard) -> None:
    bundle, _ = apps_bundle("qemu")
    t0 = time.monotonic()
    r = run_ocula("flash", str(bundle), "--port", qemu_board.port, "--json", timeout=1800)
    took = time.monotonic() - t0
    assert r.code == 0, r.err
    flashed = json.loads(r.out)
    assert flashed["ok"] and flashed["booted"] in ("a", "b"), flashed
    sent = flashed.get("bytes_sent", bundle.stat().st_size)
    record(figure="flash", bytes=sent, seconds=round(took, 1), load=os.getloadavg()[0])

    r = run_ocula(
        "run", "look", "--port", qemu_board.port, "--once", "--duration", "120", "--json",
        timeout=900,
    )  # fmt: skip
    assert r.code == 0, r.err
    report = json.loads(r.out)
    notes = " | ".join(report["notes"])
    assert "synthetic pattern camera" not in notes and "virtual display stands in" not in notes
    counters = report["metrics"]["counters"]
    assert counters["ticks.display"] >= 1 and counters["jobs.look.capture"] >= 1, counters
    assert "errors.look.capture" not in counters, notes  # vivid's frames came through V4L2
    assert not report["app_summaries"]["look"].get("camera_lost"), report["app_summaries"]
    latency = report["metrics"]["latency_s"]
    record(figure="look", latency_s=latency, load=os.getloadavg()[0])

    r = run_ocula(
        "run", "captions", "--port", qemu_board.port, "--audio", str(SPEECH), "--duration", "30",
        "--json", timeout=900,
    )  # fmt: skip
    assert r.code == 0, r.err
    report = json.loads(r.out)
    notes = " | ".join(report["notes"])
    assert "played into plughw:Loopback" in notes, notes
    counters = report["metrics"]["counters"]
    record(figure="captions", counters=counters, latency_s=report["metrics"]["latency_s"])
    assert counters["audio.samples"] > 16000 * 5, counters  # the clip came through ALSA capture
    assert counters["audio.dropped_samples"] == 0, counters
    assert report["app_summaries"]["captions"]["utterances"] >= 1  # the VAD heard its speech

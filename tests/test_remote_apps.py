"""`translate` online, with the server killed mid-sentence: the caption completes locally.

The remote is llama.cpp's server (SmolLM2 GGUF) behind a loopback proxy that kills the server
process once it has relayed a few tokens of the first answer; the board's own model is Ocula's
SmolLM2 artifact. The app runs in virtual time on the real scheduler with the real devices'
file-backed stand-ins (a WAV microphone, a virtual display). Asserted on what the display
shows: every sentence's translation is on it, in order, and the sentence that was cut keeps
the remote's words and continues them locally without repeating the last one; no audio was
dropped and no display frame was late.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from board import profiles
from runtime.apps import AppOptions, Devices, Host, Models, make_app
from runtime.io import VirtualDisplay, WavSource
from runtime.io.screen import FINAL
from runtime.profile import Remote
from runtime.sched import VirtualClock
from tests.apps_helpers import atlas, models_dir
from tests.artifacts import llm_artifact
from tests.remote_helpers import FaultProxy, llama_server

DATA = Path(__file__).parent / "data"
SPEECH = DATA / "speech_padded.wav"
SEGMENTS = json.loads((DATA / "speech_padded.json").read_text())["segments"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    models = models_dir(root / "models", ("vad", "asr"))
    (models / "llm").symlink_to(llm_artifact("smollm2", "fp32", "fused"))
    return models, atlas(root)


def test_translate_finishes_the_sentence_locally_when_the_server_dies(env, tmp_path: Path):
    models, glyphs = env
    with llama_server() as server, FaultProxy(server.url) as proxy:
        proxy.on_events(3, server.process.kill)
        clock = VirtualClock()
        display = VirtualDisplay(tmp_path / "display", 480, 640)
        # the board profile names the endpoint; budgets wide enough for a loaded test host
        profile = dataclasses.replace(
            profiles.find("sim"), remote=Remote(proxy.url, first_token_s=60.0, stall_s=20.0)
        )
        h = Host(
            profile,
            clock,
            Devices(audio=WavSource(SPEECH, 16000, clock), display=display),
            glyphs,
            Models.scan(models),
            AppOptions(source_lang="en", target_lang="fr", max_tokens=24),
        )
        assert h.add(make_app("translate")), h.failures
        report = h.run(90.0)
    s = report.app_summaries["translate"]
    assert len(s["translations"]) == len(SEGMENTS)
    routes = s["routes"]
    assert routes[0] == "remote->local", routes
    assert all(r == "local" for r in routes[1:]), routes  # the remote stays down
    failed = h.trace.instants("remote failed")
    assert len(failed) == 1
    translated = [e["args"] for e in h.trace.instants("translated")]
    cut = translated[0]
    assert cut["remote_chars"] > 0 and "cut" in cut["switch_reason"], cut
    first = s["translations"][0]
    remote_part, local_part = first[: cut["remote_chars"]], first[cut["remote_chars"] :]
    assert local_part.strip(), "the local model added nothing"
    if remote_part[-1:].isspace() or local_part[:1].isspace():
        assert local_part.split()[0].lower() != remote_part.split()[-1].lower()
    # the caption stream: each translation is its own final paragraph on the display, whole
    shown = [p.text for p in h.screen.paras if p.level == FINAL and p.text]
    assert shown[-len(s["translations"]) :] == s["translations"]
    c = report.metrics["counters"]
    assert c.get("audio.dropped_samples", 0) == 0
    assert c.get("late.display", 0) == 0 and c.get("skipped.display", 0) == 0
    assert c.get("remote.failovers") == 1

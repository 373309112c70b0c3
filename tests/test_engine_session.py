"""The session factory: threads and spinning from the board profile, the optimized-graph cache,
clear errors for unloadable models."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from board import profiles
from runtime.engine.errors import ArtifactError, EngineUsageError
from runtime.engine.session import CACHE_DIR, big_cpus, open_session, session_config
from tests.test_engine_helpers import vad_artifact


@pytest.fixture
def model(tmp_path: Path) -> Path:
    dst = tmp_path / "art" / "vad.onnx"
    dst.parent.mkdir()
    shutil.copyfile(vad_artifact() / "vad.onnx", dst)
    return dst


def _run(session) -> float:  # type: ignore[no-untyped-def]
    x = np.zeros((1, 576), np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    p, _ = session.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
    return float(p.reshape(-1)[0])


def test_threads_and_spinning_follow_the_profile() -> None:
    ar1 = profiles.find("ar1-ref")
    cfg = session_config(ar1)
    assert ar1.power.battery and not cfg.spinning
    assert cfg.threads == len(cfg.cpus) >= 1
    sim = session_config(profiles.find("sim"))
    assert sim.spinning and sim.threads == len(big_cpus(profiles.find("sim")))
    assert set(sim.cpus) <= set(os.sched_getaffinity(0))
    assert session_config(None, threads=3).threads == 3
    with pytest.raises(EngineUsageError, match="threads"):
        session_config(None, threads=0)
    with pytest.raises(EngineUsageError, match="optimization level"):
        session_config(None, optimization="max")


def test_optimized_graph_is_cached_and_invalidated(model: Path) -> None:
    ref = _run(open_session(model, cache=False))
    s1 = open_session(model, identity="a" * 64)
    cached = list((model.parent / CACHE_DIR).glob("vad.*.onnx"))
    assert len(cached) == 1
    assert _run(s1) == pytest.approx(ref, abs=1e-6)
    s2 = open_session(model, identity="a" * 64)  # loads the cached graph
    assert _run(s2) == pytest.approx(ref, abs=1e-6)
    assert list((model.parent / CACHE_DIR).glob("vad.*.onnx")) == cached
    open_session(model, identity="b" * 64)  # a new artifact: new key, the stale entry goes
    again = list((model.parent / CACHE_DIR).glob("vad.*.onnx"))
    assert len(again) == 1 and again != cached


def test_unwritable_folder_is_logged_and_the_session_still_opens(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (model.parent / CACHE_DIR).write_text("not a folder")  # mkdir fails, even as root
    with caplog.at_level(logging.INFO, logger="runtime.engine.session"):
        s = open_session(model)
    assert "not writable" in caplog.text and "not cached" in caplog.text
    assert 0.0 <= _run(s) <= 1.0


def test_a_broken_cached_graph_is_rebuilt(model: Path) -> None:
    open_session(model, identity="c" * 64)
    (cached,) = (model.parent / CACHE_DIR).glob("vad.*.onnx")
    cached.write_bytes(b"garbage")
    assert 0.0 <= _run(open_session(model, identity="c" * 64)) <= 1.0


def test_unloadable_models_are_artifact_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x08\x01garbage that is not a model")
    with pytest.raises(ArtifactError, match="onnxruntime cannot load this model"):
        open_session(bad)
    with pytest.raises(ArtifactError, match="not found"):
        open_session(tmp_path / "missing.onnx")


def test_affinity_is_logged(model: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="runtime.engine.session"):
        open_session(model, profiles.find("sim"), cache=False)
    assert "thread affinity" in caplog.text

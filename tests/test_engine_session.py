"""The session factory: threads and spinning from the board profile, the optimized-graph cache
(outside the artifact folder: nothing writes into one), clear errors for unloadable models."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from board import profiles
from runtime.engine.errors import ArtifactError, EngineUsageError
from runtime.engine.session import big_cpus, open_session, session_config
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


def _files(folder: Path) -> dict[str, int]:
    return {str(f.relative_to(folder)): f.stat().st_size for f in folder.rglob("*")}


def test_optimized_graph_is_cached_outside_the_artifact_and_invalidated(
    model: Path, tmp_path: Path
) -> None:
    art = _files(model.parent)
    cache = tmp_path / "cache"
    ref = _run(open_session(model, cache=False))
    s1 = open_session(model, identity="a" * 64, cache_folder=cache)
    cached = sorted(cache.glob("*.vad.*.onnx"))
    assert len(cached) == 1
    assert _run(s1) == pytest.approx(ref, abs=1e-6)
    s2 = open_session(model, identity="a" * 64, cache_folder=cache)  # loads the cached graph
    assert _run(s2) == pytest.approx(ref, abs=1e-6)
    assert sorted(cache.glob("*.vad.*.onnx")) == cached
    open_session(model, identity="b" * 64, cache_folder=cache)  # new key: the stale entry goes
    again = sorted(cache.glob("*.vad.*.onnx"))
    assert len(again) == 1 and again != cached
    assert _files(model.parent) == art  # the artifact folder is untouched


def test_the_default_cache_follows_the_environment(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCULA_CACHE_DIR", str(tmp_path / "env-cache"))
    open_session(model, identity="d" * 64)
    assert len(list((tmp_path / "env-cache").glob("*.vad.*.onnx"))) == 1
    monkeypatch.setenv("OCULA_CACHE_DIR", "off")
    art = _files(model.parent)
    assert 0.0 <= _run(open_session(model, identity="e" * 64)) <= 1.0
    assert _files(model.parent) == art
    with pytest.raises(EngineUsageError, match="cannot be the model's own folder"):
        open_session(model, cache_folder=model.parent)


def test_unwritable_cache_is_logged_and_the_session_still_opens(
    model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")  # mkdir fails under it, even as root
    with caplog.at_level(logging.INFO, logger="runtime.engine.session"):
        s = open_session(model, cache_folder=blocker / "cache")
    assert "not writable" in caplog.text and "not cached" in caplog.text
    assert 0.0 <= _run(s) <= 1.0


def test_a_broken_cached_graph_is_rebuilt(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    open_session(model, identity="c" * 64, cache_folder=cache)
    (cached,) = cache.glob("*.vad.*.onnx")
    cached.write_bytes(b"garbage")
    assert 0.0 <= _run(open_session(model, identity="c" * 64, cache_folder=cache)) <= 1.0


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

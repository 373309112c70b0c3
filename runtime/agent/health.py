"""The health check a board runs when it boots a slot on trial.

Three steps, each one reason to roll back: the slot is complete; every file matches the sha256
in its bundle manifest; each artifact passes a short inference. The inference step is
pluggable (`check_slot(..., inference=)`); by default it is `engine_check`: the artifact's
manifest must load (runtime.manifest), then the VAD scores one frame of silence, the ASR
transcribes one second of silence, the OCR reads a blank image and the LLM generates one token,
through the engines; a kind without a check here loads every ONNX graph
into an onnxruntime session (which parses and checks it) and says "loaded", not "inferred"; so
does an artifact whose graphs are not the ones its engine runs (a probe model in a HIL suite).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.agent.store import Store

__all__ = ["InferenceCheck", "check_slot", "engine_check"]

log = logging.getLogger(__name__)

InferenceCheck = Callable[[str, Path], str]


def engine_check(kind: str, folder: Path) -> str:
    """One short inference per artifact kind through the engines (see the module docstring)."""
    from runtime.manifest import load_manifest

    manifest = load_manifest(folder, verify_files=False)  # hashes were checked just before
    graphs = set(manifest.graphs)
    start = time.perf_counter()
    if kind == "vad" and "vad" in graphs:
        import numpy as np

        from runtime.engine.vad import Vad

        p = Vad.from_artifact(folder, verify=False).probability(np.zeros(512, np.float32))
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"speech probability {p} is not in [0, 1]")
        return f"vad: p(speech) of silence {p:.3f} in {time.perf_counter() - start:.2f} s"
    if kind == "llm":
        from runtime.engine.llm.generator import GenerationConfig, Llm

        llm = Llm.from_artifact(folder, verify=False)
        token = llm.start("Hello", GenerationConfig(max_new_tokens=1)).step()
        return f"llm: generated token {token} in {time.perf_counter() - start:.2f} s"
    if kind == "asr" and manifest.asr is not None:
        import numpy as np

        from runtime.engine.asr import Whisper

        asr = Whisper.from_artifact(folder, verify=False)
        text = asr.transcribe(np.zeros(16000, np.float32), rate=16000, max_new_tokens=4).text
        return f"asr: 1 s of silence -> {len(text)} chars in {time.perf_counter() - start:.2f} s"
    if kind == "vision" and {"det", "rec"} <= graphs:
        import numpy as np

        from runtime.engine.vision import Ocr

        boxes = Ocr.from_artifact(folder).read(np.full((64, 64, 3), 255, np.uint8))
        return f"vision: blank image -> {len(boxes)} boxes in {time.perf_counter() - start:.2f} s"
    return _load_onnx(kind, folder)


def _load_onnx(kind: str, folder: Path) -> str:
    models = sorted(folder.rglob("*.onnx"))
    if not models:
        return f"{kind}: no ONNX model to load"
    import onnxruntime

    for model in models:
        onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return f"{kind}: loaded {len(models)} model(s) (no engine self-test in this runtime)"


def check_slot(store: Store, slot: str, inference: InferenceCheck | None = None) -> dict[str, Any]:
    """Run the health check of `slot`; the result says ok and, if not, why."""
    start = time.perf_counter()
    manifest = store.slot_manifest(slot)
    if manifest is None:
        return {"ok": False, "reason": f"slot {slot} is incomplete", "seconds": 0.0}
    bad = store.verify_slot(slot)
    if bad:
        return {
            "ok": False,
            "reason": f"{len(bad)} file(s) do not match the manifest, first {bad[0]}",
            "seconds": time.perf_counter() - start,
        }
    results: dict[str, str] = {}
    check = inference or engine_check
    base = store.slot_dir(slot)
    for kind, folder in sorted(manifest.artifacts.items()):
        path = base / folder
        try:
            results[kind] = check(kind, path)
        except Exception as exc:  # any failure of a model is a failed health check
            log.warning("health check of %s failed: %s", kind, exc)
            return {
                "ok": False,
                "reason": f"{kind} artifact failed its inference check: {type(exc).__name__}: "
                f"{str(exc)[:300]}",
                "inference": results,
                "seconds": time.perf_counter() - start,
            }
    return {
        "ok": True,
        "reason": "",
        "hashes": f"{len(manifest.files)} files match",
        "inference": results,
        "seconds": time.perf_counter() - start,
    }

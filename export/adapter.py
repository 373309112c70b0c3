"""Fine-tuned checkpoints: a PEFT LoRA adapter merged into the weights before export.

    model, folder, facts = merge_lora(model, hf_dir, Path("my-adapter"), work)

The adapter folder is what PEFT saves (`adapter_config.json` + `adapter_model.safetensors` or
`.bin`). It is checked against the base before anything is merged: a LoRA adapter (other PEFT
kinds are refused by name), trained on the same architecture, whose target modules exist in the
base. `merge_and_unload()` folds `B @ A * alpha / r` into each target weight, so the exported
graph is the plain architecture with the fine-tuned weights: nothing changes on the device. The
merged model is saved as a Hugging Face folder (with the base's tokenizer) for the graph
builders, and validation compares the artifact with this merged PyTorch model. The manifest
records the adapter's hash, rank, alpha and targets (`extra.adapter`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from export.errors import ExportError

__all__ = ["adapter_digest", "check_adapter", "merge_lora"]

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1 << 20
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_digest(folder: Path) -> str:
    """sha256 over the adapter's config and weight files (names and bytes)."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", *WEIGHT_FILES):
        f = folder / name
        if f.is_file():
            h.update(name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def check_adapter(folder: Path) -> dict[str, Any]:
    """The adapter's config, checked before the (slow) base model is loaded."""
    return _config(folder)


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    if not folder.is_dir():
        raise ExportError(f"--adapter {folder}: not a folder; give the folder PEFT saved")
    if not path.is_file():
        raise ExportError(
            f"--adapter {folder}: no adapter_config.json; give the folder that PEFT's "
            "save_pretrained() wrote"
        )
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ExportError(f"{path}: over {MAX_CONFIG_BYTES} bytes; not an adapter config")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ExportError(f"{path}: expected a JSON object")
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        raise ExportError(
            f"{path}: a {cfg.get('peft_type')!r} adapter; only LoRA adapters can be merged"
        )
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise ExportError(f"--adapter {folder}: no {' or '.join(WEIGHT_FILES)}")
    return cfg


def merge_lora(
    model: Any, hf_dir: Path, folder: Path, work: Path
) -> tuple[Any, Path, dict[str, Any]]:
    """(merged model, Hugging Face folder of it, facts for the manifest)."""
    cfg = _config(folder)
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ExportError(
            f"--adapter {folder}: targets {', '.join(missing)} are not modules of this "
            f"{model.config.model_type} model; was it trained on another base?"
        )
    try:
        from peft import PeftModel
    except ImportError as exc:  # pragma: no cover - installed with the export extra
        raise ExportError("merging an adapter needs peft: pip install peft") from exc
    try:
        merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"--adapter {folder}: cannot apply it to this model: {first}") from exc
    out = work / "merged"
    merged.save_pretrained(out, safe_serialization=True)
    for f in hf_dir.iterdir():
        if f.is_file() and (
            f.name.startswith(("tokenizer", "special_tokens"))
            or f.name
            in ("generation_config.json", "chat_template.jinja", "vocab.json", "merges.txt")
        ):
            shutil.copy2(f, out / f.name)
    facts = {
        "sha256": adapter_digest(folder),
        "path": str(folder),
        "rank": cfg.get("r"),
        "alpha": cfg.get("lora_alpha"),
        "targets": sorted(targets),
        "base": cfg.get("base_model_name_or_path") or "",
    }
    log.info("merged LoRA adapter %s (r=%s) into the weights", folder, facts["rank"])
    return merged.eval(), out, facts

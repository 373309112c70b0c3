"""Resolve and load a SOURCE: a Hugging Face folder, a CTranslate2 (faster-whisper) folder, a
GGUF file, or a hub id (online only).

Every way a source can be wrong is checked here, before minutes of export, and reported in one
line: missing path, folder without config.json, unsupported architecture (with the list of
supported ones), the wrong kind of model for the command, truncated or corrupt safetensors or
GGUF. `load` returns the PyTorch model in float32 and a Hugging Face folder (the source folder
itself, or for a GGUF file a folder written from it) that tokenizer and fused builder read; a
GGUF's own tokenizer metadata wins over transformers' converted defaults (`gguf_tokenizer`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export import ctranslate2
from export.errors import ExportError

log = logging.getLogger(__name__)

LLM_ARCHITECTURES = ("qwen2", "qwen3", "llama")
ASR_ARCHITECTURES = ("whisper",)
GGUF_MAGIC = b"GGUF"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass
class Source:
    spec: str  # what the user typed
    kind: str  # hf | ct2 | gguf | hub
    path: Path | None  # folder or file
    model_type: str
    config: dict[str, Any]
    sha256: str | None = None  # of a GGUF file or a CTranslate2 model.bin
    revision: str | None = None


def resolve(spec: str, want: str) -> Source:
    """Check SOURCE without loading weights; `want` is "llm" or "asr"."""
    p = Path(spec).expanduser()
    if p.is_dir() and ctranslate2.is_ct2_folder(p):
        spec_name = ctranslate2.peek_spec(p / ctranslate2.MODEL_FILE)
        arch = ctranslate2.SPEC_ARCHITECTURES.get(spec_name, spec_name or "unknown")
        src = Source(spec, "ct2", p, arch, {}, sha256=_sha256(p / ctranslate2.MODEL_FILE))
    elif p.is_dir():
        cfg_path = p / "config.json"
        if not cfg_path.is_file():
            raise ExportError(
                f"{p}: no config.json; SOURCE must be a Hugging Face model folder, a .gguf "
                "file or a hub id"
            )
        try:
            config = json.loads(cfg_path.read_text())
        except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8 or JSON
            raise ExportError(f"{cfg_path}: not valid JSON ({e})") from e
        if not isinstance(config, dict):
            raise ExportError(f"{cfg_path}: not a model config (a JSON object); re-download it")
        src = Source(spec, "hf", p, str(config.get("model_type", "")), config)
        _check_safetensors(p)
    elif p.is_file():
        if not _is_gguf(p):
            raise ExportError(
                f"{p}: not a GGUF file (no GGUF magic); SOURCE must be a Hugging Face folder, "
                "a .gguf file or a hub id"
            )
        arch = _gguf_architecture(p)
        src = Source(spec, "gguf", p, arch, {}, sha256=_sha256(p))
    elif HUB_ID.fullmatch(spec) and not spec.endswith((".gguf", ".safetensors", ".json")):
        src = _hub(spec)
    else:
        raise ExportError(f"{spec}: no such file or folder")
    _check_kind(src, want)
    return src


def _check_kind(src: Source, want: str) -> None:
    mt = src.model_type
    supported = LLM_ARCHITECTURES if want == "llm" else ASR_ARCHITECTURES
    if mt in supported:
        return
    other = "asr" if want == "llm" else "llm"
    if mt in (ASR_ARCHITECTURES if want == "llm" else LLM_ARCHITECTURES):
        raise ExportError(
            f"{src.spec}: is a {mt} model ({other}); use 'ocula export {other}' for it"
        )
    raise ExportError(
        f"{src.spec}: architecture {mt or 'unknown'!r} is not supported by 'ocula export "
        f"{want}'; supported: {', '.join(supported)}"
    )


def _check_safetensors(folder: Path) -> None:
    """Catch truncated or corrupt safetensors before transformers prints a traceback."""
    for f in sorted(folder.glob("*.safetensors")):
        size = f.stat().st_size
        try:
            with open(f, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise ValueError("shorter than its header")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8 or n > 100 << 20:
                    raise ValueError("header length beyond the file")
                header = json.loads(fh.read(n))
            end = _safetensors_end(header)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ExportError(f"{f}: corrupt safetensors file ({e}); re-download it") from e
        if 8 + n + end > size:
            raise ExportError(
                f"{f}: truncated safetensors file ({size} bytes, the header needs "
                f"{8 + n + end}); re-download it"
            )


def _safetensors_end(header: object) -> int:
    """The end of the last tensor's data, from a header that is checked to be one."""
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    end = 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        offsets = v.get("data_offsets") if isinstance(v, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and o >= 0 for o in offsets)
        ):
            raise ValueError(f"tensor {str(k)[:60]!r} has no valid data_offsets")
        end = max(end, offsets[1])
    return end


def _is_gguf(p: Path) -> bool:
    with open(p, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def _gguf_architecture(p: Path) -> str:
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(p))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except Exception as e:  # gguf raises plain exceptions on a cut file
        raise ExportError(f"{p}: corrupt or truncated GGUF file ({e}); re-download it") from e
    return {"qwen2": "qwen2", "qwen3": "qwen3", "llama": "llama"}.get(arch, arch)


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub(spec: str) -> Source:
    if not _online():
        raise ExportError(
            f"{spec}: no such file or folder here, and the hub (huggingface.co) is not "
            "reachable to fetch it as a hub id; give a local folder or .gguf file"
        )
    try:
        from huggingface_hub import hf_hub_download

        cfg_path = hf_hub_download(spec, "config.json")
    except Exception as e:
        raise ExportError(
            f"{spec}: not a local file or folder, and the hub is not reachable ({type(e).__name__}); "
            "give a local folder or .gguf file"
        ) from e
    config = json.loads(Path(cfg_path).read_text())
    return Source(spec, "hub", None, str(config.get("model_type", "")), config)


def load_llm(src: Source, work: Path) -> tuple[Any, Path]:
    """The float32 PyTorch model and a Hugging Face folder holding its config and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        if src.kind == "gguf":
            assert src.path is not None
            model = AutoModelForCausalLM.from_pretrained(
                str(src.path.parent), gguf_file=src.path.name, dtype=torch.float32
            )
            folder = work / "hf"
            model.save_pretrained(folder, safe_serialization=True)
            gguf_tokenizer_files(src.path, folder)
            if model.generation_config is not None:
                model.generation_config.save_pretrained(folder)
        else:
            where = str(src.path) if src.path else src.spec
            model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
            folder = src.path if src.path else Path(snapshot(src.spec))
    except ExportError:
        raise
    except (OSError, ValueError, RuntimeError) as e:
        raise ExportError(f"{src.spec}: cannot load the model: {first_line(e)}") from e
    return model.eval(), folder


def gguf_tokenizer_files(gguf: Path, folder: Path) -> None:
    """The GGUF's tokenizer as Hugging Face files in `folder`: transformers' conversion, then
    the file's own metadata over its defaults (`gguf_tokenizer.fix`)."""
    from transformers import AutoTokenizer

    from export import gguf_tokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(folder)
    gguf_tokenizer.fix(folder, gguf)


def snapshot(spec: str) -> str:
    """A hub id's local folder, downloaded when not cached (needs the network once)."""
    from huggingface_hub import snapshot_download

    return str(snapshot_download(spec))


def first_line(e: BaseException) -> str:
    """An exception's first line, for a one-line error that names the cause."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__

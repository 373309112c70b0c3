"""The artifact manifest: what an artifact folder holds and what the runtime needs to run it.

An artifact is a folder: `manifest.json`, the ONNX graph(s) (with external data where large),
tokenizer files and small side files (a Whisper mel filter bank as `.npy`). The manifest is
JSON, written by `export/` and read on the device with nothing but the stdlib:

    {
      "format": "ocula-artifact", "schema_version": 1, "kind": "llm" | "asr" | "vad" | "vision",
      "name": ..., "created_by": "ocula 0.1.0",
      "source": {"id", "format": hf|gguf|hub|random|packaged, "revision", "sha256"},
      "files": [{"path", "sha256", "size", "role"}],          every file of the artifact
      "graphs": {ROLE: {"file", "inputs", "outputs", "quantization": {...}, "extra"}},
      "tokenizer": {"files", "chat_template", "special_tokens"} | null,
      "llm": {...} | null, "asr": {...} | null,                 the model facts per kind
      "validation": {"passed", "metrics", "thresholds", ...} | null,
      "extra": {}                                               free-form, for packaged models
    }

Rules it keeps:
- Written by `Manifest.write(dir)` (temp file + rename), read by `load_manifest(dir)`, which
  validates every field's type, refuses unknown keys (a typo is an error, not a silent default),
  refuses a schema version newer than this runtime knows, refuses file paths that leave the
  folder, and (by default) checks the size and sha256 of every listed file, so a corrupt or
  truncated flash is caught before a session opens.
- The file is not trusted before it is parsed: at most MAX_MANIFEST_BYTES, nested at most
  `runtime.textlimits.MAX_DEPTH` deep, numbers of at most MAX_DIGITS digits, finite floats,
  integers within MAX_INT; a listed path that is missing, a folder, or runs through a file
  is a ManifestError like any other.
- The runtime never hard-codes a model fact: token ids, layers, KV layout, mel constants and
  graph input/output names come from here.
- `extra` dicts (top level, per graph, per kind) carry builder-specific facts without a schema
  change; anything the runtime relies on gets a named field and a version bump.
- Quantization is recorded per graph file as it really is: the scheme asked for and the counted
  quantized operators per op type, plus the float MatMul/Gemm left over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.errors import OculaError
from runtime.textlimits import loads_json, read_limited

__all__ = [
    "FORMAT",
    "KINDS",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "AsrInfo",
    "FileEntry",
    "Graph",
    "KvLayout",
    "LlmInfo",
    "Manifest",
    "ManifestError",
    "Quantization",
    "Source",
    "TokenizerInfo",
    "Validation",
    "file_entry",
    "load_manifest",
    "parse_manifest",
    "sha256_file",
]

SCHEMA_VERSION = 1
FORMAT = "ocula-artifact"
MANIFEST_NAME = "manifest.json"
KINDS = ("llm", "asr", "vad", "vision")
GRAPH_KINDS = ("optimum", "fused")
MAX_MANIFEST_BYTES = 4 << 20  # a manifest is a few kB; its tokenizer files are separate
MAX_INT = 2**53  # integers JSON readers everywhere agree on


class ManifestError(OculaError):
    """A manifest is missing, unreadable, fails its schema, or its files do not match it."""


@dataclass
class Source:
    """Where the weights came from: a hub id, a folder, a GGUF file, a random preset."""

    id: str
    format: str  # hf | gguf | hub | random | packaged
    revision: str | None = None
    sha256: str | None = None  # of a single source file (GGUF, packaged ONNX)


@dataclass
class FileEntry:
    """One file of the artifact, relative to the folder, with its size and sha256."""

    path: str
    sha256: str
    size: int
    role: str = "data"  # model | weights | tokenizer | mel_filters | data


@dataclass
class Quantization:
    """What one graph file's weights really are.

    `ops` counts the quantized operators by type (MatMulNBits, GatherBlockQuantized,
    MatMulInteger, DynamicQuantizeLinear, ...); `float_ops` counts the MatMul/Gemm still in
    float, so "int4" with a float lm_head is visible.
    """

    scheme: str  # fp32 | fp16 | int8 | int4 | int8-dynamic
    bits: int | None = None
    block_size: int | None = None
    symmetric: bool | None = None
    accuracy_level: int | None = None
    embed_bits: int | None = None  # bits of the embedding table (and a tied head sharing it)
    ops: dict[str, int] = field(default_factory=dict)
    float_ops: dict[str, int] = field(default_factory=dict)
    weights_dtype: str = "float32"  # dtype of the float weights that remain
    # From a GGUF: its block types, the weights kept exactly as the file's blocks and those
    # re-quantized, by name, with the reason ({"file_types", "exact", "requantized"}).
    source_blocks: dict[str, Any] | None = None


@dataclass
class Graph:
    """One ONNX graph: its file (relative path) and interface."""

    file: str
    inputs: list[str]
    outputs: list[str]
    quantization: Quantization
    external_data: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class KvLayout:
    """How the KV cache enters and leaves an LLM graph.

    `shape` is a template of ints and symbols: ["batch", "kv_heads", "past", "head_dim"] with
    symbols resolved from `LlmInfo` (kv_heads, head_dim, max_length) or left dynamic ("batch",
    "past"). `past`/`present` are name templates with `{layer}` and `{kind}` (key|value).
    `shared_buffer`: the graph takes a buffer of max_length and writes the present into the same
    buffer (fused, GroupQueryAttention); otherwise present = past + new positions (optimum).
    """

    shape: list[int | str]
    dtype: str
    past: str
    present: str
    shared_buffer: bool
    kinds: list[str] = field(default_factory=lambda: ["key", "value"])


@dataclass
class LlmInfo:
    architecture: str  # Hugging Face model_type: qwen2 | qwen3 | llama
    graph_kind: str  # optimum | fused
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_length: int
    eos_token_ids: list[int]
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    kv: KvLayout | None = None
    input_ids: str = "input_ids"
    attention_mask: str | None = "attention_mask"
    position_ids: str | None = "position_ids"
    logits: str = "logits"
    tie_word_embeddings: bool = False
    rope_theta: float | None = None
    rope_scaling: dict[str, Any] | None = None
    intermediate_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kv_head_dim(self) -> int:
        """Elements per head in the KV cache: `head_dim`, or the padded head size a fused
        graph's attention runs (the KV layout's last axis, when it is a number)."""
        last = self.kv.shape[-1] if self.kv is not None and self.kv.shape else None
        return last if isinstance(last, int) else self.head_dim


@dataclass
class AsrInfo:
    """Whisper-family facts: graph shapes, feature extraction constants and token ids."""

    architecture: str  # whisper
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    d_model: int
    head_dim: int
    vocab_size: int
    n_mels: int
    sample_rate: int
    n_fft: int
    hop_length: int
    chunk_length_s: int
    n_samples: int
    n_frames: int
    mel_filters: str  # relative path of a float32 .npy [n_mels, n_fft // 2 + 1]
    max_target_positions: int
    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int | None
    sot_token_id: int
    transcribe_token_id: int | None
    translate_token_id: int | None
    no_timestamps_token_id: int | None
    no_speech_token_id: int | None
    language_token_ids: dict[str, int]
    suppress_tokens: list[int]
    begin_suppress_tokens: list[int]
    decoder_layout: str  # how the decoder graphs split the work, see export/asr.py
    forced_decoder_ids: list[list[int]] = field(default_factory=list)
    # False for English-only models (`*.en`): no language or task token, the prompt is
    # start-of-transcript (+ no-timestamps), and `language` is the one language they know.
    multilingual: bool = True
    language: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenizerInfo:
    files: list[str]
    chat_template: str | None = None
    special_tokens: dict[str, int] = field(default_factory=dict)


@dataclass
class Validation:
    """Parity of the artifact against its PyTorch source, as measured at export."""

    passed: bool
    reference: str  # e.g. "transformers 4.57.1 torch 2.13 fp32"
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    driver: str = ""  # what ran the artifact (the runtime engine or export's own loop)
    seconds: float | None = None


@dataclass
class Manifest:
    kind: str
    name: str
    source: Source
    files: list[FileEntry]
    graphs: dict[str, Graph]
    tokenizer: TokenizerInfo | None = None
    llm: LlmInfo | None = None
    asr: AsrInfo | None = None
    validation: Validation | None = None
    created_by: str = "ocula"
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT

    # -- writing -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # format and version first, for a person reading the file
        head = {"format": d.pop("format"), "schema_version": d.pop("schema_version")}
        return {**head, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def write(self, directory: Path | str) -> Path:
        """Validate, then write `manifest.json` into `directory` atomically."""
        self.check()
        directory = Path(directory)
        target = directory / MANIFEST_NAME
        fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != FORMAT:
            raise ManifestError(
                f"{where}: 'format' is {fmt!r}, expected {FORMAT!r}: not an Ocula artifact manifest"
            )
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ManifestError(f"{where}: 'schema_version' must be a positive integer")
        if version > SCHEMA_VERSION:
            raise ManifestError(
                f"{where}: schema version {version} is newer than this runtime knows "
                f"({SCHEMA_VERSION}); update the runtime or re-export with a matching Ocula"
            )
        m = _build(cls, data, where)
        assert isinstance(m, Manifest)
        m.check(where)
        return m

    def check(self, where: str = MANIFEST_NAME) -> None:
        """Cross-field rules the types alone do not express."""
        if self.kind not in KINDS:
            raise ManifestError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        listed = set()
        for f in self.files:
            _safe_relpath(f.path, where)
            if f.path in listed:
                raise ManifestError(f"{where}: file {f.path!r} is listed twice")
            if len(f.sha256) != 64 or any(c not in "0123456789abcdef" for c in f.sha256):
                raise ManifestError(f"{where}: file {f.path!r} has a malformed sha256")
            if f.size < 0:
                raise ManifestError(f"{where}: file {f.path!r} has a negative size")
            listed.add(f.path)
        needed: list[tuple[str, str]] = []
        for role, g in self.graphs.items():
            needed.append((f"graphs.{role}.file", g.file))
            needed += [(f"graphs.{role}.external_data", p) for p in g.external_data]
        if self.tokenizer is not None:
            needed += [("tokenizer.files", p) for p in self.tokenizer.files]
        if self.asr is not None:
            needed.append(("asr.mel_filters", self.asr.mel_filters))
        for key, path in needed:
            if path not in listed:
                raise ManifestError(f"{where}: {key} names {path!r}, which is not in 'files'")
        if self.kind == "llm":
            if self.llm is None:
                raise ManifestError(f"{where}: kind 'llm' needs an 'llm' section")
            if self.llm.graph_kind not in GRAPH_KINDS:
                raise ManifestError(
                    f"{where}: llm.graph_kind {self.llm.graph_kind!r} is not one of "
                    f"{', '.join(GRAPH_KINDS)}"
                )
            if self.llm.kv is None:
                raise ManifestError(f"{where}: an llm needs llm.kv (the KV cache layout)")
            if "decoder" not in self.graphs:
                raise ManifestError(f"{where}: an llm needs a graph named 'decoder'")
        if self.kind == "asr" and self.asr is None:
            raise ManifestError(f"{where}: kind 'asr' needs an 'asr' section")

    # -- helpers -----------------------------------------------------------------------------

    def file(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise ManifestError(f"{MANIFEST_NAME}: no file {path!r} in the artifact")

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(directory: Path | str, relpath: str, role: str = "data") -> FileEntry:
    """Hash one file of an artifact being written."""
    p = Path(directory) / relpath
    return FileEntry(path=relpath, sha256=sha256_file(p), size=p.stat().st_size, role=role)


def load_manifest(directory: Path | str, verify_files: bool = True) -> Manifest:
    """Read and validate `DIR/manifest.json`; with `verify_files`, check every file's size and
    sha256 (reads the whole artifact once)."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"{directory}: no such artifact folder")
    try:
        raw = read_limited(
            path,
            MAX_MANIFEST_BYTES,
            f"a manifest (MAX_MANIFEST_BYTES, {MAX_MANIFEST_BYTES >> 20} MiB)",
            ManifestError,
            "re-export the artifact",
        )
    except FileNotFoundError:
        raise ManifestError(
            f"{directory}: no {MANIFEST_NAME}; this folder is not an Ocula artifact "
            "(make one with 'ocula export')"
        ) from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read: {e.strerror or e}") from e
    m = parse_manifest(raw, str(path))
    if verify_files:
        verify(m, directory)
    return m


def parse_manifest(raw: bytes, where: str = MANIFEST_NAME) -> Manifest:
    """Validate manifest bytes: size, nesting, number sizes (runtime.textlimits), then the
    schema; every problem is a ManifestError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{where}: not UTF-8 text ({e}); re-export the artifact") from e
    data = loads_json(text, where, _bad_json, max_bytes=MAX_MANIFEST_BYTES)
    return Manifest.from_dict(data, where)


def _bad_json(message: str) -> ManifestError:
    return ManifestError(f"{message}; re-export the artifact")


def verify(m: Manifest, directory: Path) -> None:
    """Check that every listed file exists with the recorded size and sha256."""
    for f in m.files:
        p = directory / f.path
        try:
            size = p.stat().st_size if p.is_file() else -1
        except OSError:  # a path through a file, a loop of links, no permission
            size = -1
        if size < 0:
            raise ManifestError(
                f"{directory}: {f.path} is listed in the manifest but missing (or not a file); "
                "re-flash or re-export the artifact"
            )
        if size != f.size:
            raise ManifestError(
                f"{directory}: {f.path} is {size} bytes, the manifest says {f.size} "
                "(truncated or replaced); re-flash or re-export the artifact"
            )
        try:
            digest = sha256_file(p)
        except OSError as e:
            raise ManifestError(f"{directory}: {f.path}: cannot read: {e.strerror or e}") from e
        if digest != f.sha256:
            raise ManifestError(
                f"{directory}: {f.path} does not match its sha256 in the manifest (corrupt); "
                "re-flash or re-export the artifact"
            )


def _safe_relpath(path: str, where: str) -> None:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path:
        raise ManifestError(f"{where}: file path {path!r} must be relative and inside the artifact")


# -- a small typed reader: JSON -> dataclasses, with the key path in every error --------------


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a schema class (resolving them compiles; done once)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _build(cls: type[Any], data: Any, where: str, key: str = "") -> Any:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: {key or 'top level'}: expected an object")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ManifestError(
            f"{where}: {key + ': ' if key else ''}unknown key(s) {', '.join(unknown)}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = f"{key}.{name}" if key else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ManifestError(f"{where}: missing required key {sub!r}")
            continue
        kwargs[name] = _value(hints[name], data[name], where, sub)
    return cls(**kwargs)


def _value(tp: Any, v: Any, where: str, key: str) -> Any:
    if tp is Any:
        return v
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:
            return _value(real[0], v, where, key)
        for a in real:
            try:
                return _value(a, v, where, key)
            except ManifestError:
                pass
        names = " or ".join(_name(a) for a in args)
        raise ManifestError(f"{where}: {key}: expected {names}, got {_json_type(v)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(v, list):
            raise ManifestError(f"{where}: {key}: expected a list, got {_json_type(v)}")
        return [_value(item, x, where, f"{key}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(v, dict):
            raise ManifestError(f"{where}: {key}: expected an object, got {_json_type(v)}")
        return {str(k): _value(item, x, where, f"{key}.{k}") for k, x in v.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, v, where, key)
    ok = {
        bool: isinstance(v, bool),
        int: isinstance(v, int) and not isinstance(v, bool),
        float: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: isinstance(v, str),
    }.get(tp, False)
    if ok and tp is int and abs(v) > MAX_INT:
        raise ManifestError(
            f"{where}: {key}: {v} is larger than the limit ({MAX_INT}); re-export the artifact"
        )
    if ok:
        return float(v) if tp is float else v
    raise ManifestError(f"{where}: {key}: expected {_name(tp)}, got {_json_type(v)}")


def _name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    return {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(v), type(v).__name__)

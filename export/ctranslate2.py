"""CTranslate2 / faster-whisper model folders as an ASR source: `model.bin` -> Hugging Face Whisper.

A CTranslate2 folder holds `model.bin`, `config.json` (suppressed ids, language ids, alignment
heads) and the tokenizer (`tokenizer.json`; `vocabulary.txt` or `.json`). `model.bin` is the
layout CTranslate2's `specs/model_spec.py` writes (`_serialize`), all little-endian:

    u32 binary version (<= 6; >= 2 carries the spec name and revision)
    string spec name ("WhisperSpec"), u32 spec revision
    u32 variable count, then per variable: string name, u8 rank, u32 dims[rank],
        u8 dtype (float32, int8, int16, int32, float16, bfloat16; version >= 4, else an item
        size), u32 byte count, the raw bytes (row-major)
    u32 alias count (version >= 3), then per alias: string alias, string target name
    string = u16 length (with the NUL), the UTF-8 bytes, NUL

Every count, string and payload is checked against the bytes the file has left before anything
is allocated, so a cut or hostile header is refused with the file's name, not a MemoryError.
Quantized weights (int8 with a per-row `<name>_scale`, int16 with a scalar scale) are read back
to float32 the way CTranslate2 dequantizes them (value / scale).

The Whisper names are those of CTranslate2's Hugging Face converter (`converters/
transformers.py`, WhisperLoader), inverted here: fused q/k/v (self-attention) and k/v
(cross-attention) are split back; the key projection's bias, zero-filled by the converter
(Whisper's k_proj has none), is dropped; the decoder projection is an alias of the embedding
(tied, as in Hugging Face). The Hugging Face config, generation config and feature-extractor
config are built from the weights' shapes, `config.json` and the tokenizer's special tokens:
English-only models (vocabulary under 51865 tokens, the rule of openai/whisper and
CTranslate2) have no language or task tokens and decode from <|startoftranscript|>
<|notimestamps|>.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from export.errors import ExportError

log = logging.getLogger(__name__)

MODEL_FILE = "model.bin"
MAX_BINARY_VERSION = 6
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
MAX_RANK = 8
MULTILINGUAL_VOCAB = 51865  # openai/whisper: n_vocab >= 51865 means multilingual
# Scalars of the spec the reader checks instead of mapping (value expected for Whisper).
WHISPER_FLAGS = {
    "decoder/activation": 3,  # common_spec.Activation.GELU
    "decoder/alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}
IGNORED = ("decoder/alignment_heads", "decoder/alignment_layer")
NON_LANGUAGE = {
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|nospeech|>",
    "<|notimestamps|>",
}
LANG_TOKEN = re.compile(r"<\|([a-z]{2,3}|haw|yue)\|>")


@dataclass
class ModelBin:
    spec: str
    revision: int
    version: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray | None:
        name = self.aliases.get(name, name)
        return self.variables.get(name)


def is_ct2_folder(p: Path) -> bool:
    """A folder with `model.bin` and no Hugging Face `model_type` in its config.json."""
    if not (p / MODEL_FILE).is_file():
        return False
    try:
        cfg = json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        return True
    return not (isinstance(cfg, dict) and "model_type" in cfg)


class _Reader:
    def __init__(self, fh: BinaryIO, size: int, where: Path) -> None:
        self.fh, self.left, self.where = fh, size, where

    def bytes(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise ExportError(
                f"{self.where}: {what} needs {n} bytes, the file has {self.left} left: "
                "truncated or not a CTranslate2 model; re-download it"
            )
        b = self.fh.read(n)
        if len(b) != n:
            raise ExportError(f"{self.where}: short read at {what}; the file changed or is cut")
        self.left -= n
        return b

    def u(self, fmt: str, what: str) -> int:
        (v,) = struct.unpack("<" + fmt, self.bytes(struct.calcsize(fmt), what))
        return int(v)

    def string(self, what: str) -> str:
        n = self.u("H", what)
        raw = self.bytes(n, what)
        if n == 0 or raw[-1] != 0:
            raise ExportError(f"{self.where}: {what}: malformed string (no NUL terminator)")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise ExportError(f"{self.where}: {what}: not UTF-8 ({e})") from e


def peek_spec(path: Path) -> str:
    """The spec name in `model.bin`'s header ("WhisperSpec"), without reading the weights."""
    with open(path, "rb") as fh:
        r = _Reader(fh, path.stat().st_size, path)
        version = r.u("I", "binary version")
        if not 2 <= version <= MAX_BINARY_VERSION:
            return ""
        return r.string("spec name")


SPEC_ARCHITECTURES = {"WhisperSpec": "whisper"}


def read_model_bin(path: Path) -> ModelBin:
    """Parse `model.bin`; every allocation is bounded by the bytes left in the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        r = _Reader(fh, size, path)
        version = r.u("I", "binary version")
        if not 1 <= version <= MAX_BINARY_VERSION:
            raise ExportError(
                f"{path}: binary version {version} is not one this reader knows "
                f"(1..{MAX_BINARY_VERSION}); not a CTranslate2 model, or a newer one"
            )
        spec, revision = "", 1
        if version >= 2:
            spec = r.string("spec name")
            revision = r.u("I", "spec revision")
        mb = ModelBin(spec, revision, version)
        count = r.u("I", "variable count")
        # the smallest record: a 1-char name (2 + 2), rank, dtype, byte count
        if count * 10 > r.left:
            raise ExportError(f"{path}: {count} variables cannot fit in {size} bytes; corrupt")
        for i in range(count):
            name = r.string(f"variable {i} name")
            mb.variables[name] = _variable(r, name, version)
        if version >= 3:
            n = r.u("I", "alias count")
            if n * 8 > r.left:
                raise ExportError(f"{path}: {n} aliases cannot fit in {size} bytes; corrupt")
            for i in range(n):
                alias = r.string(f"alias {i}")
                mb.aliases[alias] = r.string(f"alias {i} target")
        if r.left:
            log.info("%s: %d bytes after the last alias, ignored", path, r.left)
    for alias, target in mb.aliases.items():
        if target not in mb.variables:
            raise ExportError(f"{path}: alias {alias!r} names {target!r}, which is not stored")
    return mb


def _variable(r: _Reader, name: str, version: int) -> np.ndarray:
    rank = r.u("B", f"{name}: rank")
    if rank > MAX_RANK:
        raise ExportError(f"{r.where}: {name}: rank {rank} is over {MAX_RANK}; corrupt")
    shape = struct.unpack(f"<{rank}I", r.bytes(4 * rank, f"{name}: shape"))
    if version >= 4:
        type_id = r.u("B", f"{name}: dtype")
        if type_id >= len(DTYPES):
            raise ExportError(f"{r.where}: {name}: unknown dtype id {type_id}")
        dtype = DTYPES[type_id]
        nbytes = r.u("I", f"{name}: byte count")
    else:
        item = r.u("B", f"{name}: item size")
        dtype = {4: "float32", 2: "int16", 1: "int8"}.get(item, "")
        if not dtype:
            raise ExportError(f"{r.where}: {name}: item size {item} is not 1, 2 or 4")
        nbytes = r.u("I", f"{name}: element count") * item
    items = int(np.prod(shape, dtype=np.int64)) if shape else 1
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    if items * itemsize != nbytes:
        raise ExportError(
            f"{r.where}: {name}: {nbytes} bytes for shape {list(shape)} of {dtype}; corrupt"
        )
    raw = r.bytes(nbytes, name)
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).reshape(shape)


def float_weights(mb: ModelBin, where: Path) -> dict[str, np.ndarray]:
    """Every non-scalar variable as float32, quantized ones read back with their scales."""
    out: dict[str, np.ndarray] = {}
    for name, v in mb.variables.items():
        if name.endswith(("_scale", "_zero")) or v.ndim == 0:
            continue
        if v.dtype in (np.float16, np.float32):
            out[name] = v.astype(np.float32)
            continue
        scale = mb.variables.get(name + "_scale")
        if scale is None or v.dtype not in (np.int8, np.int16):
            raise ExportError(
                f"{where}: {name} is {v.dtype} without a usable scale; this reader takes "
                "float32, float16, bfloat16, int8 and int16 CTranslate2 models"
            )
        s = scale.astype(np.float32)
        if v.dtype == np.int8:
            if s.size != v.shape[0]:
                raise ExportError(f"{where}: {name}_scale has {s.size} rows, the weight {v.shape}")
            out[name] = v.astype(np.float32) / s.reshape(-1, *([1] * (v.ndim - 1)))
        else:
            out[name] = v.astype(np.float32) / float(s.reshape(-1)[0])
    return out


def _scalar(mb: ModelBin, name: str, where: Path) -> int:
    v = mb.variables.get(name)
    if v is None or v.ndim != 0:
        raise ExportError(f"{where}: no scalar {name}; not a CTranslate2 Whisper model")
    return int(v)


def whisper_state_dict(mb: ModelBin, where: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(Hugging Face WhisperForConditionalGeneration state dict, the shape facts of its config)."""
    if mb.spec != "WhisperSpec":
        raise ExportError(
            f"{where}: a CTranslate2 {mb.spec or 'unnamed'} model; 'ocula export asr' reads "
            "Whisper (WhisperSpec) models only"
        )
    for name, want in WHISPER_FLAGS.items():
        if name in mb.variables and _scalar(mb, name, where) != want:
            raise ExportError(
                f"{where}: {name} is {_scalar(mb, name, where)}, Whisper has {want}; this "
                "model is not a Whisper this reader can map to Hugging Face"
            )
    w = float_weights(mb, where)
    for alias, target in mb.aliases.items():
        if target in w:
            w[alias] = w[target]
    taken: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in w:
            raise ExportError(f"{where}: no variable {name}; not a complete Whisper model")
        taken.add(name)
        return w[name]

    sd: dict[str, np.ndarray] = {}

    def linear(ct2: str, hf: str, parts: tuple[str, ...] = ("",)) -> None:
        weight = take(f"{ct2}/weight")
        bias = w.get(f"{ct2}/bias")
        if bias is not None:
            taken.add(f"{ct2}/bias")
        n = weight.shape[0] // len(parts)
        if weight.shape[0] != n * len(parts):
            raise ExportError(
                f"{where}: {ct2}/weight has {weight.shape[0]} rows, not {len(parts)}x"
            )
        for j, part in enumerate(parts):
            key = f"{hf}{part}"
            sd[f"{key}.weight"] = weight[j * n : (j + 1) * n]
            if bias is None:
                continue
            b = bias[j * n : (j + 1) * n]
            if part == "k_proj":
                # Whisper's key projection has no bias; the converter wrote zeros. A constant
                # added to every key shifts a query's scores equally: softmax drops it.
                continue
            sd[f"{key}.bias"] = b

    def norm(ct2: str, hf: str) -> None:
        sd[f"{hf}.weight"] = take(f"{ct2}/gamma")
        sd[f"{hf}.bias"] = take(f"{ct2}/beta")

    def attention(ct2: str, hf: str, cross: bool) -> None:
        if cross:
            linear(f"{ct2}/linear_0", f"{hf}.", ("q_proj",))
            linear(f"{ct2}/linear_1", f"{hf}.", ("k_proj", "v_proj"))
            linear(f"{ct2}/linear_2", f"{hf}.out_proj")
        else:
            linear(f"{ct2}/linear_0", f"{hf}.", ("q_proj", "k_proj", "v_proj"))
            linear(f"{ct2}/linear_1", f"{hf}.out_proj")

    def layers(side: str) -> int:
        pat = re.compile(rf"{side}/layer_(\d+)/")
        found = {int(m.group(1)) for n in w if (m := pat.match(n))}
        if found != set(range(len(found))) or not found:
            raise ExportError(f"{where}: {side} layers {sorted(found)} are not 0..n-1")
        return len(found)

    enc_layers, dec_layers = layers("encoder"), layers("decoder")
    for i in ("conv1", "conv2"):
        sd[f"model.encoder.{i}.weight"] = take(f"encoder/{i}/weight")
        sd[f"model.encoder.{i}.bias"] = take(f"encoder/{i}/bias")
    sd["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    for i in range(enc_layers):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        attention(f"{c}/self_attention", f"{h}.self_attn", cross=False)
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        linear(f"{c}/ffn/linear_0", f"{h}.fc1")
        linear(f"{c}/ffn/linear_1", f"{h}.fc2")
        norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    for i in range(dec_layers):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        attention(f"{c}/self_attention", f"{h}.self_attn", cross=False)
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        attention(f"{c}/attention", f"{h}.encoder_attn", cross=True)
        norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        linear(f"{c}/ffn/linear_0", f"{h}.fc1")
        linear(f"{c}/ffn/linear_1", f"{h}.fc2")
        norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
    proj = take("decoder/projection/weight")
    if "decoder/projection/bias" in w and np.any(take("decoder/projection/bias")):
        raise ExportError(f"{where}: the output projection has a bias; Whisper's has none")
    taken.add("decoder/projection/bias")
    tied = mb.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight" or (
        np.array_equal(proj, sd["model.decoder.embed_tokens.weight"])
    )
    sd["proj_out.weight"] = proj
    left = sorted(set(w) - taken)
    if left:
        raise ExportError(f"{where}: variables this reader does not know: {', '.join(left[:5])}")
    emb = sd["model.decoder.embed_tokens.weight"]
    facts = {
        "d_model": int(emb.shape[1]),
        "vocab_size": int(emb.shape[0]),
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": _scalar(mb, "encoder/num_heads", where),
        "decoder_attention_heads": _scalar(mb, "decoder/num_heads", where),
        "encoder_ffn_dim": int(sd["model.encoder.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(sd["model.decoder.layers.0.fc1.weight"].shape[0]),
        "num_mel_bins": int(sd["model.encoder.conv1.weight"].shape[1]),
        "max_source_positions": int(sd["model.encoder.embed_positions.weight"].shape[0]),
        "max_target_positions": int(sd["model.decoder.embed_positions.weight"].shape[0]),
        "tie_word_embeddings": bool(tied),
    }
    return sd, facts


def _special(tokenizer: dict[str, Any]) -> dict[str, int]:
    return {str(t["content"]): int(t["id"]) for t in tokenizer.get("added_tokens", [])}


def hf_configs(
    facts: dict[str, Any], ct2_config: dict[str, Any], tokenizer: dict[str, Any], where: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, generation_config.json) of the Hugging Face Whisper these weights are."""
    ids = _special(tokenizer)
    need = ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")
    missing = [t for t in need if t not in ids]
    if missing:
        raise ExportError(f"{where}: tokenizer.json has no {', '.join(missing)}; not Whisper's")
    eot, sot, nots = (ids[t] for t in need)
    multilingual = facts["vocab_size"] >= MULTILINGUAL_VOCAB
    suppress = [int(x) for x in ct2_config.get("suppress_ids") or []]
    begin = [int(x) for x in ct2_config.get("suppress_ids_begin") or [220, eot]]
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "scale_embedding": False,
        "bos_token_id": sot,
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "begin_suppress_tokens": begin,
        "suppress_tokens": suppress,
        "max_length": facts["max_target_positions"],
        "use_cache": True,
        **facts,
    }
    gen: dict[str, Any] = {
        "bos_token_id": sot,
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": facts["max_target_positions"],
        "no_timestamps_token_id": nots,
        "suppress_tokens": suppress,
        "begin_suppress_tokens": begin,
        "is_multilingual": multilingual,
        "return_timestamps": False,
        "max_initial_timestamp_index": 50,
    }
    if "<|startofprev|>" in ids:
        gen["prev_sot_token_id"] = ids["<|startofprev|>"]
    if ct2_config.get("alignment_heads"):
        gen["alignment_heads"] = [list(map(int, x)) for x in ct2_config["alignment_heads"]]
    if multilingual:
        by_id = {v: k for k, v in ids.items()}
        langs = [int(i) for i in ct2_config.get("lang_ids") or []]
        names = [by_id.get(i, "") for i in langs] or [
            k for k in ids if LANG_TOKEN.fullmatch(k) and k not in NON_LANGUAGE
        ]
        gen["lang_to_id"] = {n: ids[n] for n in names if n in ids and n not in NON_LANGUAGE}
        gen["task_to_id"] = {
            t: ids[f"<|{t}|>"] for t in ("transcribe", "translate") if f"<|{t}|>" in ids
        }
    else:
        # English-only: no language or task token; the prompt is SOT, no-timestamps.
        gen["forced_decoder_ids"] = [[1, nots]]
        config["forced_decoder_ids"] = [[1, nots]]
    return config, gen


def load_whisper(folder: Path, work: Path) -> tuple[Any, Any, Path]:
    """(WhisperForConditionalGeneration in float32, WhisperFeatureExtractor, a Hugging Face
    folder under `work` with config, generation config, preprocessor config and tokenizer)."""
    import shutil

    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise ExportError(f"{folder}: no tokenizer.json; the CTranslate2 folder needs one")
    try:
        ct2_config = json.loads((folder / "config.json").read_text())
        tokenizer = json.loads(tok_path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{folder}: config.json or tokenizer.json unreadable ({e})") from e
    mb = read_model_bin(folder / MODEL_FILE)
    sd, facts = whisper_state_dict(mb, folder / MODEL_FILE)
    config, gen = hf_configs(facts, ct2_config, tokenizer, folder)
    hf = work / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    (hf / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copy2(tok_path, hf / "tokenizer.json")
    model = WhisperForConditionalGeneration(WhisperConfig(**config))
    model.generation_config = GenerationConfig(**gen)
    model.generation_config.save_pretrained(hf)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    if facts["tie_word_embeddings"]:
        state.pop("proj_out.weight")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "proj_out.weight"]
    if missing or result.unexpected_keys:
        raise ExportError(
            f"{folder}: the mapped weights do not fit Hugging Face Whisper (missing "
            f"{missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    if facts["tie_word_embeddings"]:
        model.tie_weights()
    fe = WhisperFeatureExtractor(feature_size=facts["num_mel_bins"])
    fe.to_json_file(str(hf / "preprocessor_config.json"))
    return model.float().eval(), fe, hf

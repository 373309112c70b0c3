"""What differs between the decoder families the fused builder writes, as data.

One `Family` per supported `model_type` says where its weights live and which optional parts it
has (q/k/v bias, per-head q/k RMS norm). `read_shape` turns a Hugging Face `config.json` into a
`Shape`: the numbers the shared core (`graph.py`) needs, with the rotary tables already
computed. Everything the core cannot reproduce exactly (sliding-window attention, partial
rotary, rope types whose tables depend on the runtime length) is refused here, by name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.fused.errors import FusedError


@dataclass(frozen=True)
class Family:
    """One supported architecture: names and optional parts; the core emits the layers."""

    model_type: str
    qkv_bias: bool = False  # Qwen2: q/k/v projections carry a bias
    qk_norm: bool = False  # Qwen3: RMS norm over each head of q and k before rotary
    # Llama: `attention_bias` / `mlp_bias` in the config turn biases on for those projections.
    bias_flags: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    "qwen2": Family("qwen2", qkv_bias=True),
    "qwen3": Family("qwen3", qk_norm=True),
    "llama": Family("llama", bias_flags=("attention_bias", "mlp_bias")),
}

# Rope types whose cos/sin tables are fixed for a given max length (computed once, stored as
# initializers). `dynamic` is the same as `default` while the length stays within the
# original context, so it is accepted only there.
ROPE_TYPES = ("default", "linear", "llama3", "yarn", "dynamic")


@dataclass(frozen=True)
class Shape:
    """The numbers of one model that the graph core needs."""

    family: Family
    num_layers: int
    hidden: int
    intermediate: int
    num_heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float
    tied: bool
    rope_type: str
    rope_theta: float
    max_length: int
    attention_bias: bool
    mlp_bias: bool
    cos: np.ndarray = field(repr=False)  # [max_length, head_dim / 2] float32
    sin: np.ndarray = field(repr=False)
    eos_ids: tuple[int, ...] = ()
    bos_id: int | None = None

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.kv_heads * self.head_dim


def load_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise FusedError(f"{model_dir}: no config.json; give a Hugging Face model folder")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise FusedError(f"{path}: not readable JSON ({e}); re-download or re-save it") from e
    if not isinstance(data, dict):
        raise FusedError(f"{path}: not a model config (a JSON object); re-download or re-save it")
    return data


def read_shape(model_dir: Path, max_length: int) -> Shape:
    """Read `config.json` and return the model's `Shape`, or say why it is not supported."""
    cfg = load_config(model_dir)
    model_type = cfg.get("model_type", "?")
    family = FAMILIES.get(model_type)
    if family is None:
        raise FusedError(
            f"{model_dir}: architecture {model_type!r} is not supported by the fused graph "
            f"builder (supported: {', '.join(sorted(FAMILIES))}); use --graph optimum"
        )
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    if max_length < 2:
        raise FusedError(f"max_length must be at least 2, got {max_length}")
    if float(cfg.get("partial_rotary_factor", 1.0)) != 1.0:
        raise FusedError(f"{model_dir}: partial rotary embeddings are not supported")
    if cfg.get("use_sliding_window") and int(cfg.get("sliding_window") or 0) < max_length:
        raise FusedError(
            f"{model_dir}: sliding-window attention (window {cfg.get('sliding_window')}) "
            f"is not supported; use --max-length {cfg.get('sliding_window')} or less"
        )
    if head_dim % 2:
        raise FusedError(
            f"{model_dir}: head_dim {head_dim} is odd; the fused graph's rotary needs an even "
            "one; use --graph optimum"
        )
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    if kv_heads < 1 or heads % kv_heads:
        raise FusedError(
            f"{model_dir}: {heads} attention heads over {kv_heads} KV heads: "
            "GroupQueryAttention shares each KV head among a whole number of query heads; "
            "use --graph optimum"
        )
    rope_type, cos, sin = rope_tables(model_dir, cfg, head_dim, max_length)
    eos = cfg.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
    return Shape(
        family=family,
        num_layers=int(cfg["num_hidden_layers"]),
        hidden=hidden,
        intermediate=int(cfg["intermediate_size"]),
        num_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=int(cfg["vocab_size"]),
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        rope_type=rope_type,
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        max_length=max_length,
        attention_bias=family.qkv_bias
        or ("attention_bias" in family.bias_flags and bool(cfg.get("attention_bias"))),
        mlp_bias="mlp_bias" in family.bias_flags and bool(cfg.get("mlp_bias")),
        cos=cos,
        sin=sin,
        eos_ids=eos_ids,
        bos_id=cfg.get("bos_token_id"),
    )


def rope_tables(
    model_dir: Path, cfg: dict[str, Any], head_dim: int, max_length: int
) -> tuple[str, np.ndarray, np.ndarray]:
    """cos/sin tables [max_length, head_dim/2] exactly as transformers computes them.

    The inverse frequencies and the attention factor come from transformers' own rope
    functions (so linear, llama3 and yarn scaling match it bit for bit); positions are
    multiplied in float32 as its rotary module does.
    """
    scaling = cfg.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise FusedError(
            f"{model_dir}: rope scaling {rope_type!r} is not supported by the fused graph "
            f"(supported: {', '.join(ROPE_TYPES)}); use --graph optimum"
        )
    original = int(cfg.get("max_position_embeddings") or max_length)
    if rope_type == "dynamic" and max_length > original:
        raise FusedError(
            f"{model_dir}: dynamic rope scaling changes the rotary tables beyond "
            f"{original} positions, which a fixed graph cannot do; use --max-length {original}"
        )
    import torch
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(model_dir)
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
    positions = torch.arange(max_length, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq.float())
    cos = (freqs.cos() * attention_factor).numpy().astype(np.float32)
    sin = (freqs.sin() * attention_factor).numpy().astype(np.float32)
    if cos.shape != (max_length, head_dim // 2) or not math.isfinite(float(cos.sum())):
        raise FusedError(f"{model_dir}: rotary tables came out as {cos.shape}; config is odd")
    return rope_type, cos, sin

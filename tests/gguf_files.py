"""Tiny GGUF files for tests, written with the `gguf` package from a random-weight HF folder.

`write_gguf(hf_dir, path, qtype)` writes what llama.cpp's converter would: the architecture's
metadata, the byte-level BPE vocabulary (tokens, types, merges, bos/eos, add_bos_token), and
every 2-D weight quantized with `gguf.quants.quantize` to `qtype` (`table` for the token
embedding), norms in F32, llama's q/k rows permuted as llama.cpp's converter permutes them.
`damage` spoils the tokenizer the way a bad conversion does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ARCHES = {"llama": "llama", "qwen2": "qwen2"}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's q/k row permutation (the inverse of transformers')."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_gguf(
    hf_dir: Path,
    path: Path,
    qtype: str,
    table: str | None = None,
    damage: str | None = None,
) -> Path:
    """A GGUF of the HF folder's model; `damage`: "spm" (byte-level tokens declared as a
    SentencePiece vocabulary: they decode with their Ġ markers), "merges" (no merges)."""
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    arch = ARCHES[cfg["model_type"]]
    w = gguf.GGUFWriter(str(path), arch)
    layers, heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    hidden = cfg["hidden_size"]
    w.add_name("tiny")
    w.add_block_count(layers)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(hidden // heads)
    _tokenizer(w, hf_dir, cfg, damage)

    weights = load_file(str(hf_dir / "model.safetensors"))
    names = gguf.get_tensor_name_map(
        next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), layers
    )
    types = {
        "Q4_0": gguf.GGMLQuantizationType.Q4_0,
        "Q4_1": gguf.GGMLQuantizationType.Q4_1,
        "Q8_0": gguf.GGMLQuantizationType.Q8_0,
        "F32": gguf.GGMLQuantizationType.F32,
    }
    for hf_name, x in sorted(weights.items()):
        x = np.asarray(x, np.float32)
        base, _, suffix = hf_name.rpartition(".")
        name = f"{names.get_name(base)}.{suffix}"
        if arch == "llama" and hf_name.endswith("q_proj.weight"):
            x = _permute(x, heads)
        if arch == "llama" and hf_name.endswith("k_proj.weight"):
            x = _permute(x, kv_heads)
        t = qtype if x.ndim == 2 else "F32"
        if name == "token_embd.weight" and table:
            t = table
        if t == "F32":
            w.add_tensor(name, x)
        else:
            raw = gguf.quants.quantize(x, types[t])
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=types[t])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _tokenizer(w: object, hf_dir: Path, cfg: dict, damage: str | None) -> None:
    import gguf

    tj = json.loads((hf_dir / "tokenizer.json").read_text())
    vocab: dict[str, int] = dict(tj["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tj["added_tokens"]}
    vocab.update(special)
    tokens = [""] * cfg["vocab_size"]
    types = [gguf.TokenType.UNUSED] * cfg["vocab_size"]
    for tok, i in vocab.items():
        tokens[i] = tok
        types[i] = gguf.TokenType.CONTROL if tok in special else gguf.TokenType.NORMAL
    for i, tok in enumerate(tokens):
        if not tok:
            tokens[i] = f"<|unused_{i}|>"
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    if damage == "merges":
        merges = merges[: len(merges) // 50]
    w.add_tokenizer_model("llama" if damage == "spm" else "gpt2")  # type: ignore[attr-defined]
    w.add_tokenizer_pre("qwen2" if cfg["model_type"] == "qwen2" else "llama-bpe")  # type: ignore[attr-defined]
    w.add_token_list(tokens)  # type: ignore[attr-defined]
    w.add_token_types(types)  # type: ignore[attr-defined]
    if damage == "spm":
        w.add_token_scores([0.0] * len(tokens))  # type: ignore[attr-defined]
    else:
        w.add_token_merges(merges)  # type: ignore[attr-defined]
    eos = cfg.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    bos = cfg.get("bos_token_id")
    if isinstance(bos, int):
        w.add_bos_token_id(bos)  # type: ignore[attr-defined]
    if isinstance(eos, int):
        w.add_eos_token_id(eos)  # type: ignore[attr-defined]
    w.add_add_bos_token(False)  # type: ignore[attr-defined]
    tc = hf_dir / "tokenizer_config.json"
    template = json.loads(tc.read_text()).get("chat_template") if tc.is_file() else None
    if template is None and (hf_dir / "chat_template.jinja").is_file():
        template = (hf_dir / "chat_template.jinja").read_text()
    if isinstance(template, str):
        w.add_chat_template(template)  # type: ignore[attr-defined]

"""A GGUF's own tokenizer metadata over the defaults of transformers' converted tokenizer.

transformers converts a GGUF vocabulary into a `tokenizer.json`, but fills in what llama.cpp
reads from the file's metadata with defaults of its own: on SmolLM2 it prepends
`<|im_start|>` to every raw prompt (add_bos_token and bos_token set) although the file says
`tokenizer.ggml.add_bos_token = false`, names `<|im_start|>` the eos token, and splits digit
runs where llama.cpp's `smollm` pre-tokenizer splits every digit. llama.cpp follows the file,
so `fix` rewrites the converted files to say what the file says:

- the post-processor adds the bos / eos token exactly when `tokenizer.ggml.add_bos_token` /
  `add_eos_token` say so (a key that is absent leaves the converted behaviour);
- `tokenizer_config.json` names the file's bos / eos tokens and the same add_* flags;
- pre-tokenizers that llama.cpp defines differently from the conversion (by
  `tokenizer.ggml.pre`) are replaced with llama.cpp's split.

tests/test_gguf_tokens.py checks raw and chat prompts against llama.cpp's own tokenizer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# tokenizer.ggml.pre -> the pre-tokenizer llama.cpp applies, as tokenizers' JSON. `smollm`:
# every digit on its own, then GPT-2's byte-level split (llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_
# SMOLLM), which is also what SmolLM2's own tokenizer.json says.
PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {
                "type": "ByteLevel",
                "add_prefix_space": False,
                "trim_offsets": True,
                "use_regex": True,
            },
        ],
    },
}


def metadata(gguf_path: Path) -> dict[str, Any]:
    """The file's tokenizer keys that decide how a prompt becomes ids (absent: not listed)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    out: dict[str, Any] = {}
    for key in (
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.model",
    ):
        field = reader.fields.get(key)
        if field is not None:
            out[key.rsplit(".", 1)[1]] = field.contents()
    return out


def fix(folder: Path, gguf_path: Path) -> dict[str, Any]:
    """Rewrite `folder`'s tokenizer.json and tokenizer_config.json after the file's metadata;
    returns what was applied (for the log and the manifest)."""
    meta = metadata(gguf_path)
    tj_path = folder / "tokenizer.json"
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    id_to_token = {int(t["id"]): t["content"] for t in tj.get("added_tokens", [])}
    vocab = tj.get("model", {}).get("vocab", {})
    if isinstance(vocab, dict):
        id_to_token.update({int(i): tok for tok, i in vocab.items() if int(i) not in id_to_token})

    def token(key: str) -> str | None:
        i = meta.get(key)
        return id_to_token.get(int(i)) if isinstance(i, int) else None

    bos, eos = token("bos_token_id"), token("eos_token_id")
    add_bos, add_eos = meta.get("add_bos_token"), meta.get("add_eos_token")
    if add_bos is not None or add_eos is not None:
        current = _template_specials(tj.get("post_processor"))
        add_bos = current[0] is not None if add_bos is None else bool(add_bos)
        add_eos = current[1] is not None if add_eos is None else bool(add_eos)
        tj["post_processor"] = _post_processor(
            (bos or current[0]) if add_bos else None,
            (eos or current[1]) if add_eos else None,
            {tok: i for i, tok in id_to_token.items()},
        )
    pre = meta.get("pre")
    if isinstance(pre, str) and pre in PRE_TOKENIZERS:
        tj["pre_tokenizer"] = PRE_TOKENIZERS[pre]
    tj_path.write_text(json.dumps(tj, ensure_ascii=False, indent=1), encoding="utf-8")

    cfg_path = folder / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        for key, value in (
            ("add_bos_token", add_bos),
            ("add_eos_token", add_eos),
            ("bos_token", bos),
            ("eos_token", eos),
        ):
            if value is not None:
                cfg[key] = value
        for key in ("bos_token_id", "eos_token_id"):
            cfg.pop(key, None)  # transformers' converted ids; the token names above decide
        cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    applied: dict[str, Any] = {
        k: meta[k] for k in ("add_bos_token", "add_eos_token", "pre") if k in meta
    }
    log.info("GGUF tokenizer metadata applied: %s", applied)
    return applied


def _template_specials(pp: Any) -> tuple[str | None, str | None]:
    """(first, last) special token of a TemplateProcessing post-processor's single template."""
    if not isinstance(pp, dict) or pp.get("type") != "TemplateProcessing":
        return None, None
    single = pp.get("single", [])
    specials = [i for i, part in enumerate(single) if "SpecialToken" in part]
    seq = next((i for i, part in enumerate(single) if "Sequence" in part), 0)
    first = [single[i]["SpecialToken"]["id"] for i in specials if i < seq]
    last = [single[i]["SpecialToken"]["id"] for i in specials if i > seq]
    return (first[0] if first else None), (last[-1] if last else None)


def _post_processor(bos: str | None, eos: str | None, ids: dict[str, int]) -> dict[str, Any]:
    def special(tok: str, type_id: int) -> dict[str, Any]:
        return {"SpecialToken": {"id": tok, "type_id": type_id}}

    def seq(name: str, type_id: int) -> dict[str, Any]:
        return {"Sequence": {"id": name, "type_id": type_id}}

    single: list[dict[str, Any]] = []
    pair: list[dict[str, Any]] = []
    for name, type_id in (("A", 0), ("B", 1)):
        part = ([special(bos, type_id)] if bos else []) + [seq(name, type_id)]
        part += [special(eos, type_id)] if eos else []
        pair += part
        if name == "A":
            single = list(part)
    specials = {tok: {"id": tok, "ids": [ids[tok]], "tokens": [tok]} for tok in (bos, eos) if tok}
    return {
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": specials,
    }

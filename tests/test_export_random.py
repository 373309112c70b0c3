"""Random-weight presets: real architectures, real tokenizer conventions, deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from export import presets
from export.random import make_random
from tests.artifacts import hf_model

# The published models' config numbers (hidden, intermediate, layers, heads, kv heads, head dim,
# vocab) that the real-shape presets must carry.
PUBLISHED = {
    "qwen2.5-0.5b": (896, 4864, 24, 14, 2, 64, 151936),
    "qwen3-0.6b": (1024, 3072, 28, 16, 8, 128, 151936),
}
WHISPER = {"whisper-tiny": (384, 4, 6, 1536), "whisper-base": (512, 6, 8, 2048)}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_real_llm_shapes(name: str) -> None:
    c = presets.get(name).config
    head_dim = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
    got = (
        c["hidden_size"],
        c["intermediate_size"],
        c["num_hidden_layers"],
        c["num_attention_heads"],
        c["num_key_value_heads"],
        head_dim,
        c["vocab_size"],
    )
    assert got == PUBLISHED[name]
    assert c["tie_word_embeddings"] is True


@pytest.mark.parametrize("name", list(WHISPER))
def test_real_whisper_shapes(name: str) -> None:
    c = presets.get(name).config
    d, layers, heads, ffn = WHISPER[name]
    assert (c["d_model"], c["encoder_layers"], c["decoder_layers"]) == (d, layers, layers)
    assert (c["encoder_attention_heads"], c["encoder_ffn_dim"]) == (heads, ffn)
    assert (c["vocab_size"], c["num_mel_bins"], c["max_target_positions"]) == (51865, 80, 448)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    again = make_random("tiny-qwen3", tmp_path / "again", seed=0)
    other = make_random("tiny-qwen3", tmp_path / "other", seed=1)
    base = hf_model("tiny-qwen3", seed=0)
    assert _sha(again / "model.safetensors") == _sha(base / "model.safetensors")
    assert _sha(again / "tokenizer.json") == _sha(base / "tokenizer.json")
    assert _sha(other / "model.safetensors") != _sha(base / "model.safetensors")


def test_qwen_tokenizer_and_chat_template() -> None:
    folder = hf_model("tiny-qwen2")
    tok = AutoTokenizer.from_pretrained(folder)
    cfg = AutoConfig.from_pretrained(folder)
    assert len(tok) == cfg.vocab_size == 1024
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    assert list(ids.values()) == [1021, 1022, 1023]
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    enc = tok(text).input_ids
    assert enc.count(ids["<|im_start|>"]) == 3 and tok.decode(enc) == text
    gen = GenerationConfig.from_pretrained(folder)
    assert gen.eos_token_id == [ids["<|im_end|>"], ids["<|endoftext|>"]]


def test_qwen3_head_dim_is_explicit() -> None:
    cfg = AutoConfig.from_pretrained(hf_model("tiny-qwen3"))
    assert cfg.head_dim == 32 and cfg.hidden_size // cfg.num_attention_heads == 16


def test_llama_tokenizer_adds_begin_of_text() -> None:
    folder = hf_model("tiny-llama")
    tok = AutoTokenizer.from_pretrained(folder)
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    assert tok("hello").input_ids[0] == bos
    assert AutoConfig.from_pretrained(folder).tie_word_embeddings is False
    assert "<|start_header_id|>" in tok.chat_template


def test_whisper_special_tokens() -> None:
    folder = hf_model("tiny-whisper")
    tok = AutoTokenizer.from_pretrained(folder)
    gen = GenerationConfig.from_pretrained(folder)
    assert gen.decoder_start_token_id == tok.convert_tokens_to_ids("<|startoftranscript|>")
    assert gen.lang_to_id["<|en|>"] == tok.convert_tokens_to_ids("<|en|>")
    assert gen.task_to_id["transcribe"] == tok.convert_tokens_to_ids("<|transcribe|>")
    assert gen.no_timestamps_token_id == tok.convert_tokens_to_ids("<|notimestamps|>")
    assert len(tok) == AutoConfig.from_pretrained(folder).vocab_size


def test_unknown_preset() -> None:
    from export.errors import ExportUsageError

    with pytest.raises(ExportUsageError, match="unknown preset 'qwen9'; known presets: tiny-qwen2"):
        presets.get("qwen9")

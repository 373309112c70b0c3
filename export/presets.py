"""Random-weight model presets: the config numbers of real architectures, as data.

Tiny presets build in seconds and exercise every code path of the real families (Qwen2's q/k/v
bias, Qwen3's explicit head_dim and q/k norm, Llama's untied head, Whisper's encoder-decoder).
The real-shape presets carry the published models' config numbers, for benchmarks.

`family` names the tokenizer style (special tokens and chat template) `export.tokenizer` builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from export.errors import ExportUsageError


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # qwen | llama | whisper
    config: dict[str, Any]
    description: str
    real_shape: bool = False
    # standard deviation of the random weights: tiny models get larger weights than the
    # usual 0.02 so that their logits have clear winners and greedy decoding is not a coin toss
    init_std: float = 0.02
    # tiny LLM presets: Adam steps on the built-in corpus after the random init (see
    # export.random._train); real shapes stay purely random
    train_steps: int = 0
    # tiny presets: Adam steps on the corpus's opening after that, until greedy decoding from
    # its first sentence recites it by a wide top-1/top-2 margin (see export.random._train)
    recite_steps: int = 0
    generation: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "asr" if self.family == "whisper" else "llm"


def _qwen2(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
    }
    return {**base, **kw}


def _qwen3(**kw: Any) -> dict[str, Any]:
    return {**_qwen2(**kw), "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}


def _llama(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    return {**base, **kw}


def _whisper(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model_type": "whisper",
        "architectures": ["WhisperForConditionalGeneration"],
        "activation_function": "gelu",
        "num_mel_bins": 80,
        "max_source_positions": 1500,
        "max_target_positions": 448,
        "scale_embedding": False,
        "torch_dtype": "float32",
    }
    return {**base, **kw}


TRAIN_STEPS = 60
RECITE_STEPS = {"llm": 200, "asr": 100}
_TINY_LM = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "vocab_size": 1024,
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "tiny-qwen2",
            "qwen",
            _qwen2(**_TINY_LM),
            "2-layer Qwen2 (q/k/v bias, GQA 4:2, tied embedding), 1024 tokens",
            train_steps=TRAIN_STEPS,
            recite_steps=RECITE_STEPS["llm"],
        ),
        Preset(
            "tiny-qwen3",
            "qwen",
            _qwen3(**{**_TINY_LM, "head_dim": 32, "attention_bias": False}),
            "2-layer Qwen3 with head_dim 32 != hidden/heads 16 (q/k norm, tied embedding)",
            train_steps=TRAIN_STEPS,
            recite_steps=RECITE_STEPS["llm"],
        ),
        Preset(
            "tiny-llama",
            "llama",
            _llama(**_TINY_LM, tie_word_embeddings=False),
            "2-layer Llama (untied head, GQA 4:2), 1024 tokens",
            train_steps=TRAIN_STEPS,
            recite_steps=RECITE_STEPS["llm"],
        ),
        Preset(
            "tiny-whisper",
            "whisper",
            _whisper(
                d_model=64,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=128,
                decoder_ffn_dim=128,
                max_target_positions=64,
                vocab_size=640,
            ),
            "2+2-layer Whisper, 80 mel bins, 640 tokens (6 languages, no timestamp tokens)",
            init_std=0.2,
            recite_steps=RECITE_STEPS["asr"],
        ),
        Preset(
            "qwen2.5-0.5b",
            "qwen",
            _qwen2(
                hidden_size=896,
                intermediate_size=4864,
                num_hidden_layers=24,
                num_attention_heads=14,
                num_key_value_heads=2,
                max_position_embeddings=32768,
                max_window_layers=21,
                sliding_window=32768,
                vocab_size=151936,
                bos_token_id=151643,
                eos_token_id=151645,
            ),
            "shape of Qwen2.5-0.5B-Instruct (494M parameters)",
            real_shape=True,
        ),
        Preset(
            "qwen3-0.6b",
            "qwen",
            _qwen3(
                hidden_size=1024,
                intermediate_size=3072,
                num_hidden_layers=28,
                num_attention_heads=16,
                num_key_value_heads=8,
                head_dim=128,
                attention_bias=False,
                max_position_embeddings=40960,
                max_window_layers=28,
                sliding_window=None,
                vocab_size=151936,
                bos_token_id=151643,
                eos_token_id=151645,
            ),
            "shape of Qwen3-0.6B (596M parameters, head_dim 128)",
            real_shape=True,
        ),
        Preset(
            "whisper-tiny",
            "whisper",
            _whisper(
                d_model=384,
                encoder_layers=4,
                decoder_layers=4,
                encoder_attention_heads=6,
                decoder_attention_heads=6,
                encoder_ffn_dim=1536,
                decoder_ffn_dim=1536,
                vocab_size=51865,
            ),
            "shape of openai/whisper-tiny (39M parameters)",
            real_shape=True,
        ),
        Preset(
            "whisper-base",
            "whisper",
            _whisper(
                d_model=512,
                encoder_layers=6,
                decoder_layers=6,
                encoder_attention_heads=8,
                decoder_attention_heads=8,
                encoder_ffn_dim=2048,
                decoder_ffn_dim=2048,
                vocab_size=51865,
            ),
            "shape of openai/whisper-base (74M parameters)",
            real_shape=True,
        ),
    ]
}


def get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ExportUsageError(
            f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}"
        ) from None

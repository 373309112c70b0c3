"""Tokenizers for random-weight presets, built offline with the `tokenizers` library.

A byte-level BPE is trained on a small built-in corpus (the passage in `export/data` plus a few
lines of other languages), its vocabulary padded with unreachable `<|reserved_N|>` entries to
the preset's size, and the family's special tokens placed where the real family puts them:

- qwen: <|endoftext|>, <|im_start|>, <|im_end|> (ChatML template); on real shapes at 151643..
- llama: Llama 3's <|begin_of_text|>, <|end_of_text|>, <|start_header_id|>, <|end_header_id|>,
  <|eot_id|>; the begin token is prepended by the post-processor, as Llama 3 does.
- whisper: <|endoftext|>, <|startoftranscript|>, one token per language, <|translate|>,
  <|transcribe|>, <|startoflm|>, <|startofprev|>, <|nospeech|>, <|notimestamps|>, then the
  timestamp tokens <|0.00|>..<|30.00|> where the vocabulary has room (real shapes).

The result is saved as a transformers `PreTrainedTokenizerFast` (tokenizer.json +
tokenizer_config.json with the chat template), so PyTorch and the runtime read the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from export.presets import Preset

QWEN_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# Whisper v1/v2 languages, in token order (the first 99 of the model's language list).
WHISPER_LANGUAGES = [
    "en",
    "zh",
    "de",
    "es",
    "ru",
    "ko",
    "fr",
    "ja",
    "pt",
    "tr",
    "pl",
    "ca",
    "nl",
    "ar",
    "sv",
    "it",
    "id",
    "hi",
    "fi",
    "vi",
    "he",
    "uk",
    "el",
    "ms",
    "cs",
    "ro",
    "da",
    "hu",
    "ta",
    "no",
    "th",
    "ur",
    "hr",
    "bg",
    "lt",
    "la",
    "mi",
    "ml",
    "cy",
    "sk",
    "te",
    "fa",
    "lv",
    "bn",
    "sr",
    "az",
    "sl",
    "kn",
    "et",
    "mk",
    "br",
    "eu",
    "is",
    "hy",
    "ne",
    "mn",
    "bs",
    "kk",
    "sq",
    "sw",
    "gl",
    "mr",
    "pa",
    "si",
    "km",
    "sn",
    "yo",
    "so",
    "af",
    "oc",
    "ka",
    "be",
    "tg",
    "sd",
    "gu",
    "am",
    "yi",
    "lo",
    "uz",
    "fo",
    "ht",
    "ps",
    "tk",
    "nn",
    "mt",
    "sa",
    "lb",
    "my",
    "bo",
    "tl",
    "mg",
    "as",
    "tt",
    "haw",
    "ln",
    "ha",
    "ba",
    "jw",
    "su",
]
WHISPER_TASKS = ("translate", "transcribe", "startoflm", "startofprev", "nospeech", "notimestamps")
OTHER_LANGUAGES = (
    "Der Hafen erwacht langsam an Wintermorgen, und die Boote liegen schon am Kai.\n"
    "Le port se réveille lentement les matins d'hiver, et les bateaux sont déjà à quai.\n"
    "El puerto despierta despacio en las mañanas de invierno.\n"
    "冬の朝、港の町はゆっくりと目を覚ます。\n"
    "冬天的早晨，港口小镇慢慢醒来。\n"
)


@dataclass
class BuiltTokenizer:
    tokenizer: Tokenizer
    special: dict[str, int]  # token text -> id
    chat_template: str | None
    bos: str | None
    eos: list[str]
    pad: str | None
    generation: dict[str, Any] = field(default_factory=dict)


def corpus() -> list[str]:
    text = resources.files("export").joinpath("data/passage.txt").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip()] + OTHER_LANGUAGES.splitlines()
    return lines * 4


def _specials(preset: Preset) -> list[str]:
    if preset.family == "qwen":
        return ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if preset.family == "llama":
        return [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ]
    vocab = int(preset.config["vocab_size"])
    langs = list(WHISPER_LANGUAGES) if vocab > 50000 else ["en", "zh", "de", "es", "fr", "ja"]
    out = ["<|endoftext|>", "<|startoftranscript|>"]
    out += [f"<|{lang}|>" for lang in langs]
    out += [f"<|{t}|>" for t in WHISPER_TASKS]
    if vocab > 50000:
        out += [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    return out


def build(preset: Preset) -> BuiltTokenizer:
    vocab_size = int(preset.config["vocab_size"])
    specials = _specials(preset)
    if preset.family == "qwen" and "bos_token_id" in preset.config:
        first_special = int(preset.config["bos_token_id"])  # real Qwen: 151643
    elif preset.family == "whisper" and vocab_size > 50000:
        first_special = 50257
    else:
        first_special = vocab_size - len(specials)
    if first_special + len(specials) > vocab_size or first_special < 300:
        raise ValueError(f"preset {preset.name}: vocabulary too small for its special tokens")

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=min(first_special, 4000),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trained.train_from_iterator(corpus(), trainer)
    vocab = dict(trained.get_vocab())
    merges = [tuple(m) for m in json.loads(trained.to_str())["model"]["merges"]]
    i = 0
    while len(vocab) < first_special:
        vocab[f"<|reserved_{i}|>"] = len(vocab)
        i += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    ids = {s: tok.token_to_id(s) for s in specials}
    assert ids[specials[0]] == first_special, "special tokens must follow the regular vocabulary"

    if preset.family == "qwen":
        return BuiltTokenizer(
            tok,
            ids,
            QWEN_TEMPLATE,
            bos=None,
            eos=["<|im_end|>", "<|endoftext|>"],
            pad="<|endoftext|>",
        )
    if preset.family == "llama":
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[bos])]
        )
        return BuiltTokenizer(
            tok, ids, LLAMA_TEMPLATE, bos=bos, eos=["<|end_of_text|>", "<|eot_id|>"], pad=None
        )
    return BuiltTokenizer(
        tok, ids, None, bos="<|endoftext|>", eos=["<|endoftext|>"], pad="<|endoftext|>"
    )

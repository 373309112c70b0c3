"""Random-weight Hugging Face model folders of real architectures, offline and deterministic.

`make_random(preset, out, seed)` writes config.json, model.safetensors, the tokenizer files
(`export.tokenizer`), generation_config.json and, for Whisper, preprocessor_config.json. The
same preset and seed give byte-identical weights. A `.ocula-random` marker records the preset
and seed, so the folder can be replaced by a later run without --force.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from export import presets
from export.output import atomic_dir
from export.tokenizer import WHISPER_TASKS, BuiltTokenizer, build

log = logging.getLogger(__name__)


def make_random(preset_name: str, out: Path, seed: int = 0, force: bool = False) -> Path:
    preset = presets.get(preset_name)
    import torch

    with atomic_dir(out, force) as tmp:
        tok = build(preset)
        config = _config(preset, tok)
        torch.manual_seed(seed)
        model = _model(preset, config)
        if preset.train_steps or preset.recite_steps:
            _train(model, tok, preset)
        model.save_pretrained(tmp, safe_serialization=True)
        _save_tokenizer(tok, tmp)
        _generation_config(preset, tok, config).save_pretrained(tmp)
        if preset.family == "whisper":
            from transformers import WhisperFeatureExtractor

            WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        marker = {"preset": preset.name, "seed": seed}
        (tmp / ".ocula-random").write_text(json.dumps(marker) + "\n")
    log.debug("wrote %s (%s, seed %d)", out, preset.name, seed)
    return out


def _train(model: Any, tok: BuiltTokenizer, preset: presets.Preset) -> None:
    """Two or three seconds of Adam on the built-in corpus, single-threaded (so the same seed gives
    the same bytes on any machine with the same torch). Random weights have flat logits whose
    top-1 is a coin toss under any rounding; after this the tiny model predicts its corpus with
    clear winners, as a trained model does, so quantization fidelity is measurable on it, and
    from the corpus's first sentence greedy decoding recites the opening by a wide margin
    between the top two logits, so the same tokens come out on every architecture."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        if preset.family == "whisper":
            _recite_whisper(model, tok, preset.recite_steps)
        else:
            _train_lm(model, tok, preset.train_steps, preset.recite_steps)
        model.eval()
    finally:
        torch.set_num_threads(threads)


def training_text() -> str:
    """The text the tiny presets train on: the built-in corpus's lines, each once."""
    from export.tokenizer import corpus

    return "\n".join(dict.fromkeys(corpus()))


def recital_prompt() -> str:
    """The corpus's first sentence: from it, greedy decoding of a tiny preset recites what
    follows (the aarch64 parity tests prompt with it)."""
    return training_text().split(". ", 1)[0] + "."


def _train_lm(model: Any, tok: BuiltTokenizer, steps: int, recite_steps: int) -> None:
    """`steps` on windows sliding over the whole corpus, then `recite_steps` on its opening
    window."""
    import torch

    ids = torch.tensor([tok.tokenizer.encode(training_text()).ids])
    span = min(ids.shape[1], int(model.config.max_position_embeddings), 256)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    windows = [(step * 97) % max(1, ids.shape[1] - span) for step in range(steps)]
    for start in windows + [0] * recite_steps:
        x = ids[:, start : start + span]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    if windows or recite_steps:
        log.debug(
            "trained %d + %d steps, last loss %.3f", steps, recite_steps, float(loss.detach())
        )


def _recite_whisper(model: Any, tok: BuiltTokenizer, steps: int) -> None:
    """The decoder learns to transcribe any audio (English, no timestamps) as the corpus's
    opening: trained on the encoder's outputs for silence and two noise levels, it leans on its
    own prefix, not on what the random encoder makes of the sound."""
    import numpy as np
    import torch
    from transformers import WhisperFeatureExtractor

    config = model.config
    special = tok.special
    prefix = [special[f"<|{t}|>"] for t in ("startoftranscript", "en", "transcribe")]
    prefix.append(special["<|notimestamps|>"])
    text = tok.tokenizer.encode(training_text(), add_special_tokens=False).ids
    seq = torch.tensor([prefix + text[: int(config.max_target_positions) - len(prefix)]])
    rate = 16000
    noise = np.random.default_rng(0).standard_normal(rate * 2).astype(np.float32)
    sounds = [np.zeros(rate, np.float32), 0.05 * noise, 0.3 * noise]
    features = WhisperFeatureExtractor(feature_size=int(config.num_mel_bins))
    mels = [features(a, sampling_rate=rate, return_tensors="np").input_features[0] for a in sounds]
    with torch.no_grad():
        encoded = model.model.encoder(torch.tensor(np.stack(mels))).last_hidden_state
    inputs = seq[:, :-1].expand(len(sounds), -1)
    labels = seq[:, 1:].expand(len(sounds), -1)
    opt = torch.optim.Adam(model.model.decoder.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(encoder_outputs=(encoded,), decoder_input_ids=inputs, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    if steps:
        log.debug("trained the decoder %d steps, last loss %.4f", steps, float(loss.detach()))


def _config(preset: presets.Preset, tok: BuiltTokenizer) -> Any:
    from transformers import AutoConfig

    cfg = dict(preset.config)
    model_type = cfg.pop("model_type")
    ids = tok.special
    if preset.family == "whisper":
        cfg.update(
            init_std=preset.init_std,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|endoftext|>"],
            pad_token_id=ids["<|endoftext|>"],
            decoder_start_token_id=ids["<|startoftranscript|>"],
        )
    else:
        cfg["initializer_range"] = preset.init_std
        cfg.setdefault("bos_token_id", ids[tok.bos] if tok.bos else ids[tok.eos[-1]])
        cfg.setdefault("eos_token_id", ids[tok.eos[0]])
        if tok.pad:
            cfg["pad_token_id"] = ids[tok.pad]
    return AutoConfig.for_model(model_type, **cfg)


def _model(preset: presets.Preset, config: Any) -> Any:
    from transformers import AutoModelForCausalLM, WhisperForConditionalGeneration

    if preset.family == "whisper":
        model = WhisperForConditionalGeneration(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    return model.eval()


def _save_tokenizer(tok: BuiltTokenizer, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    kw: dict[str, Any] = {"eos_token": tok.eos[0]}
    if tok.bos:
        kw["bos_token"] = tok.bos
    if tok.pad:
        kw["pad_token"] = tok.pad
    if tok.chat_template:
        kw["chat_template"] = tok.chat_template
    fast = PreTrainedTokenizerFast(tokenizer_object=tok.tokenizer, **kw)
    fast.save_pretrained(out)


def _generation_config(preset: presets.Preset, tok: BuiltTokenizer, config: Any) -> Any:
    from transformers import GenerationConfig

    ids = tok.special
    if preset.family != "whisper":
        return GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=[ids[e] for e in tok.eos],
            pad_token_id=ids[tok.pad] if tok.pad else None,
            do_sample=False,
        )
    langs = {
        s: i for s, i in ids.items() if len(s) <= 9 and s[2:-2].isalpha() and s[2:-2].islower()
    }
    langs = {s: i for s, i in langs.items() if s[2:-2] not in (*WHISPER_TASKS, "endoftext")}
    eot = ids["<|endoftext|>"]
    suppress = [ids[f"<|{t}|>"] for t in ("translate", "transcribe", "startoflm", "startofprev")]
    suppress += [ids["<|nospeech|>"]]
    return GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=config.max_target_positions,
        lang_to_id=langs,
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        suppress_tokens=suppress,
        begin_suppress_tokens=[220, eot],
        is_multilingual=True,
        forced_decoder_ids=None,
    )

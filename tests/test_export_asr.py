"""ASR artifacts from the tiny random-weight Whisper: graphs, quantization, feature constants."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

from runtime.manifest import load_manifest
from tests.artifacts import asr_artifact, hf_model


@pytest.mark.parametrize("quant", ["fp32", "fp16", "int8"])
def test_artifact_validates(quant: str) -> None:
    m = load_manifest(asr_artifact("tiny-whisper", quant))
    assert m.kind == "asr" and m.asr is not None
    assert m.validation is not None and m.validation.passed, m.validation
    assert set(m.graphs) == {"encoder", "decoder"}
    if quant == "fp32":
        assert m.validation.metrics["greedy_match"] == 1.0


def test_int8_quantizes_what_pays_and_records_it() -> None:
    m = load_manifest(asr_artifact("tiny-whisper", "int8"))
    assert m.asr is not None
    enc, dec = m.graphs["encoder"].quantization, m.graphs["decoder"].quantization
    layers_enc, layers_dec = m.asr.encoder_layers, m.asr.decoder_layers
    # encoder: q, k, v, o, fc1, fc2 per layer and the cross K/V of every decoder layer
    assert enc.ops["MatMulInteger"] == 6 * layers_enc + 2 * layers_dec
    assert enc.float_ops == {}
    # decoder: self q, k, v, o + cross q, o + fc1, fc2 per layer, and the tied head
    assert dec.ops == {"MatMulNBits": 8 * layers_dec + 1, "GatherBlockQuantized": 1}
    assert dec.float_ops == {}


def test_feature_constants_match_transformers() -> None:
    art = asr_artifact("tiny-whisper", "fp32")
    m = load_manifest(art)
    a = m.asr
    assert a is not None
    fe = WhisperFeatureExtractor.from_pretrained(hf_model("tiny-whisper"))
    assert (a.sample_rate, a.n_fft, a.hop_length, a.n_mels) == (
        fe.sampling_rate,
        fe.n_fft,
        fe.hop_length,
        fe.feature_size,
    )
    mel = np.load(art / a.mel_filters)
    assert mel.shape == (80, 201)
    np.testing.assert_array_equal(mel, np.asarray(fe.mel_filters, np.float32).T)
    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny-whisper"))
    gen = model.generation_config
    assert a.decoder_start_token_id == gen.decoder_start_token_id
    assert a.eos_token_id == model.config.eos_token_id
    assert a.language_token_ids == {k.strip("<|>"): v for k, v in gen.lang_to_id.items()}
    assert a.transcribe_token_id == gen.task_to_id["transcribe"]
    assert a.no_timestamps_token_id == gen.no_timestamps_token_id


def test_decoder_with_cache_matches_transformers_step_by_step() -> None:
    """Drive the two graphs with the manifest's names only; compare with the PyTorch model."""
    art = asr_artifact("tiny-whisper", "fp32")
    m = load_manifest(art)
    a = m.asr
    assert a is not None
    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny-whisper")).eval()
    feats = np.random.default_rng(0).standard_normal((1, a.n_mels, a.n_frames)).astype(np.float32)
    enc = ort.InferenceSession(str(art / m.graphs["encoder"].file))
    dec = ort.InferenceSession(str(art / m.graphs["decoder"].file))
    cross = dict(
        zip(m.graphs["encoder"].outputs, enc.run(None, {"input_features": feats}), strict=True)
    )
    hd = a.d_model // a.decoder_heads
    past_names = [n for n in m.graphs["decoder"].inputs if n.startswith("past.")]
    past = {n: np.zeros((1, a.decoder_heads, 0, hd), np.float32) for n in past_names}
    seq = [
        a.sot_token_id,
        a.language_token_ids["en"],
        a.transcribe_token_id,
        a.no_timestamps_token_id,
    ]
    feed = list(seq)
    for _ in range(6):
        out = dec.run(None, {"input_ids": np.array([feed], np.int64), **cross, **past})
        past = {p: v for p, v in zip(past_names, out[1:], strict=True)}
        with torch.no_grad():
            ref = model(
                input_features=torch.from_numpy(feats), decoder_input_ids=torch.tensor([seq])
            )
        np.testing.assert_allclose(out[0][0, -1], ref.logits[0, -1].numpy(), atol=1e-3)
        seq.append(int(out[0][0, -1].argmax()))
        feed = [seq[-1]]

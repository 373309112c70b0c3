"""ASR artifacts from the tiny random-weight Whisper: graphs, quantization, feature constants."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

from runtime.manifest import load_manifest
from tests.artifacts import asr_artifact, hf_model


@pytest.mark.parametrize(
    ("quant", "head", "decoder_head"),
    [
        ("fp32", None, "rescore8"),  # the default for fp32
        ("fp32", "fp32", "logits"),
        ("fp16", None, "logits"),
        ("int8", None, "logits"),
    ],
)
def test_artifact_validates_and_records_its_head(
    quant: str, head: str | None, decoder_head: str
) -> None:
    m = load_manifest(asr_artifact("tiny-whisper", quant, head=head))
    assert m.kind == "asr" and m.asr is not None
    assert m.validation is not None and m.validation.passed, m.validation
    assert set(m.graphs) == {"encoder", "decoder"}
    assert m.asr.extra["decoder_head"] == decoder_head
    outputs = set(m.graphs["decoder"].outputs)
    if decoder_head == "logits":
        assert "logits" in outputs and "token" not in outputs
    else:
        assert {"token", "candidates"} <= outputs and "logits" not in outputs
        assert "logit_mask" in m.graphs["decoder"].inputs
    if quant == "fp32":
        # logit parity on an fp32 head (built alongside for rescore8); greedy on the shipped graph
        assert m.validation.metrics["max_abs_logit_diff"] < 1e-2
        assert m.validation.metrics["greedy_match"] == 1.0


# the re-scoring head's token and candidate count (it also outputs its 8-bit scores)
OUT = ["token", "candidates"]


def test_int8_quantizes_what_pays_and_records_it() -> None:
    m = load_manifest(asr_artifact("tiny-whisper", "int8"))
    assert m.asr is not None
    enc, dec = m.graphs["encoder"].quantization, m.graphs["decoder"].quantization
    layers_enc, layers_dec = m.asr.encoder_layers, m.asr.decoder_layers
    # encoder: q, k, v, o, fc1, fc2 per layer and one MatMul for all layers' cross K/V
    assert enc.ops["MatMulInteger"] == 6 * layers_enc + 1
    assert enc.float_ops == {}
    # decoder: self q/k/v (packed), o + cross q, o + fc1, fc2 per layer, and the tied head
    assert dec.ops == {"MatMulNBits": 6 * layers_dec + 1, "GatherBlockQuantized": 1}
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
    """Drive the two graphs with the manifest's names and K/V layout only (one buffer per layer
    and kind bound as past and present); compare with the PyTorch model at every step."""
    art = asr_artifact("tiny-whisper", "fp32", head="fp32")  # reads the logits
    m = load_manifest(art)
    a = m.asr
    assert a is not None
    assert a.decoder_layout == "cross-kv-shared-buffer"
    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny-whisper")).eval()
    feats = np.random.default_rng(0).standard_normal((1, a.n_mels, a.n_frames)).astype(np.float32)
    enc = ort.InferenceSession(str(art / m.graphs["encoder"].file))
    dec = ort.InferenceSession(str(art / m.graphs["decoder"].file))
    cross = dict(
        zip(m.graphs["encoder"].outputs, enc.run(None, {"input_features": feats}), strict=True)
    )
    b = dec.io_binding()
    for name, value in cross.items():
        b.bind_cpu_input(name, value)
    for past in (n for n in m.graphs["decoder"].inputs if n.startswith("past.")):
        buf = ort.OrtValue.ortvalue_from_numpy(np.zeros(a.extra["kv_shape"], np.float32))
        b.bind_ortvalue_input(past, buf)
        b.bind_ortvalue_output(past.replace("past.", "present."), buf)
    b.bind_output("logits", "cpu")
    seq = [
        a.sot_token_id,
        a.language_token_ids["en"],
        a.transcribe_token_id,
        a.no_timestamps_token_id,
    ]
    feed, done = list(seq), 0
    for _ in range(6):
        s = len(feed)
        b.bind_cpu_input("input_ids", np.array([feed], np.int64))
        b.bind_cpu_input("position_ids", np.arange(done, done + s, dtype=np.int64)[None])
        b.bind_cpu_input("seqlens_k", np.array([done + s - 1], np.int32))
        b.bind_cpu_input("total_sequence_length", np.array(done + s, np.int32))
        dec.run_with_iobinding(b)
        logits = b.get_outputs()[-1].numpy()
        assert logits.shape == (1, 1, a.vocab_size)  # the last position only
        with torch.no_grad():
            ref = model(
                input_features=torch.from_numpy(feats), decoder_input_ids=torch.tensor([seq])
            )
        np.testing.assert_allclose(logits[0, -1], ref.logits[0, -1].numpy(), atol=1e-3)
        done += s
        seq.append(int(logits[0, -1].argmax()))
        feed = [seq[-1]]


def test_encoder_takes_fewer_frames() -> None:
    """The frame axis is symbolic: 10 s of features give 500 positions of cross K/V, equal to
    PyTorch's encoder run on the same frames with its positional table sliced alike."""
    art = asr_artifact("tiny-whisper", "fp32")
    m = load_manifest(art)
    a = m.asr
    assert a is not None and a.extra["trim"] is True
    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny-whisper")).eval()
    feats = np.random.default_rng(0).standard_normal((1, a.n_mels, 1000)).astype(np.float32)
    enc = ort.InferenceSession(str(art / m.graphs["encoder"].file))
    key = enc.run(None, {"input_features": feats})[0]
    e = model.model.encoder
    with torch.no_grad():
        x = torch.nn.functional.gelu(e.conv1(torch.from_numpy(feats)))
        x = torch.nn.functional.gelu(e.conv2(x)).permute(0, 2, 1)
        x = x + e.embed_positions.weight[: x.shape[1]]
        for layer in e.layers:
            x = layer(x, None, layer_head_mask=None)[0]
        h = e.layer_norm(x)
        k = model.model.decoder.layers[0].encoder_attn.k_proj(h)
    heads = a.decoder_heads
    ref = k.view(1, 500, heads, -1).transpose(1, 2).numpy()
    assert key.shape == ref.shape == (1, heads, 500, a.head_dim)
    np.testing.assert_allclose(key, ref, atol=1e-4)


def _head_session(table: np.ndarray) -> ort.InferenceSession:
    from export import asr_graphs

    model = asr_graphs.head_model(table)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _fp32_argmax(table: np.ndarray, h: np.ndarray, mask: np.ndarray) -> int:
    return int(np.argmax(h.reshape(-1) @ table.T + mask))


@pytest.mark.parametrize("kind", ["gaussian", "outliers", "whisper-like"])
def test_rescore_head_picks_the_fp32_argmax(kind: str) -> None:
    """The 8-bit head with fp32 re-scoring of the candidates returns the fp32 head's argmax on
    a seeded sweep of hidden states: random ones, scaled ones, and constructed near-ties far
    below the 8-bit error (a second row equal to the winner but for a perturbation that
    lowers its score by a hair), with suppression masks; a wrong bound would drop the winner."""
    rng = np.random.default_rng({"gaussian": 1, "outliers": 2, "whisper-like": 3}[kind])
    vocab, d = (4099, 384) if kind != "whisper-like" else (8192, 512)
    table = rng.standard_normal((vocab, d)).astype(np.float32) * 0.05
    if kind == "outliers":  # a few large weights per row stretch the 8-bit scales
        hit = rng.random(table.shape) < 0.01
        table[hit] *= 40
    if kind == "whisper-like":  # a shared direction, as a tied embedding has
        table += 0.02 * rng.standard_normal(d).astype(np.float32)
    sess = _head_session(table)
    suppressed = rng.choice(vocab, 60, replace=False)
    checked = 0
    for i in range(300):
        h = (rng.standard_normal(d) * (0.5 + 3 * rng.random())).astype(np.float32)
        mask = np.zeros(vocab, np.float32)
        if i % 3 == 0:
            mask[suppressed] = -np.inf
        if i % 2:  # near-tie (on the first 512 rows): row b = row a minus a hair along h
            t, mask = table[:512].copy(), mask[:512]
            a, b = rng.choice(np.flatnonzero(mask == 0), 2, replace=False)
            t_h = h @ t.T
            u = h / np.dot(h, h)
            t[a] += np.float32(float(t_h.max() - t_h[a]) + 1.0) * u  # row a now wins by 1.0
            gap = 1e-3 * (1 + abs(float(t[a] @ h)))
            t[b] = t[a] - np.float32(gap) * u
            token, count = _head_session(t).run(OUT, {"hidden": h[None, None], "logit_mask": mask})
            assert int(token[0]) == _fp32_argmax(t, h, mask) == a
            assert int(count) >= 2  # the two rows cannot be told apart at 8 bits
            checked += 1
            continue
        token, count = sess.run(OUT, {"hidden": h[None, None], "logit_mask": mask})
        assert int(token[0]) == _fp32_argmax(table, h, mask)
        assert 1 <= int(count) < vocab // 10
        checked += 1
    assert checked == 300


def test_rescore_head_ties_and_masks_like_numpy_argmax() -> None:
    """Exact ties go to the first index (numpy's argmax); a mask that allows a few tokens
    only (language detection) picks among those."""
    rng = np.random.default_rng(7)
    table = rng.standard_normal((1000, 64)).astype(np.float32)
    table[700] = table[300]
    h = (table[300] * 4).astype(np.float32)
    sess = _head_session(table)
    token, count = sess.run(
        OUT, {"hidden": h[None, None], "logit_mask": np.zeros(1000, np.float32)}
    )
    assert int(token[0]) == 300 and int(count) >= 2
    allowed = np.array([5, 17, 923])
    mask = np.full(1000, -np.inf, np.float32)
    mask[allowed] = 0
    token, _ = sess.run(OUT, {"hidden": h[None, None], "logit_mask": mask})
    assert int(token[0]) == int(allowed[np.argmax(table[allowed] @ h)])


def test_rescore_head_needs_fp32() -> None:
    from export.asr import AsrOptions
    from export.errors import ExportUsageError

    defaults = {}
    for quant in ("fp32", "fp16", "int8"):
        opts = AsrOptions(quant=quant)
        opts.check()
        defaults[quant] = opts.head
    assert defaults == {"fp32": "rescore8", "fp16": "fp32", "int8": "fp32"}
    with pytest.raises(ExportUsageError, match="--quant fp32"):
        AsrOptions(quant="int8", head="rescore8").check()
    with pytest.raises(ExportUsageError, match="choose one of"):
        AsrOptions(quant="fp32", head="int4").check()

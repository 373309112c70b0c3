"""`export_asr`: a Whisper-family model -> a validated ASR artifact folder.

    source -> load (PyTorch fp32) -> encoder.onnx (+ cross K/V) and decoder.onnx (self-attn KV)
           -> weights -> mel_filters.npy + tokenizer files -> validate vs PyTorch -> manifest

Quantization "pays" differently per graph (measured on the whisper-tiny shape): dynamic int8
(MatMulInteger) speeds the encoder's large batched MatMuls up 1.2-1.4x, while the one-token
decoder got slower with it (3.4 -> 5.8 ms per token), because quantizing the activations of a
single row costs more than it saves. So `int8` means: encoder dynamic int8, decoder weight-only
8-bit MatMulNBits with the tied embedding stored once (activations stay float). The manifest
records per graph the operators that really are quantized, counted in the saved graph.

The decoder's head: an fp32 export gets the re-scoring head by default (`head="rescore8"`: the
tied head read at 8 bits, the candidates within the error bound re-scored in fp32, so the token
is the fp32 head's argmax; it outputs that token, not logits); int8 and fp16 exports, and fp32
with `head="fp32"`, output logits. The manifest says which (`asr.extra["decoder_head"]`:
"rescore8" or "logits"); validation checks the logits of an fp32 head built alongside and the
greedy tokens of the shipped graph.

The manifest also carries everything the runtime needs to compute features and prompts
without transformers: sample rate, n_fft, hop, mel bins, the mel filter bank as a .npy file,
and the special, language and task token ids.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export import asr_graphs, asr_speech, budget, graphquant, source, validate
from export.errors import ExportError, ExportUsageError, ValidationFailed
from export.output import atomic_dir, check_target
from export.steps import Steps
from runtime.manifest import (
    AsrInfo,
    Graph,
    Manifest,
    Quantization,
    Source,
    TokenizerInfo,
    Validation,
    file_entry,
)

log = logging.getLogger(__name__)

QUANTS = ("int8", "fp16", "fp32")
# Cross K/V come out of the encoder; the decoder's self-attention K/V live in one buffer per
# layer and kind that serves as past and present (GroupQueryAttention writes in place).
DECODER_LAYOUT = "cross-kv-shared-buffer"
GREEDY_TOKENS = 32
# No real Whisper weights are available offline, so these come from tiny-whisper (random
# weights, the synthetic test audio): fp32 max|dlogit| 7e-06 and greedy 32/32; fp16 top-1
# 1.000 (max|dlogit| 0.008); int8 top-1 0.970 (max|dlogit| 0.21, cross K/V max diff 0.31).
# fp32 must reproduce PyTorch's greedy tokens exactly; the quantized bounds leave a margin
# under what was measured. Users with real checkpoints should expect higher agreement.
THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_logit_diff": 1e-2, "top1_agreement": 0.99, "greedy_match": 1.0},
    "fp16": {"top1_agreement": 0.95},
    "int8": {"top1_agreement": 0.85},
}
# Real weights are also checked on speech (export.asr_speech: three bundled espeak-ng clips,
# 35 words, the runtime engine against transformers' generate). fp32 must give transformers'
# tokens on every clip; the quantized bounds are on the WER of the artifact's text against
# transformers' text. Whisper tiny.en int8 measured 0.057 there (two words of 35, one clip)
# and 0.118 over the tests' 25 clips (BENCHMARKS.md "ASR on speech: Whisper tiny.en"); a
# broken quantization (the synthetic signal once let one through with 1 of 32 greedy tokens
# right) is far above 0.15.
SPEECH_THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"speech_exact": 1.0},
    "fp16": {"speech_wer": 0.10},
    "int8": {"speech_wer": 0.15},
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "preprocessor_config.json",
)


@dataclass
class AsrOptions:
    quant: str = "int8"
    validate: bool = True
    board: str | None = None
    force: bool = False
    # The decoder's output head; None: `default_head(quant)`. "fp32": logits out (its
    # weights quantized as `quant` says). "rescore8": the decoder reads the tied head at 8 bits
    # and re-scores in fp32 the tokens within the quantization error bound of the best,
    # returning the fp32 head's greedy token and no logits (asr_graphs._rescore_head); fp32
    # weights only. Tools that read logits (parity against transformers' logits, the arm64
    # reference) ask for head="fp32".
    head: str | None = None

    def check(self) -> None:
        if self.quant not in QUANTS:
            raise ExportUsageError(
                f"--quant {self.quant}: not available for ASR; choose one of {', '.join(QUANTS)}"
            )
        if self.head is None:
            self.head = default_head(self.quant)
        if self.head not in asr_graphs.HEADS:
            raise ExportUsageError(
                f"head {self.head!r}: choose one of {', '.join(asr_graphs.HEADS)}"
            )
        if self.head != "fp32" and self.quant != "fp32":
            raise ExportUsageError(
                f"head {self.head!r} re-scores against the fp32 table; use it with --quant fp32"
            )


def default_head(quant: str) -> str:
    """The re-scoring head for fp32 (the fp32 head's greedy tokens at a quarter of the head's
    bytes per token); the logits head otherwise: the int8 decoder already reads its tied head
    at 8 bits (MatMulNBits), and the re-scoring needs the fp32 table, which fp16 does not keep."""
    return "rescore8" if quant == "fp32" else "fp32"


def export_asr(spec: str, out: Path, opts: AsrOptions, steps: Steps | None = None) -> Manifest:
    steps = steps or Steps()
    opts.check()
    profile = None
    if opts.board:
        from board import profiles

        profile = profiles.find(opts.board)
    check_target(out, opts.force)
    src = source.resolve(spec, "asr")
    work = Path(tempfile.mkdtemp(prefix=".ocula-work-", dir=out.resolve().parent))
    try:
        with atomic_dir(out, opts.force) as tmp:
            with steps.run("load"):
                model, fe, hf_dir = _load(src, work)
            with steps.run("export (encoder + decoder)"):
                max_length = int(model.config.max_target_positions)
                graphquant.save(asr_graphs.encoder(model), work / "encoder.onnx")
                head = opts.head or default_head(opts.quant)
                dec = asr_graphs.decoder(model, max_length, head=head)
                graphquant.save(dec, work / "decoder.onnx")
                if opts.validate and head != "fp32":
                    # Logit parity is checked on the fp32 head; greedy on the shipped graph.
                    fp32_head = asr_graphs.decoder(model, max_length)
                    graphquant.save(fp32_head, work / "decoder-logits.onnx")
            with steps.run(f"weights ({opts.quant})"):
                graphs, files = _weights(work, tmp, opts.quant)
            for role, g in graphs.items():
                q = g.quantization
                steps.note(
                    f"{role}: quantized {q.ops or 'none'}, float MatMul {q.float_ops or 'none'}"
                )
            np.save(tmp / "mel_filters.npy", np.asarray(fe.mel_filters, np.float32).T.copy())
            tok_files = _copy(hf_dir, tmp)
            m = _manifest(src, tmp, model, fe, graphs, files, tok_files, head)
            if opts.validate:
                with steps.run("validate"):
                    logits = work / "decoder-logits.onnx"
                    m.validation = _validate(
                        model,
                        fe,
                        tmp,
                        m,
                        opts.quant,
                        logits if logits.exists() else None,
                        speech=not _random_weights(src),
                    )
                x = m.validation.metrics
                heard = (
                    f"; speech: {x['speech_exact']:.0%} of clips exact, token agreement "
                    f"{x['speech_token_agreement']:.3f}, WER vs transformers {x['speech_wer']:.3f}"
                    if "speech_wer" in x
                    else "; speech not checked (random weights)"
                )
                steps.note(
                    f"validation {'passed' if m.validation.passed else 'FAILED'}: "
                    f"cross K/V max diff {x['cross_kv_max_abs_diff']:.3g}, "
                    f"max|dlogit| {x['max_abs_logit_diff']:.3g}, top-1 {x['top1_agreement']:.3f}, "
                    f"greedy {x['greedy_matched']}/{x['greedy_tokens']}{heard}"
                )
                if not m.validation.passed:
                    raise ValidationFailed(
                        f"{spec}: the {opts.quant} ASR artifact fails validation "
                        f"({'; '.join(x['failures'])}); nothing was written; try --quant fp32"
                    )
            if profile is not None:
                m.extra["board_fit"] = budget.check(m, profile).as_dict()
            m.extra["timings_s"] = {k: round(v, 2) for k, v in steps.timings.items()}
            m.write(tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return m


def _load(src: source.Source, work: Path) -> tuple[Any, Any, Path]:
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    if src.kind == "ct2":
        from export import ctranslate2

        assert src.path is not None
        return ctranslate2.load_whisper(src.path, work)
    if src.kind == "gguf":
        raise ExportError(f"{src.spec}: GGUF is supported for LLMs only; give a Whisper folder")
    where = str(src.path) if src.path else src.spec
    try:
        model = WhisperForConditionalGeneration.from_pretrained(where, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as e:
        raise ExportError(f"{src.spec}: cannot load the model: {source.first_line(e)}") from e
    hf_dir = src.path if src.path else Path(source.snapshot(src.spec))
    if (hf_dir / "preprocessor_config.json").is_file():
        fe = WhisperFeatureExtractor.from_pretrained(str(hf_dir))
    else:
        fe = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    if fe.feature_size != model.config.num_mel_bins:
        raise ExportError(
            f"{src.spec}: preprocessor_config.json has {fe.feature_size} mel bins, the model "
            f"{model.config.num_mel_bins}"
        )
    return model.eval(), fe, hf_dir


def _weights(work: Path, tmp: Path, quant: str) -> tuple[dict[str, Graph], list[str]]:
    graphs: dict[str, Graph] = {}
    files: list[str] = []
    for role in ("encoder", "decoder"):
        g = graphquant.load(work / f"{role}.onnx")
        tied = role == "decoder"
        q = Quantization(scheme=quant)
        if quant == "int8" and role == "encoder":
            g = _dynamic_int8(g, work)
            q.bits = 8
        elif quant == "int8":
            g = graphquant.quantize(g, 8, 32, True, 4, tied)
            q.bits, q.block_size, q.symmetric, q.accuracy_level = 8, 32, True, 4
        else:
            pair = graphquant.find_tied(g, tied)
            if pair:
                graphquant.tie_float(g, *pair)
            if quant == "fp16":
                graphquant.to_fp16_storage(g)
                q.weights_dtype = "float16"
        q.ops, q.float_ops = graphquant.count_ops(g)
        saved = graphquant.save(g, tmp / f"{role}.onnx")
        files += saved
        graphs[role] = Graph(
            file=f"{role}.onnx",
            inputs=[i.name for i in g.graph.input],
            outputs=[o.name for o in g.graph.output],
            quantization=q,
            external_data=saved[1:],
        )
    return graphs, files


def _dynamic_int8(g: Any, work: Path) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = work / "enc-f32.onnx", work / "enc-int8.onnx"
    onnx.save_model(g, str(src))
    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=["MatMul"],
        weight_type=QuantType.QInt8,
        per_channel=False,
        # onnx's shape inference does not know onnxruntime's contrib ops (MultiHeadAttention,
        # BiasGelu), so the MatMuls after them have no inferred type: all activations are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return graphquant.load(dst)


def _copy(hf_dir: Path, tmp: Path) -> list[str]:
    files = []
    for name in TOKENIZER_FILES:
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, tmp / name)
            files.append(name)
    if "tokenizer.json" not in files:
        raise ExportError(f"{hf_dir}: no tokenizer.json; the runtime needs a fast tokenizer file")
    return files


def _token_ids(tmp: Path) -> dict[str, int]:
    tj = json.loads((tmp / "tokenizer.json").read_text())
    return {t["content"]: int(t["id"]) for t in tj.get("added_tokens", [])}


def _manifest(
    src: source.Source,
    tmp: Path,
    model: Any,
    fe: Any,
    graphs: dict[str, Graph],
    files: list[str],
    tok_files: list[str],
    head: str,
) -> Manifest:
    from importlib.metadata import version

    c = model.config
    gen = model.generation_config
    ids = _token_ids(tmp)
    lang = {k.strip("<|>"): int(v) for k, v in (getattr(gen, "lang_to_id", None) or {}).items()}
    tasks = getattr(gen, "task_to_id", None) or {}
    nospeech = ids.get("<|nospeech|>", ids.get("<|nocaptions|>"))
    forced = getattr(gen, "forced_decoder_ids", None) or []
    # English-only Whisper (`*.en`): generation_config says is_multilingual false; it has
    # no language or task tokens in its prompt, whatever its vocabulary holds.
    said = getattr(gen, "is_multilingual", None)
    multilingual = bool(lang or tasks) if said is None else bool(said)
    if not multilingual:
        lang, tasks = {}, {}
    asr = AsrInfo(
        architecture="whisper",
        encoder_layers=int(c.encoder_layers),
        decoder_layers=int(c.decoder_layers),
        encoder_heads=int(c.encoder_attention_heads),
        decoder_heads=int(c.decoder_attention_heads),
        d_model=int(c.d_model),
        head_dim=int(c.d_model) // int(c.decoder_attention_heads),
        vocab_size=int(c.vocab_size),
        n_mels=int(fe.feature_size),
        sample_rate=int(fe.sampling_rate),
        n_fft=int(fe.n_fft),
        hop_length=int(fe.hop_length),
        chunk_length_s=int(fe.chunk_length),
        n_samples=int(fe.n_samples),
        n_frames=int(fe.nb_max_frames),
        mel_filters="mel_filters.npy",
        max_target_positions=int(c.max_target_positions),
        decoder_start_token_id=int(c.decoder_start_token_id),
        eos_token_id=int(c.eos_token_id),
        pad_token_id=int(c.pad_token_id) if c.pad_token_id is not None else None,
        sot_token_id=int(c.decoder_start_token_id),
        transcribe_token_id=tasks.get("transcribe"),
        translate_token_id=tasks.get("translate"),
        no_timestamps_token_id=getattr(gen, "no_timestamps_token_id", None),
        no_speech_token_id=nospeech,
        language_token_ids=lang,
        suppress_tokens=list(getattr(gen, "suppress_tokens", None) or []),
        begin_suppress_tokens=list(getattr(gen, "begin_suppress_tokens", None) or []),
        decoder_layout=DECODER_LAYOUT,
        forced_decoder_ids=[list(x) for x in forced],
        multilingual=multilingual,
        language=None if multilingual else "en",
        extra={
            "features": "log-mel: reflect-padded STFT (hann, n_fft, hop), power, mel_filters @ "
            "power, log10(max(x, 1e-10)), max(x, x.max() - 8), (x + 4) / 4, padded or cut to "
            "n_samples",
            "mel_filters_shape": [int(fe.feature_size), int(fe.n_fft) // 2 + 1],
            "past": "past.{layer}.{kind}",
            "present": "present.{layer}.{kind}",
            "cross": "cross.{layer}.{kind}",
            # Past and present are one buffer of max_length rows (bind the same OrtValue to
            # both); feeds: input_ids, position_ids, seqlens_k (past + S - 1), total (past + S).
            "kv_shape": [
                1,
                int(c.decoder_attention_heads),
                int(c.max_target_positions),
                int(c.d_model) // int(c.decoder_attention_heads),
            ],
            "max_length": int(c.max_target_positions),
            # The decoder's output: "logits" [1, 1, vocab] (the runtime suppresses and takes
            # the argmax), or "rescore8": the greedy token under the input `logit_mask` (0 or
            # -inf per token), no logits (export.asr_graphs._rescore_head).
            "decoder_head": "logits" if head == "fp32" else head,
            # The encoder graph takes any even number of frames (the positional table is
            # sliced), so a runtime may encode short audio without padding it to the window.
            # Whisper itself was trained on full windows only and its output changes when
            # trimmed, so the runtime pads unless asked to trim (runtime.engine.asr).
            "trim": True,
        },
    )
    entries = [file_entry(tmp, f, "model" if f.endswith(".onnx") else "weights") for f in files]
    entries.append(file_entry(tmp, "mel_filters.npy", "mel_filters"))
    entries += [file_entry(tmp, f, "tokenizer") for f in tok_files]
    special = {k: v for k, v in _token_ids(tmp).items()}
    return Manifest(
        kind="asr",
        name=src.path.resolve().name if src.path else src.spec,
        source=Source(id=src.spec, format=src.kind, revision=src.revision, sha256=src.sha256),
        files=entries,
        graphs=graphs,
        tokenizer=TokenizerInfo(files=tok_files, special_tokens=special),
        asr=asr,
        created_by=f"ocula {version('ocula')}",
    )


def test_audio(sample_rate: int, seconds: float = 3.0) -> np.ndarray:
    """A fixed, speech-like test signal: gliding harmonics with syllable-rate bursts and noise."""
    rng = np.random.default_rng(1234)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    return (0.1 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _random_weights(src: source.Source) -> bool:
    """A random-weight preset (`ocula export random` marks its folders): it hears nothing."""
    return src.path is not None and (src.path / ".ocula-random").is_file()


def _validate(
    model: Any,
    fe: Any,
    tmp: Path,
    m: Manifest,
    quant: str,
    logits_graph: Path | None = None,
    speech: bool = True,
) -> Validation:
    import onnxruntime as ort
    import torch
    import transformers

    assert m.asr is not None
    a = m.asr
    t0 = time.perf_counter()
    audio = test_audio(a.sample_rate)
    feats = fe(audio, sampling_rate=a.sample_rate, return_tensors="np").input_features
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    enc = ort.InferenceSession(str(tmp / "encoder.onnx"), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(tmp / "decoder.onnx"), so, providers=["CPUExecutionProvider"])
    ldec = dec
    if logits_graph is not None:
        ldec = ort.InferenceSession(str(logits_graph), so, providers=["CPUExecutionProvider"])
    ck = enc.run(None, {"input_features": feats})
    x = torch.from_numpy(feats)
    with torch.no_grad():
        ref_ck = _reference_cross_kv(model, x)
    cross_diff = max(float(np.abs(p - q).max()) for p, q in zip(ck, ref_ck, strict=True))
    prompt = [a.sot_token_id]
    if "en" in a.language_token_ids:
        prompt.append(a.language_token_ids["en"])
    prompt += [t for t in (a.transcribe_token_id, a.no_timestamps_token_id) if t is not None]
    n = min(GREEDY_TOKENS, a.max_target_positions - len(prompt))
    with torch.no_grad():
        enc_out = model.model.encoder(x)
        seq = list(prompt)
        for _ in range(n):
            lg = model(encoder_outputs=enc_out, decoder_input_ids=torch.tensor([seq])).logits
            seq.append(int(lg[0, -1].argmax()))
        ref = (
            model(encoder_outputs=enc_out, decoder_input_ids=torch.tensor([seq])).logits[0].numpy()
        )
    run = _DecoderRun(ldec, a, ck)
    # Teacher-forced: the prompt in one run, then the reference tokens one per run.
    got = np.stack(
        [run(prompt, 0)] + [run([t], i) for i, t in enumerate(seq[len(prompt) : -1], len(prompt))]
    )
    grun = _DecoderRun(dec, a, ck) if ldec is not dec else run
    greedy = [grun.token(prompt, 0)]
    while len(greedy) < n:
        greedy.append(grun.token([greedy[-1]], len(prompt) + len(greedy) - 1))
    ref_greedy = seq[len(prompt) :]
    diff = next((i for i, (p, q) in enumerate(zip(ref_greedy, greedy, strict=True)) if p != q), n)
    ref = ref[len(prompt) - 1 : -1]
    metrics: dict[str, Any] = {
        "audio": "export.asr.test_audio (3 s synthetic voice)",
        "cross_kv_max_abs_diff": cross_diff,
        "positions": len(got),
        "max_abs_logit_diff": float(np.abs(got - ref).max()),
        "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean()),
        "greedy_tokens": n,
        "greedy_matched": diff,
        "greedy_match": float(diff == n),
    }
    table = THRESHOLDS
    if speech:
        metrics.update(asr_speech.check(model, fe, tmp, m))
        table = {q: {**THRESHOLDS[q], **SPEECH_THRESHOLDS[q]} for q in THRESHOLDS}
    else:
        metrics["speech"] = (
            "not checked: random weights hear nothing; shapes and logit parity on the "
            "synthetic signal only"
        )
    report = validate.judge(metrics, quant, table)
    metrics["failures"] = report.failures
    return Validation(
        passed=report.passed,
        reference=f"transformers {transformers.__version__}, torch {torch.__version__}, float32",
        metrics=metrics,
        thresholds=report.thresholds,
        driver="export.asr (onnxruntime, IO binding, KV cache in one buffer, greedy)",
        seconds=round(time.perf_counter() - t0, 2),
    )


def _reference_cross_kv(model: Any, features: Any) -> list[np.ndarray]:
    """PyTorch's cross-attention K and V of every decoder layer, [1, heads, T, head_dim]."""
    h = model.model.encoder(features).last_hidden_state
    heads = model.config.decoder_attention_heads
    out = []
    for layer in model.model.decoder.layers:
        for proj in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj):
            y = proj(h)
            out.append(y.view(1, y.shape[1], heads, -1).transpose(1, 2).numpy())
    return out


class _DecoderRun:
    """The decoder driven as the manifest says: one K/V buffer per layer and kind bound as both
    past and present, positions and lengths fed with every run."""

    def __init__(self, session: Any, a: AsrInfo, cross: list[np.ndarray]) -> None:
        cross_names, past_names, present_names = asr_graphs.names(a.decoder_layers)
        self.session = session
        self.binding = session.io_binding()
        shape = (1, a.decoder_heads, a.max_target_positions, a.d_model // a.decoder_heads)
        for name, value in zip(cross_names, cross, strict=True):
            self.binding.bind_cpu_input(name, value)
        import onnxruntime as ort

        for past, present in zip(past_names, present_names, strict=True):
            buf = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32))
            self.binding.bind_ortvalue_input(past, buf)
            self.binding.bind_ortvalue_output(present, buf)
        self.logits = np.zeros((1, 1, a.vocab_size), np.float32)
        self.tok = np.zeros(1, np.int64)
        self.rescore = "logit_mask" in {i.name for i in session.get_inputs()}
        if self.rescore:  # the re-scoring head: its greedy token, nothing suppressed
            self.binding.bind_cpu_input("logit_mask", np.zeros(a.vocab_size, np.float32))
            self.binding.bind_ortvalue_output("token", ort.OrtValue.ortvalue_from_numpy(self.tok))
            self.binding.bind_output("candidates", "cpu")
        else:
            out = ort.OrtValue.ortvalue_from_numpy(self.logits)
            self.binding.bind_ortvalue_output("logits", out)

    def __call__(self, ids: list[int], past: int) -> np.ndarray:
        """Last-position logits after feeding `ids` at positions past .. past + len(ids) - 1."""
        b, s = self.binding, len(ids)
        b.bind_cpu_input("input_ids", np.array([ids], np.int64))
        b.bind_cpu_input("position_ids", np.arange(past, past + s, dtype=np.int64)[None])
        b.bind_cpu_input("seqlens_k", np.array([past + s - 1], np.int32))
        b.bind_cpu_input("total_sequence_length", np.array(past + s, np.int32))
        self.session.run_with_iobinding(b)
        return self.logits[0, 0].copy()

    def token(self, ids: list[int], past: int) -> int:
        """The greedy token after feeding `ids` (the argmax of the last logits)."""
        logits = self(ids, past)
        return int(self.tok[0]) if self.rescore else int(logits.argmax())

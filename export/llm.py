"""`export_llm`: a decoder-only LLM (Qwen2, Qwen3, Llama) -> a validated artifact folder.

    source -> load (PyTorch fp32) -> graph: optimum (text-generation-with-past) | fused
           -> weights: int4 | int8 (MatMulNBits, tied embedding once) | fp16 | fp32
           -> tokenizer files -> validate vs PyTorch -> board budget -> manifest.json

Both graph paths write into the same temporary folder beside DIR and share the layout
(`model.onnx` [+ `model.onnx.data`], tokenizer files, `manifest.json`), the manifest, the
validation and the budget check; only the graph step and the IO facts differ. DIR is replaced
at the very end, and only when every check passed.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export import budget, graphquant, source, validate
from export.adapter import check_adapter, merge_lora
from export.choices import ACTIVATIONS, KV_DTYPES
from export.errors import ExportError, ExportUsageError, ValidationFailed
from export.output import atomic_dir, check_target
from export.steps import Steps
from runtime.manifest import (
    Graph,
    KvLayout,
    LlmInfo,
    Manifest,
    Quantization,
    Source,
    TokenizerInfo,
    Validation,
    file_entry,
)

log = logging.getLogger(__name__)

QUANTS = ("int4", "int8", "fp16", "fp32")
BITS = {"int4": 4, "int8": 8, "fp16": None, "fp32": None}
BLOCK_SIZES = (16, 32, 64, 128, 256)
GRAPHS = ("optimum", "fused")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
)


@dataclass
class LlmOptions:
    quant: str = "int4"
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    max_length: int = 2048
    # Bits of the embedding table (and the tied head that shares it). None: 8 for int4, as
    # `quant` otherwise. On SmolLM2 an 8-bit table took int4 perplexity from x1.247 of fp32 to
    # x1.140 and top-1 agreement from 0.635 to 0.695, for 14% more bytes (BENCHMARKS.md).
    embed_bits: int | None = None
    # The KV cache's type (fused graph): float16 halves its memory (BENCHMARKS.md, "KV cache").
    kv_dtype: str = "float32"
    # "q8": quantized matmuls take their input rounded as llama.cpp's CPU rounds it (Q8_0/Q8_1
    # blocks of 32 with fp16 scales; export/fused/llama_q8.py), for a GGUF's greedy tokens to
    # follow llama.cpp's on the same file (BENCHMARKS.md, "GGUF import").
    activations: str = "float"
    graph: str = "fused"
    validate: bool = True
    board: str | None = None
    force: bool = False
    # a PEFT LoRA adapter folder merged into the weights before export (export/adapter.py)
    adapter: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def table_bits(self) -> int | None:
        """Bits of the embedding table, or None when the weights stay float."""
        bits = BITS.get(self.quant)
        if not bits:
            return None
        return self.embed_bits or (8 if bits == 4 else bits)

    def check(self) -> None:
        if self.quant not in QUANTS:
            raise ExportUsageError(
                f"--quant {self.quant}: unknown; choose one of {', '.join(QUANTS)}"
            )
        if self.block_size not in BLOCK_SIZES:
            raise ExportUsageError(
                f"--block-size {self.block_size}: not allowed; choose one of "
                f"{', '.join(map(str, BLOCK_SIZES))}"
            )
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ExportUsageError(f"--accuracy-level {self.accuracy_level}: choose 0-4")
        if self.max_length < 32:
            raise ExportUsageError(f"--max-length {self.max_length}: must be at least 32")
        if self.embed_bits not in (None, 4, 8):
            raise ExportUsageError(f"--embed-bits {self.embed_bits}: choose 4 or 8")
        if self.graph not in GRAPHS:
            raise ExportUsageError(f"--graph {self.graph}: choose one of {', '.join(GRAPHS)}")
        if self.kv_dtype not in KV_DTYPES:
            raise ExportUsageError(
                f"--kv-dtype {self.kv_dtype}: choose one of {', '.join(KV_DTYPES)}"
            )
        if self.activations not in ACTIVATIONS:
            raise ExportUsageError(
                f"--activations {self.activations}: choose one of {', '.join(ACTIVATIONS)}"
            )
        if self.activations == "q8" and (
            self.graph != "fused" or not BITS.get(self.quant) or self.block_size != 32
        ):
            raise ExportUsageError(
                f"--activations q8 needs --graph fused, --quant int4 or int8 and --block-size 32 "
                f"(llama.cpp's blocks), not --graph {self.graph} --quant {self.quant} "
                f"--block-size {self.block_size}"
            )
        if self.kv_dtype != "float32" and self.graph != "fused":
            raise ExportUsageError(
                f"--kv-dtype {self.kv_dtype} needs --graph fused (optimum's graph keeps float32)"
            )


def export_llm(spec: str, out: Path, opts: LlmOptions, steps: Steps | None = None) -> Manifest:
    steps = steps or Steps()
    opts.check()
    profile = _profile(opts.board)
    check_target(out, opts.force)
    src = source.resolve(spec, "llm")
    if opts.adapter is not None:
        check_adapter(opts.adapter)
    work = Path(tempfile.mkdtemp(prefix=".ocula-work-", dir=out.resolve().parent))
    try:
        with atomic_dir(out, opts.force) as tmp:
            with steps.run("load"):
                model, hf_dir = source.load_llm(src, work)
            adapter = None
            if opts.adapter is not None:
                with steps.run("merge adapter"):
                    model, hf_dir, adapter = merge_lora(model, hf_dir, opts.adapter, work)
            cfg = model.config
            max_length = min(opts.max_length, int(cfg.max_position_embeddings))
            if max_length < opts.max_length:
                steps.note(
                    f"max length {max_length}: the model's max_position_embeddings "
                    f"(--max-length {opts.max_length} asked for more)"
                )
            if opts.graph == "fused":
                gguf = src.path if src.kind == "gguf" else None
                graph, info = _fused(hf_dir, tmp, opts, max_length, steps, gguf)
            else:
                graph, info = _optimum(model, work, tmp, opts, max_length, steps)
            tok = _copy_tokenizer(hf_dir, tmp)
            validate.check_tokenizer(tmp, spec)
            m = _manifest(src, tmp, cfg, graph, info, tok, max_length, hf_dir)
            if adapter is not None:
                m.extra["adapter"] = adapter
            if opts.validate:
                with steps.run("validate"):
                    m.validation = _checked_run(
                        lambda: _validate(model, tmp, m, opts, info), spec, opts, m
                    )
                steps.note(_summary(m.validation))
                if not m.validation.passed:
                    fails = "; ".join(m.validation.metrics.get("failures", []))
                    hint = fidelity_hint(src, model, hf_dir, work, opts, max_length, steps)
                    raise ValidationFailed(
                        f"{spec}: the {opts.quant} artifact fails validation ({fails}); "
                        f"nothing was written; {hint}"
                    )
            if profile is not None:
                fit = budget.check(m, profile, max_length)
                m.extra["board_fit"] = fit.as_dict()
            m.extra["timings_s"] = {k: round(v, 2) for k, v in steps.timings.items()}
            m.write(tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return m


def _checked_run(run: Any, spec: str, opts: LlmOptions, m: Manifest) -> Any:
    """`run()`, with onnxruntime refusing the graph turned into one line: a kernel
    precondition the builder does not know (export/fused checks the known ones first)."""
    import onnxruntime as ort

    fails: tuple[type[BaseException], ...] = (
        RuntimeError,
        ort.capi.onnxruntime_pybind11_state.Fail,
    )
    try:
        return run()
    except fails as exc:
        first = str(exc).split("Status Message:")[-1].strip().splitlines()[0][:300]
        i = m.llm
        shape = (
            f"{i.layers} layers, hidden {i.hidden_size}, {i.heads} heads / {i.kv_heads} KV "
            f"heads of {i.head_dim}, vocab {i.vocab_size}"
            if i is not None
            else "?"
        )
        way = "use --graph optimum" if opts.graph == "fused" else "try --graph fused"
        raise ExportError(
            f"{spec}: onnxruntime cannot run the {opts.graph} graph of this shape ({shape}): "
            f"{first}; {way}"
        ) from exc


def fidelity_hint(
    src: source.Source,
    model: Any,
    hf_dir: Path,
    work: Path,
    opts: LlmOptions,
    max_length: int,
    steps: Steps,
) -> str:
    """What to try after a failed validation. A fused int4/int8 graph computes MatMulNBits
    with int8 activations (--accuracy-level 4); when the same weights pass with float
    activations, those were the cause, and the hint says so."""
    default = "try a higher --quant or a smaller --block-size"
    if opts.graph != "fused" or not BITS.get(opts.quant) or opts.accuracy_level == 0:
        return default
    from dataclasses import replace

    trial = replace(opts, accuracy_level=0)
    folder = work / "accuracy-level-0"
    folder.mkdir()
    with steps.run("validate (--accuracy-level 0, to find the cause)"):
        graph, info = _fused(hf_dir, folder, trial, max_length, steps)
        tok = _copy_tokenizer(hf_dir, folder)
        m = _manifest(
            src,
            folder,
            model.config,
            graph,
            info,
            tok,
            max_length,
            hf_dir,
        )
        v = _validate(model, folder, m, trial, info)
    if v.passed:
        return (
            f"with --accuracy-level 0 (float activations in MatMulNBits instead of int8) the "
            f"same weights pass (ppl x{v.metrics['ppl_ratio']:.3f}, top-1 "
            f"{v.metrics['top1_agreement']:.3f}): the int8 activations are the cause; export "
            "with --accuracy-level 0, or a higher --quant"
        )
    return default + " (--accuracy-level 0 fails too: the weights' quantization is the cause)"


def _profile(name: str | None) -> Any:
    if name is None:
        return None
    from board import profiles

    return profiles.find(name)


def _optimum(
    model: Any, work: Path, tmp: Path, opts: LlmOptions, max_length: int, steps: Steps
) -> tuple[Graph, dict[str, Any]]:
    from optimum.exporters.onnx import onnx_export_from_model

    onnx_dir = work / "onnx"
    with steps.run("export (optimum)"):
        try:
            onnx_export_from_model(
                model, onnx_dir, task="text-generation-with-past", do_validation=False
            )
        except RuntimeError as e:
            # optimum's post-processing (tied-weight dedup) builds one protobuf and fails
            # above 2 GB (qwen3-0.6b in fp32); the tie is handled here anyway.
            if "post-processing" not in str(e):
                raise
            log.info("optimum post-processing failed (%s); exporting without it", e)
            shutil.rmtree(onnx_dir, ignore_errors=True)
            onnx_export_from_model(
                model,
                onnx_dir,
                task="text-generation-with-past",
                do_validation=False,
                no_post_process=True,
            )
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    with steps.run(f"weights ({opts.quant})"):
        g = graphquant.load(onnx_dir / "model.onnx")
        bits = BITS[opts.quant]
        if bits:
            g = graphquant.quantize(
                g,
                bits,
                opts.block_size,
                opts.symmetric,
                opts.accuracy_level,
                tied,
                opts.table_bits,
            )
        else:
            pair = graphquant.find_tied(g, tied)
            if pair:
                graphquant.tie_float(g, *pair)
            if opts.quant == "fp16":
                graphquant.to_fp16_storage(g)
        files = graphquant.save(g, tmp / "model.onnx")
    q_ops, f_ops = graphquant.count_ops(g)
    steps.note(
        f"quantized operators: {q_ops or 'none'}; float weight MatMul/Gemm: {f_ops or 'none'}"
    )
    inputs = [i.name for i in g.graph.input]
    outputs = [o.name for o in g.graph.output]
    quant = Quantization(
        scheme=opts.quant,
        bits=bits,
        block_size=opts.block_size if bits else None,
        symmetric=opts.symmetric if bits else None,
        accuracy_level=opts.accuracy_level if bits else None,
        embed_bits=opts.table_bits,
        ops=q_ops,
        float_ops=f_ops,
        weights_dtype="float16" if opts.quant == "fp16" else "float32",
    )
    graph = Graph(
        file="model.onnx",
        inputs=inputs,
        outputs=outputs,
        quantization=quant,
        external_data=files[1:],
    )
    return graph, {"kind": "optimum", "files": files}


def _fused(
    hf_dir: Path,
    tmp: Path,
    opts: LlmOptions,
    max_length: int,
    steps: Steps,
    gguf: Path | None = None,
) -> tuple[Graph, dict[str, Any]]:
    from export.fused import build

    with steps.run(f"export (fused, {opts.quant})"):
        info = build(
            hf_dir,
            tmp,
            quant=opts.quant,
            block_size=opts.block_size,
            symmetric=opts.symmetric,
            accuracy_level=opts.accuracy_level,
            max_length=max_length,
            embed_quant=f"int{opts.table_bits}" if opts.table_bits else None,
            gguf=gguf,
            kv_dtype=opts.kv_dtype,
            activations=opts.activations,
        )
    if info.source_blocks is not None:
        steps.note(_blocks_note(info.source_blocks))
    import onnx

    g = onnx.load(str(tmp / info.onnx_file), load_external_data=True)
    q_ops, f_ops = graphquant.count_ops(g)
    quant = Quantization(
        scheme=opts.quant,
        bits=info.bits,
        block_size=info.block_size,
        symmetric=info.symmetric,
        accuracy_level=info.accuracy_level,
        embed_bits=opts.table_bits,
        ops=q_ops,
        float_ops=f_ops,
        weights_dtype="float16" if opts.quant == "fp16" else "float32",
        source_blocks=info.source_blocks,
    )
    graph = Graph(
        file=info.onnx_file,
        inputs=list(info.inputs),
        outputs=list(info.outputs),
        quantization=quant,
        external_data=[f for f in info.files if f != info.onnx_file],
        extra={
            "io": {"inputs": info.inputs, "outputs": info.outputs},
            "feeds": info.feeds,
            "logits": info.logits,
            "batch_size": info.batch_size,
            # how quantized matmuls round their input (export/fused/llama_q8.py)
            "activations": opts.activations,
        }
        | ({"embedding": info.embedding} if info.embedding else {}),
    )
    return graph, {"kind": "fused", "files": list(info.files), "info": info}


def _blocks_note(blocks: dict[str, Any]) -> str:
    """One line on what became of a GGUF's blocks: kept exactly, or re-quantized (and why)."""
    exact, redone = blocks["exact"], blocks["requantized"]
    types = ", ".join(f"{n} {t}" for t, n in blocks["file_types"].items())
    line = f"GGUF blocks ({types}): {len(exact)} weights kept exactly"
    if redone:
        first = next(iter(redone.items()))
        line += (
            f"; {len(redone)} RE-QUANTIZED, not the file's own weights (e.g. {first[0]}: "
            f"{first[1]})"
        )
    return line


def _copy_tokenizer(hf_dir: Path, tmp: Path) -> list[str]:
    if not (hf_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        try:
            AutoTokenizer.from_pretrained(str(hf_dir)).save_pretrained(str(tmp / ".tok"))
        except Exception as e:  # transformers raises many kinds here
            raise ExportUsageError(f"{hf_dir}: no usable tokenizer ({e})") from e
        hf_dir = tmp / ".tok"
    files = []
    for name in TOKENIZER_FILES:
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, tmp / name)
            files.append(name)
    shutil.rmtree(tmp / ".tok", ignore_errors=True)
    return files


def _chat_template(tmp: Path) -> str | None:
    if (tmp / "chat_template.jinja").is_file():
        return (tmp / "chat_template.jinja").read_text()
    cfg = tmp / "tokenizer_config.json"
    if cfg.is_file():
        t = json.loads(cfg.read_text()).get("chat_template")
        return t if isinstance(t, str) else None
    return None


def _special_tokens(tmp: Path) -> dict[str, int]:
    tj = json.loads((tmp / "tokenizer.json").read_text())
    return {t["content"]: int(t["id"]) for t in tj.get("added_tokens", []) if t.get("special")}


def _eos_ids(cfg: Any, hf_dir: Path) -> list[int]:
    ids: list[int] = []
    gen = hf_dir / "generation_config.json"
    candidates: list[Any] = []
    if gen.is_file():
        candidates.append(json.loads(gen.read_text()).get("eos_token_id"))
    candidates.append(cfg.eos_token_id)
    for c in candidates:
        for i in c if isinstance(c, list) else [c]:
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    return ids


def _manifest(
    src: source.Source,
    tmp: Path,
    cfg: Any,
    graph: Graph,
    info: dict[str, Any],
    tok_files: list[str],
    max_length: int,
    hf_dir: Path,
) -> Manifest:
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    if info["kind"] == "fused":
        fi = info["info"]
        kv = KvLayout(
            shape=list(fi.kv.shape),
            dtype=fi.kv.dtype,
            past=fi.kv.past,
            present=fi.kv.present,
            shared_buffer=True,
            kinds=list(fi.kv.kinds),
        )
        names: dict[str, Any] = {"attention_mask": None, "position_ids": None}
    else:
        kv = KvLayout(
            shape=["batch", kv_heads, "past", head_dim],
            dtype="float32",
            past="past_key_values.{layer}.{kind}",
            present="present.{layer}.{kind}",
            shared_buffer=False,
        )
        names = {}
    files = [
        file_entry(tmp, f, "model" if f.endswith(".onnx") else "weights") for f in info["files"]
    ]
    files += [file_entry(tmp, f, "tokenizer") for f in tok_files]
    rope = getattr(cfg, "rope_scaling", None)
    llm = LlmInfo(
        architecture=str(cfg.model_type),
        graph_kind=info["kind"],
        layers=int(cfg.num_hidden_layers),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        hidden_size=int(cfg.hidden_size),
        vocab_size=int(cfg.vocab_size),
        max_length=max_length,
        eos_token_ids=_eos_ids(cfg, hf_dir),
        bos_token_id=cfg.bos_token_id if isinstance(cfg.bos_token_id, int) else None,
        pad_token_id=cfg.pad_token_id if isinstance(cfg.pad_token_id, int) else None,
        kv=kv,
        tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        rope_theta=float(getattr(cfg, "rope_theta", 10000.0)),
        rope_scaling=dict(rope) if isinstance(rope, dict) else None,
        intermediate_size=int(cfg.intermediate_size),
        **names,
    )
    from importlib.metadata import version

    return Manifest(
        kind="llm",
        name=_name(src),
        source=Source(id=src.spec, format=src.kind, revision=src.revision, sha256=src.sha256),
        files=files,
        graphs={"decoder": graph},
        tokenizer=TokenizerInfo(
            files=tok_files, chat_template=_chat_template(tmp), special_tokens=_special_tokens(tmp)
        ),
        llm=llm,
        created_by=f"ocula {version('ocula')}",
    )


def _name(src: source.Source) -> str:
    if src.path is not None:
        return src.path.stem if src.kind == "gguf" else src.path.resolve().name
    return src.spec


def _validate(
    model: Any, tmp: Path, m: Manifest, opts: LlmOptions, info: dict[str, Any]
) -> Validation:
    import time

    import torch
    import transformers

    assert m.llm is not None
    t0 = time.perf_counter()
    ids = validate.passage_ids(tmp, m.llm.max_length - validate.GREEDY_TOKENS)
    art = validate.RuntimeLM(tmp, m)
    eos = frozenset(m.llm.eos_token_ids)
    metrics = validate.compare(validate.TorchLM(model), art, ids, eos)
    if not _is_random(m):
        validate.check_source(metrics["ppl_reference"], m.source.id)
    driver = "runtime.engine.llm (Llm + runner, the device path)"
    # An fp16 KV cache rounds every attention input to fp16, as fp16 weights round the
    # matmuls: float weights over it are held to fp16's bounds (SmolLM2 fp32 weights with an
    # fp16 cache: max |dlogit| 0.03, above fp32's 0.01).
    scheme = "fp16" if opts.quant == "fp32" and opts.kv_dtype == "float16" else opts.quant
    report = validate.judge(metrics, scheme)
    metrics["failures"] = report.failures
    return Validation(
        passed=report.passed,
        reference=f"transformers {transformers.__version__}, torch {torch.__version__}, float32",
        metrics=metrics,
        thresholds=report.thresholds,
        driver=driver,
        seconds=round(time.perf_counter() - t0, 2),
    )


def _is_random(m: Manifest) -> bool:
    """A random-weight preset (`ocula export random`), whose perplexity means nothing."""
    path = Path(m.source.id)
    return m.source.format == "random" or (path.is_dir() and (path / ".ocula-random").is_file())


def _summary(v: Validation) -> str:
    x = v.metrics
    return (
        f"validation {'passed' if v.passed else 'FAILED'}: max|dlogit| {x['max_abs_logit_diff']:.3g}, "
        f"top-1 {x['top1_agreement']:.3f}, ppl {x['ppl_artifact']:.2f} vs {x['ppl_reference']:.2f} "
        f"(x{x['ppl_ratio']:.3f}) over {x['positions']} tokens; "
        + validate.greedy_words(x["greedy_matched"], x["greedy_tokens"])
    )

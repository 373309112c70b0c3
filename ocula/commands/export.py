"""`ocula export random | llm | asr | vad | vision`: models -> verified ONNX artifacts.

The handlers parse options, show progress on stderr and print a summary; the work is in
`export/`. Heavy imports (torch, transformers, optimum) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ocula.argtypes import integer, out_dir, text

QUANTS_LLM = ("int4", "int8", "fp16", "fp32")
QUANTS_ASR = ("int8", "fp16", "fp32")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="turn models into quantized, validated ONNX artifacts",
        description="Export models to Ocula artifacts (manifest.json + ONNX + tokenizer).",
    )
    cmds = p.add_subparsers(dest="export_command", metavar="WHAT")
    cmds.required = True

    rnd = cmds.add_parser(
        "random",
        parents=[common],
        help="write a random-weight Hugging Face model of a real architecture (offline)",
        description="Random weights, real architecture and tokenizer style; deterministic per seed.",
    )
    from export.presets import PRESETS

    rnd.add_argument(
        "--preset",
        required=True,
        choices=list(PRESETS),
        metavar="NAME",
        help=f"one of: {', '.join(PRESETS)}",
    )
    rnd.add_argument("--out", required=True, type=out_dir, metavar="DIR")
    rnd.add_argument("--seed", type=integer(0, 2**32 - 1), default=0)
    rnd.add_argument("--force", action="store_true", help="replace DIR even if it is not ours")
    rnd.set_defaults(func=_random)

    _register_models(cmds, common)
    _register_packaged(cmds, common)


def _register_models(cmds: Any, common: argparse.ArgumentParser) -> None:
    llm = cmds.add_parser(
        "llm",
        parents=[common],
        help="export a decoder-only LLM (Qwen2, Qwen3, Llama) to a validated artifact",
        description="SOURCE is a Hugging Face folder, a .gguf file, or a hub id (online only). "
        "Weight-only MatMulNBits quantization; validation against PyTorch is on by default.",
    )
    llm.add_argument("source", type=text, metavar="SOURCE")
    llm.add_argument("--out", required=True, type=out_dir, metavar="DIR")
    llm.add_argument(
        "--quant",
        default="int4",
        help=f"{' | '.join(QUANTS_LLM)} (default int4)",
    )
    llm.add_argument(
        "--block-size", type=integer(1, 4096), default=32, help="int4/int8 block: 32 | 64 | 128"
    )
    llm.add_argument("--asymmetric", action="store_true", help="int4/int8 with zero points")
    llm.add_argument(
        "--accuracy-level",
        type=integer(0, 4),
        default=4,
        help="MatMulNBits compute: 4 = int8 (CPU), 0 = fp32",
    )
    llm.add_argument(
        "--max-length",
        type=integer(1, 1 << 20),
        default=2048,
        help="tokens of context (default 2048; at most the model's own)",
    )
    llm.add_argument(
        "--kv-dtype",
        default="float32",
        help="float32 (default) | float16: the KV cache's type; float16 halves its memory and "
        "runs attention in fp16 (fused graph only)",
    )
    llm.add_argument(
        "--activations",
        default="float",
        help="float (default) | q8: round each quantized matmul's input as llama.cpp's CPU "
        "does (int8 blocks of 32, fp16 scales), so a GGUF's greedy tokens follow llama.cpp's",
    )
    llm.add_argument(
        "--embed-bits",
        type=integer(2, 16),
        default=None,
        help="int4/int8: bits of the embedding table and the tied head that shares it "
        "(default 8 for int4, 8 for int8)",
    )
    # fused is the fast path (BENCHMARKS.md); on SmolLM2 int4 it validates at ppl x1.133 of fp32
    llm.add_argument(
        "--graph",
        default="fused",
        help="fused (default: Ocula's graph of onnxruntime contrib ops) | optimum (reference)",
    )
    llm.add_argument(
        "--adapter",
        type=Path,
        metavar="DIR",
        help="a PEFT LoRA adapter folder to merge into the weights first (a fine-tuned model)",
    )
    _common_model_args(llm)
    llm.set_defaults(func=_llm)

    asr = cmds.add_parser(
        "asr",
        parents=[common],
        help="export a Whisper-family ASR model to a validated artifact",
        description="Encoder, decoder with self-attention KV cache, cross-attention K/V once "
        "per utterance; feature-extraction constants in the manifest.",
    )
    asr.add_argument(
        "source",
        type=text,
        metavar="SOURCE",
        help="a Hugging Face Whisper folder, a CTranslate2 / faster-whisper folder (model.bin), "
        "or a hub id (online only)",
    )
    asr.add_argument("--out", required=True, type=out_dir, metavar="DIR")
    asr.add_argument("--quant", default="int8", help=f"{' | '.join(QUANTS_ASR)} (default int8)")
    asr.add_argument(
        "--head",
        default=None,
        choices=("fp32", "rescore8"),
        help="decoder output head (default: rescore8 with --quant fp32, fp32 otherwise). "
        "rescore8 (--quant fp32 only): the tied head read at 8 bits, the tokens within the "
        "error bound re-scored in fp32, so the greedy tokens equal the fp32 head's at fewer "
        "bytes per token; it outputs the greedy token, no logits. fp32: logits out, for tools "
        "that read them. The manifest records it (asr.extra.decoder_head: rescore8 | logits)",
    )
    _common_model_args(asr)
    asr.set_defaults(func=_asr)


def _common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", metavar="PROFILE", help="check the fit to a board's budget")
    p.add_argument("--no-validate", action="store_true", help="skip the parity check (not advised)")
    p.add_argument("--force", action="store_true", help="replace DIR even if it is not an artifact")


def _quiet_libraries(verbose: int) -> None:
    """torch's tracer and transformers warn at length about things that are fine here."""
    if verbose > 1:
        return
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("transformers", "optimum", "torch", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _llm(args: argparse.Namespace) -> int:
    _quiet_libraries(args.verbose)
    from export.llm import LlmOptions, export_llm
    from export.steps import Steps

    opts = LlmOptions(
        quant=args.quant,
        block_size=args.block_size,
        symmetric=not args.asymmetric,
        accuracy_level=args.accuracy_level,
        max_length=args.max_length,
        embed_bits=args.embed_bits,
        kv_dtype=args.kv_dtype,
        activations=args.activations,
        graph=args.graph,
        validate=not args.no_validate,
        board=args.board,
        force=args.force,
        adapter=args.adapter,
    )
    steps = Steps(_reporter(args.quiet > 0))
    t0 = time.perf_counter()
    m = export_llm(args.source, args.out, opts, steps)
    _done(args.out, m, steps, time.perf_counter() - t0)
    return 0


def _asr(args: argparse.Namespace) -> int:
    _quiet_libraries(args.verbose)
    from export.asr import AsrOptions, export_asr
    from export.steps import Steps

    opts = AsrOptions(
        quant=args.quant,
        validate=not args.no_validate,
        board=args.board,
        force=args.force,
        head=args.head,
    )
    steps = Steps(_reporter(args.quiet > 0))
    t0 = time.perf_counter()
    m = export_asr(args.source, args.out, opts, steps)
    _done(args.out, m, steps, time.perf_counter() - t0)
    head = m.asr.extra.get("decoder_head") if m.asr else None
    if head == "rescore8":
        print("  decoder head  rescore8 (greedy token out, no logits; --head fp32 for logits)")
    elif head:
        print(f"  decoder head  {head}")
    return 0


def _done(out: Path, m: Any, steps: Any, total: float) -> None:
    mb = m.total_bytes / (1 << 20)
    quant = ", ".join(
        f"{role}: {g.quantization.scheme} {g.quantization.ops or ''}".rstrip()
        for role, g in m.graphs.items()
    )
    print(f"wrote {out}: {m.kind} {m.name}, {mb:.1f} MiB, {len(m.files)} files")
    print(f"  quantization  {quant}")
    if m.validation is not None:
        x = m.validation.metrics
        print(
            f"  validation    {'passed' if m.validation.passed else 'FAILED'}: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in x.items() if k != "failures")
        )
    else:
        print("  validation    skipped (--no-validate)")
    if "board_fit" in m.extra:
        f = m.extra["board_fit"]
        print(
            f"  board {f['board']}   artifact {f['artifact_mb']}/{f['max_artifact_mb']} MiB, "
            f"memory {f['rss_mb']}/{f['max_rss_mb']} MiB"
        )
    times = ", ".join(f"{k} {v:.1f} s" for k, v in steps.timings.items())
    print(f"  timings       {times}; total {total:.1f} s")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _register_packaged(cmds: Any, common: argparse.ArgumentParser) -> None:
    for kind, help_text in (
        ("vad", "package the Silero VAD ONNX model as an artifact"),
        ("vision", "package the PP-OCR det/rec/cls ONNX models as an artifact"),
    ):
        c = cmds.add_parser(kind, parents=[common], help=help_text, description=help_text)
        c.add_argument("--out", required=True, type=out_dir, metavar="DIR")
        c.add_argument("--force", action="store_true", help="replace DIR even if it is not ours")
        c.set_defaults(func=_packaged, kind=kind)


def _packaged(args: argparse.Namespace) -> int:
    from export.packaged import export_packaged

    t0 = time.perf_counter()
    out = export_packaged(args.kind, args.out, args.force)
    print(f"wrote {out} ({args.kind}) in {time.perf_counter() - t0:.1f} s")
    return 0


def _random(args: argparse.Namespace) -> int:
    _quiet_libraries(args.verbose)
    from export.random import make_random

    t0 = time.perf_counter()
    with _status(f"building {args.preset} (seed {args.seed})"):
        make_random(args.preset, args.out, seed=args.seed, force=args.force)
    print(f"wrote {args.out} ({args.preset}, seed {args.seed}) in {time.perf_counter() - t0:.1f} s")
    return 0


def _status(text: str) -> Any:
    from rich.console import Console

    return Console(stderr=True).status(text)


def _reporter(quiet: bool) -> Any:
    """A progress reporter for `export.steps.Steps`: a spinner per step, a line when done."""
    from rich.console import Console

    console = Console(stderr=True)
    state: dict[str, Any] = {}

    def report(event: str, name: str, seconds: float) -> None:
        if quiet and event != "note":
            return
        if event == "start":
            st = console.status(f"{name}...")
            st.start()
            state[name] = st
        elif event == "done":
            st = state.pop(name, None)
            if st is not None:
                st.stop()
            console.print(f"  {name}: {seconds:.1f} s", highlight=False, soft_wrap=True)
        else:
            console.print(f"  {name}", highlight=False, soft_wrap=True)
        sys.stderr.flush()

    return report

"""`ocula export random | llm | asr | vad | vision`: models -> verified ONNX artifacts.

The handlers parse options, show progress on stderr and print a summary; the work is in
`export/`. Heavy imports (torch, transformers, optimum) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

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
    rnd.add_argument("--out", required=True, type=Path, metavar="DIR")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.add_argument("--force", action="store_true", help="replace DIR even if it is not ours")
    rnd.set_defaults(func=_random)

    _register_models(cmds, common)
    _register_packaged(cmds, common)


def _register_models(cmds: Any, common: argparse.ArgumentParser) -> None:
    """`export llm` and `export asr`: added once the pipeline module exists."""
    if importlib.util.find_spec("export.pipeline") is None:
        return
    from export import pipeline

    pipeline.register_cli(cmds, common, _reporter)


def _register_packaged(cmds: Any, common: argparse.ArgumentParser) -> None:
    if importlib.util.find_spec("export.packaged") is None:
        return
    for kind, help_text in (
        ("vad", "package the Silero VAD ONNX model as an artifact"),
        ("vision", "package the PP-OCR det/rec/cls ONNX models as an artifact"),
    ):
        c = cmds.add_parser(kind, parents=[common], help=help_text, description=help_text)
        c.add_argument("--out", required=True, type=Path, metavar="DIR")
        c.add_argument("--force", action="store_true", help="replace DIR even if it is not ours")
        c.set_defaults(func=_packaged, kind=kind)


def _packaged(args: argparse.Namespace) -> int:
    from export.packaged import export_packaged

    t0 = time.perf_counter()
    out = export_packaged(args.kind, args.out, args.force)
    print(f"wrote {out} ({args.kind}) in {time.perf_counter() - t0:.1f} s")
    return 0


def _random(args: argparse.Namespace) -> int:
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
            console.print(f"  {name}: {seconds:.1f} s", highlight=False)
        else:
            console.print(f"  {name}", highlight=False)
        sys.stderr.flush()

    return report

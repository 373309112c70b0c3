"""`ocula flash BUNDLE --port PORT [--json]`: delta, resumable, verified, A/B flashing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ocula.argtypes import integer, port


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "flash",
        parents=[common],
        help="flash a bundle to a board (delta, resumable, A/B with rollback)",
        description="Send only the chunks the board lacks, install them into the inactive slot, "
        "restart into it and confirm it once its health check passes; the board rolls back by "
        "itself otherwise. PORT is a serial device, sim://NAME, rfc2217://HOST:PORT or labgrid://PLACE.",
    )
    p.add_argument("bundle", metavar="BUNDLE", type=Path, help="a file made by 'ocula bundle'")
    p.add_argument("--port", required=True, type=port, metavar="PORT", help="the board's port")
    p.add_argument(
        "--baud",
        type=integer(300, 20_000_000),
        default=921600,
        help="line rate for a UART (default 921600)",
    )
    p.add_argument("--json", action="store_true", help="end with one JSON result object")
    p.add_argument("--force", action="store_true", help="reinstall even if the board runs it")
    p.add_argument(
        "--deadline",
        type=integer(1, 24 * 3600),
        default=60,
        metavar="S",
        help="seconds the new slot has to pass its health check (default 60)",
    )
    p.set_defaults(func=_flash)


def _flash(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from board.bundle import Bundle
    from board.client import Board
    from board.flash import flash
    from hil.transport import open_port

    bundle = Bundle.open(args.bundle)
    client = Board(lambda: open_port(args.port, baud=args.baud), name=args.port)
    console = _stderr_console()
    bar = Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=args.json,
        # bars only on a terminal: in a log they are one frame, or an empty line above an error
        disable=args.quiet > 0 or not console.is_terminal,
    )
    tasks: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "send":
            detail = f"{done / 1e6:.2f}/{total / 1e6:.2f} MB"
        else:
            detail = f"{done}/{total} files"
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=max(total, 1), detail=detail)
        bar.update(tasks[stage], completed=done, total=max(total, 1), detail=detail)

    try:
        with bar:
            result = flash(
                bundle, client, progress=progress, deadline_s=args.deadline, force=args.force
            )
    finally:
        client.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    elif result.already_installed:
        print(
            f"{args.port}: board {result.board} already runs {result.version} "
            f"(slot {result.booted}); nothing sent"
        )
    elif result.ok:
        print(
            f"{args.port}: flashed {result.version} to slot {result.booted} of board "
            f"{result.board}: sent {result.bytes_sent / 1e6:.2f} MB of "
            f"{result.bundle_bytes / 1e6:.2f} MB ({result.chunks_skipped} chunks skipped, "
            f"{result.resumed} resumes) in {result.seconds:.1f} s; health check passed"
        )
    if not result.ok:
        where = "rolled back to" if result.rolled_back else "still runs"
        print(
            f"ocula: error: {args.port}: the new bundle did not pass its health check; the board "
            f"{where} slot {result.booted}: {result.reason}",
            file=sys.stderr,
        )
        return 1
    return 0


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)

"""`ocula demo`: show, offline, what Ocula can do on this machine today."""

from __future__ import annotations

import argparse
import platform
from typing import Any

from board import profiles
from ocula.envcheck import run_checks


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run the offline demo",
        description="Run what Ocula can do end to end on this machine, offline.",
    )
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    print("Ocula demo (offline). This build checks the environment and lists the boards;")
    print("model export, flashing a simulated board and the apps join the demo as they land.\n")
    print(f"== 1. Environment ({platform.system()} {platform.machine()})")
    missing = 0
    for c in run_checks():
        state = c.found if c.found else f"MISSING  -> {c.fix}"
        missing += c.found is None
        print(f"  {c.name:<22} {c.role:<24} {state}")
    print("\n== 2. Boards (board/profiles/*.toml)")
    for name in profiles.names():
        p = profiles.find(name)
        print(
            f"  {p.name:<8} {p.cpu.total_cores} cores, {p.memory.ram_mb} MB RAM, "
            f"budget {p.budget.max_artifact_mb} MB artifacts / {p.budget.max_rss_mb} MB RSS"
            f"  - {p.board.description}"
        )
    print(f"\nDone: {missing} missing item(s)." if missing else "\nDone: everything is in place.")
    return 0

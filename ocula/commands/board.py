"""`ocula board list | show NAME`: the board profiles Ocula knows."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from typing import Any

from board import profiles
from ocula.argtypes import key_file, sim_name
from runtime.profile import Profile


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    board = sub.add_parser(
        "board",
        parents=[common],
        help="board profiles",
        description="List and show board profiles (board/profiles/*.toml).",
    )
    cmds = board.add_subparsers(dest="board_command", metavar="ACTION")
    cmds.required = True
    lst = cmds.add_parser("list", parents=[common], help="list the known boards")
    lst.add_argument("--json", action="store_true", help="print JSON for scripts")
    lst.set_defaults(func=_list)
    show = cmds.add_parser("show", parents=[common], help="show one board's profile")
    show.add_argument(
        "name", metavar="NAME", help="a board name (see 'ocula board list') or a .toml path"
    )
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(func=_show)
    sim = cmds.add_parser(
        "sim",
        parents=[common],
        help="start a simulated board on a pseudo-terminal and print its port",
        description="Run the real boot ROM and agent on a pty, with the board's flash in "
        "$OCULA_SIM_DIR/NAME (default ~/.cache/ocula/sim/NAME). Runs until Ctrl-C.",
    )
    sim.add_argument("--profile", default="sim", help="board profile (default sim)")
    sim.add_argument("--name", type=sim_name, help="sim board name (default: the profile name)")
    sim.add_argument("--key", type=key_file, help="public key the board will trust (KEY.pub)")
    sim.set_defaults(func=_sim)


def _list(args: argparse.Namespace) -> int:
    boards = [profiles.find(n) for n in profiles.names()]
    if args.json:
        print(json.dumps([_summary(p) for p in boards], indent=2))
        return 0
    rows = [("NAME", "SOC", "ARCH", "CORES", "RAM", "BUDGET (artifact/RSS)", "DESCRIPTION")]
    for p in boards:
        rows.append(
            (
                p.name,
                p.board.soc,
                p.board.arch,
                str(p.cpu.total_cores),
                f"{p.memory.ram_mb} MiB",
                f"{p.budget.max_artifact_mb}/{p.budget.max_rss_mb} MiB",
                p.board.description,
            )
        )
    print(_table(rows))
    return 0


def _show(args: argparse.Namespace) -> int:
    p = profiles.find(args.name)
    if args.json:
        print(json.dumps({**dataclasses.asdict(p), "source": p.source}, indent=2))
        return 0
    print(f"{p.name}: {p.board.description}")
    print(f"  file: {p.source}")
    for section in dataclasses.fields(p):
        value = getattr(p, section.name)
        if section.name in ("board", "source") or value is None:
            continue
        print(f"[{section.name}]")
        for f in dataclasses.fields(value):
            key = f"{section.name}.{f.name}"
            item = getattr(value, f.name)
            mark = "  (estimate)" if p.is_estimate(key) else ""
            if f.name == "clusters":
                item = ", ".join(f"{c.cores}x {c.core} @ {c.max_mhz} MHz ({c.name})" for c in item)
            unit = f.metadata.get("unit", "")
            print(f"  {f.name:<22} {item}{' ' + unit if unit else ''}{mark}")
    return 0


def _summary(p: Profile) -> dict[str, Any]:
    return {
        "name": p.name,
        "description": p.board.description,
        "soc": p.board.soc,
        "arch": p.board.arch,
        "cores": p.cpu.total_cores,
        "ram_mb": p.memory.ram_mb,
        "max_artifact_mb": p.budget.max_artifact_mb,
        "max_rss_mb": p.budget.max_rss_mb,
        "source": p.source,
    }


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _sim(args: argparse.Namespace) -> int:
    from board.keys import load_public_raw
    from hil.sim import SimBoard

    profile = profiles.find(args.profile)  # a bad profile is said now, not by a silent board
    key = load_public_raw(args.key) if args.key else None
    board = SimBoard(args.name or profile.name, profile=args.profile, key=key)

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wake pause() if the board process dies
    with board:
        print(board.port, flush=True)
        print(
            f"sim board {board.name} ({args.profile}) on {board.port}; flash in {board.root}; "
            "Ctrl-C to power off",
            file=sys.stderr,
            flush=True,
        )
        try:
            while board.running():
                signal.pause()
        except KeyboardInterrupt:
            return 0
    print(f"ocula: error: sim board {board.name} stopped; see {board.log_path}", file=sys.stderr)
    return 1

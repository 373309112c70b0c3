"""`ocula hil --port PORT [pytest args]`: the HIL suites (hil/suites) against a board."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ocula.argtypes import in_file, integer, key_file, number, out_dir, port


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "hil",
        parents=[common],
        help="run the hardware-in-the-loop suites against a board",
        description="Run the HIL suites (pytest with Ocula's plugin) against a board: boot and "
        "hello, flash + health check + rollback, power budgets, link faults, soak. Arguments "
        "after '--' go to pytest (e.g. -- -k flash -x, or -- -n 2 with --inventory).",
    )
    p.add_argument(
        "--port",
        type=port,
        metavar="PORT",
        help="the board: /dev/ttyACM0, sim://sim, rfc2217://H:P, labgrid://PLACE",
    )
    p.add_argument(
        "--inventory", type=in_file, metavar="FILE", help="take a free board from this inventory"
    )
    p.add_argument(
        "--bundle", type=in_file, metavar="FILE", help="flash this bundle before the suites"
    )
    p.add_argument(
        "--fixture-port", type=port, metavar="PORT", help="the rig fixture's serial port"
    )
    p.add_argument(
        "--report", metavar="DIR", type=out_dir, help="write index.html + junit.xml here"
    )
    p.add_argument(
        "--soak-minutes",
        type=number(0, 7 * 24 * 60, low_open=True),
        default=0.2,
        metavar="M",
        help="soak length",
    )
    p.add_argument(
        "--retries", type=integer(0, 100), default=0, metavar="N", help="rerun link/power failures"
    )
    p.add_argument(
        "--key", type=key_file, metavar="FILE", help="private key for the bundles the suites build"
    )
    p.add_argument(
        "pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="after '--': arguments for pytest"
    )
    p.set_defaults(func=_hil)


def _hil(args: argparse.Namespace) -> int:
    import pytest

    from hil import suites
    from runtime.errors import UsageError

    if not args.port and not args.inventory:
        raise UsageError("ocula hil needs --port PORT (e.g. sim://sim) or --inventory FILE")
    argv = [str(Path(suites.__file__).parent), "-p", "no:cacheprovider"]
    for flag, value in (
        ("--board-port", args.port),
        ("--hil-inventory", str(args.inventory) if args.inventory else None),
        ("--bundle", str(args.bundle) if args.bundle else None),
        ("--fixture-port", args.fixture_port),
        ("--hil-report", str(args.report) if args.report else None),
        ("--hil-key", str(args.key) if args.key else None),
    ):
        if value:
            argv += [flag, value]
    argv += ["--hil-soak-minutes", str(args.soak_minutes), "--hil-retries", str(args.retries)]
    argv += list(getattr(args, "pytest_args", []) or [])
    code = int(pytest.main(argv))
    if args.report:
        print(f"report: {args.report / 'index.html'} (JUnit: {args.report / 'junit.xml'})")
    return code

"""`ocula fixture deploy --port PORT`: the rig fixture's MicroPython firmware to its RP2040."""

from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path
from typing import Any

from ocula.argtypes import out_dir, port


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    fixture = sub.add_parser(
        "fixture",
        parents=[common],
        help="the rig fixture (power sampling MCU)",
        description="Build and deploy the rig fixture firmware (MicroPython on an RP2040).",
    )
    cmds = fixture.add_subparsers(dest="fixture_command", metavar="ACTION")
    cmds.required = True
    dep = cmds.add_parser(
        "deploy",
        parents=[common],
        help="precompile with mpy-cross and copy to the board with mpremote",
        description="Precompile the firmware with mpy-cross and copy it with mpremote, then reset.",
    )
    dep.add_argument(
        "--port", required=True, type=port, help="the fixture's serial port (/dev/ttyACM0)"
    )
    dep.add_argument("--build", type=out_dir, help="keep the compiled files in this folder")
    dep.add_argument(
        "--dry-run", action="store_true", help="build, print the mpremote command, copy nothing"
    )
    dep.set_defaults(func=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    from hil import deploy
    from hil.errors import PortError

    out = args.build or Path(tempfile.mkdtemp(prefix="ocula-fixture-"))
    if args.dry_run:
        files = deploy.build(out)
        for f in files:
            print(f"built {f} ({f.stat().st_size} bytes)")
        print(shlex.join(deploy.mpremote_command(args.port, files)))
        return 0
    if "://" not in args.port and not Path(args.port).exists():
        raise PortError(
            f"{args.port}: no such port; plug the fixture in and check 'ls /dev/ttyACM*'"
        )
    files = deploy.deploy(args.port, out)
    print(f"deployed {len(files)} files to {args.port}: {', '.join(f.name for f in files)}")
    return 0

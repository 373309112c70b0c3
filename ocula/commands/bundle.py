"""`ocula bundle --board P --llm DIR --asr DIR --out FILE [--key KEY]`: pack a signed bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ocula.argtypes import in_file, key_file, label, out_file


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bundle",
        parents=[common],
        help="pack runtime code, artifacts and a board profile into one signed file",
        description="Pack the runtime code, the artifacts (folders made by 'ocula export') and "
        "the board profile into one bundle of content-addressed chunks, signed with --key.",
    )
    p.add_argument("--board", required=True, metavar="PROFILE", help="board name or .toml")
    for kind in ("llm", "asr", "vad", "vision"):
        p.add_argument(f"--{kind}", type=Path, metavar="DIR", help=f"{kind} artifact folder")
    p.add_argument("--out", required=True, type=out_file, metavar="FILE", help="bundle to write")
    p.add_argument("--key", type=key_file, metavar="KEY", help="private key from 'ocula keygen'")
    glyphs = p.add_mutually_exclusive_group()
    glyphs.add_argument(
        "--glyphs",
        type=in_file,
        metavar="NPZ",
        help="the display's glyph atlas to carry (default: one built from this host's fonts)",
    )
    glyphs.add_argument(
        "--no-glyphs",
        action="store_true",
        help="carry no glyph atlas (the board's display then shows boxes for text)",
    )
    p.add_argument(
        "--version", dest="bundle_version", type=label, metavar="V", help="version string"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_bundle)


def _bundle(args: argparse.Namespace) -> int:
    from board import bundle, profiles

    profile = profiles.find(args.board)
    artifacts = {k: getattr(args, k) for k in ("llm", "asr", "vad", "vision") if getattr(args, k)}
    glyphs = None
    if not args.no_glyphs:
        # the board has no font rasterizer: its display draws text from this atlas
        from ocula.glyphatlas import cached_atlas

        glyphs = args.glyphs or cached_atlas(28)
    summary = bundle.build(
        profile, args.out, artifacts, key=args.key, version=args.bundle_version, glyphs=glyphs
    )
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    atlas = "with the display's glyph atlas" if summary["glyphs"] else "NO glyph atlas"
    signed = "signed" if summary["signed"] else "UNSIGNED (boards with a key will refuse it)"
    print(
        f"{summary['bundle']}: {summary['board']} {summary['version']}, {summary['files']} files, "
        f"{summary['chunks']} chunks, {summary['raw_bytes'] / 1e6:.1f} MB -> "
        f"{summary['bundle_bytes'] / 1e6:.1f} MB, {atlas}, {signed}"
    )
    return 0

"""Entry point: parse, dispatch, and turn Ocula's errors into one line and an exit code.

Exit codes: 0 success, 1 failure (bad input, a board that misbehaves), 2 usage error,
3 a bug in Ocula, 130 interrupted. A traceback is printed only for an exception that is not an OculaError:
that is a bug in Ocula, and the message says so.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from runtime.errors import OculaError

from . import commands

PROG = "ocula"


class Parser(argparse.ArgumentParser):
    """argparse with Ocula's one-line usage errors (`ocula: error: ...`, exit 2)."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        sys.stderr.write(f"{PROG}: error: {message}{hint}\n")
        sys.exit(2)


def build_parser() -> Parser:
    common = Parser(add_help=False)
    verbosity = common.add_argument_group("output")
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail (repeat for debug logs)"
    )
    verbosity.add_argument(
        "-q", "--quiet", action="count", default=0, help="only warnings and errors"
    )
    parser = Parser(
        prog=PROG,
        description="Ocula: export models for smart glasses, flash boards, run HIL tests.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub, common)
    return parser


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO
    if quiet:
        level = logging.WARNING
    elif verbose:
        level = logging.DEBUG if verbose > 1 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose > 1 else "%(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for pkg in ("runtime", "export", "board", "hil", "ocula"):
        logging.getLogger(pkg).setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        result = args.func(args)
    except OculaError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except Exception:
        traceback.print_exc()
        sys.stderr.write(
            f"{PROG}: internal error: this is a bug in Ocula; please report it "
            "with the traceback above\n"
        )
        return 3
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Entry point: parse, dispatch, and turn Ocula's errors into one line and an exit code.

Exit codes: 0 success, 1 failure (bad input, a board that misbehaves, a full disk), 2 usage
error (an argument that cannot be used: checked by `ocula.argtypes` before anything starts),
3 a bug in Ocula, 130 interrupted (Ctrl-C, or SIGTERM when run as the `ocula` command). Every
error is one `ocula: error: ...` line on stderr. An OSError the host causes (a disk that fills,
a folder made read-only mid-run: HOST_ERRORS) is said in one line too; a traceback is printed
only for any other exception: that is a bug in Ocula, and the message says so. When a command
fails, the empty folders made for its output (`argtypes.OutPath`) are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import pkgutil
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from runtime.errors import OculaError

from . import commands
from .argtypes import OutPath

PROG = "ocula"


class Parser(argparse.ArgumentParser):
    """argparse with Ocula's one-line usage errors (`ocula: error: ...`, exit 2)."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        _say(f"{message}{hint}")
        sys.exit(2)


def _say(message: str) -> None:
    """One `ocula: error:` line: newlines folded, undecodable bytes escaped."""
    line = " ".join(str(message).split("\n")).encode("utf-8", "backslashreplace").decode()
    sys.stderr.write(f"{PROG}: error: {line}\n")
    sys.stderr.flush()


# What the host or the user's paths do to a command (a disk that fills, a folder made read-only,
# a folder given for a file): said in one line. Any other OSError that escapes a command (EBADF,
# EINVAL, ...) is a bug in Ocula and keeps its traceback.
HOST_ERRORS = {
    errno.ENOSPC: "; free some space and run again",
    errno.EDQUOT: "; free some space and run again",
    errno.EFBIG: "; write it to another file system",
    errno.EROFS: "; choose a writable place",
    errno.EACCES: "; check the permissions",
    errno.EPERM: "; check the permissions",
    errno.EIO: "; check the disk or the device",
    errno.EMFILE: "; raise the open-file limit (ulimit -n)",
    errno.ENFILE: "; close some programs",
    errno.ENAMETOOLONG: "; use a shorter path",
    # a path the user gave that is not what the command needs (a reader that did not check)
    errno.ENOENT: "; check the path",
    errno.EISDIR: "; give a file, not a folder",
    errno.ENOTDIR: "; check the path",
    errno.ELOOP: "; check the symbolic links in the path",
}


def _os_error(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    what = f"{exc.strerror or exc}{HOST_ERRORS.get(exc.errno or 0, '')}"
    return f"{where}: {what}" if where else what


def _terminate(*_: object) -> None:
    raise KeyboardInterrupt


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
    if argv is None:  # the `ocula` command: SIGTERM unwinds like Ctrl-C (temporaries removed)
        signal.signal(signal.SIGTERM, _terminate)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    _setup_logging(args.verbose, args.quiet)
    made = [p for v in vars(args).values() if isinstance(v, OutPath) for p in v.missing()]
    code = _run(args)
    if code != 0:
        _remove_empty(made)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except OculaError as exc:
        _say(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except OSError as exc:
        if exc.errno not in HOST_ERRORS:
            return _bug()
        _say(_os_error(exc))
        return 1
    except Exception:
        return _bug()


def _bug() -> int:
    traceback.print_exc()
    sys.stderr.write(
        f"{PROG}: internal error: this is a bug in Ocula; please report it "
        "with the traceback above\n"
    )
    return 3


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders made for a failed command's output, deepest first, if still empty."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _quiet_stdout() -> None:
    """stdout's reader went away (`ocula board list | head -1`): drop what is left unsent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

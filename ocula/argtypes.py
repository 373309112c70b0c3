"""Argument types shared by every command: paths, bounded numbers, text, ports.

Each is an argparse `type=`: it gets the string the user typed and returns the value or raises
`argparse.ArgumentTypeError`, which the parser turns into one `ocula: error: argument --X: ...`
line and exit 2, before anything starts (no board booted, no model loaded, no file written).
Paths come back absolute, so a command that changes directory or hands a path to a child
process still means what the user typed. What a check cannot know (a file's content, a full
disk) is found later and reported by the module that reads or writes it.

    p.add_argument("--out", type=out_file)            # a file we may create or replace
    p.add_argument("--seconds", type=number(0, 86400, low_open=True))
    p.add_argument("--port", type=port)               # /dev/ttyACM0, sim://NAME, labgrid://PLACE
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "OutPath",
    "in_dir",
    "in_file",
    "integer",
    "key_file",
    "label",
    "number",
    "out_dir",
    "out_file",
    "port",
    "port_or_local",
    "sim_name",
    "text",
]

Bad = argparse.ArgumentTypeError


class OutPath(type(Path())):  # type: ignore[misc]
    """A path the command will write: `ocula.cli` removes the empty folders made for it when the
    command fails, so a failed run leaves the disk as it found it."""

    def missing(self) -> list[Path]:
        """This path (when a folder to make) and its ancestors that do not exist yet."""
        return [p for p in (self, *self.parents) if not os.path.lexists(p)]


def _show(value: str) -> str:
    """`value` as it can be printed: control characters and undecodable bytes escaped."""
    shown = repr(value)[1:-1] if not value.isprintable() or _undecodable(value) else value
    return shown or "''"


def _undecodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text(value: str) -> str:
    """Text for a model or a board (a prompt, a question): it must be valid UTF-8."""
    if _undecodable(value):
        raise Bad(
            f"{_show(value)}: not valid UTF-8 text; check the terminal's encoding "
            "(locale) or pass the text in UTF-8"
        )
    return value


def _path(value: str) -> Path:
    if not value:
        raise Bad("an empty path; give a file or folder name")
    if "\0" in value:
        raise Bad(f"{_show(value)}: a path cannot contain a NUL byte")
    return Path(os.path.abspath(value))


def _clean_name(value: str, path: Path) -> None:
    """A path we are to create must not hold control characters (a pasted newline, a tab)."""
    if any(not c.isprintable() for c in str(path)) and not _undecodable(str(path)):
        raise Bad(
            f"{_show(value)}: the path holds a control character (a newline or tab, "
            "perhaps pasted by accident); give a plain path"
        )


def _writable_parent(value: str, path: Path) -> None:
    """The nearest existing ancestor of `path` must be a folder we can write into."""
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():
            raise Bad(f"{_show(value)}: {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise Bad(f"{_show(value)}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only(parent) else "is not writable"
        raise Bad(f"{_show(value)}: {parent} {why}; choose a writable place")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def out_file(value: str) -> OutPath:
    """A file to write (created or replaced; its folder is created when missing)."""
    path = OutPath(_path(value))
    _clean_name(value, path)
    if path.is_dir():
        raise Bad(f"{_show(value)}: is an existing folder; give a file name (e.g. {path}/out)")
    if path.exists() and not path.is_file():
        raise Bad(f"{_show(value)}: exists and is not a regular file; choose another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise Bad(f"{_show(value)}: the file is read-only; choose another path")
    _writable_parent(value, path)
    return path


def out_dir(value: str) -> OutPath:
    """A folder to write into (created when missing)."""
    path = OutPath(_path(value))
    _clean_name(value, path)
    if path.exists() and not path.is_dir():
        raise Bad(f"{_show(value)}: exists and is not a folder; give a folder path")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            why = "is on a read-only file system" if _read_only(path) else "is not writable"
            raise Bad(f"{_show(value)}: the folder {why}; choose a writable place")
        return path
    _writable_parent(value, path)
    return path


def in_file(value: str) -> Path:
    """An existing, readable regular file."""
    path = _path(value)
    if path.is_dir():
        raise Bad(f"{_show(value)}: is a folder; give a file")
    if not path.exists():
        raise Bad(f"{_show(value)}: no such file")
    if not path.is_file():
        raise Bad(f"{_show(value)}: not a regular file")
    if not os.access(path, os.R_OK):
        raise Bad(f"{_show(value)}: cannot read it (permission denied)")
    return path


def in_dir(value: str) -> Path:
    """An existing folder (an artifact, a model)."""
    path = _path(value)
    if path.is_file():
        raise Bad(f"{_show(value)}: is a file; give a folder")
    if not path.is_dir():
        raise Bad(f"{_show(value)}: no such folder")
    return path


def key_file(value: str) -> Path:
    """An existing key file (from 'ocula keygen'), at most a few kB."""
    try:
        path = in_file(value)
    except Bad as exc:
        raise Bad(f"{exc} (a key file made by 'ocula keygen')") from None
    if path.stat().st_size > 64 * 1024:
        raise Bad(f"{_show(value)}: {path.stat().st_size} bytes is not a key file")
    return path


def number(
    low: float, high: float, *, low_open: bool = False, unit: str = ""
) -> Callable[[str], float]:
    """A finite float in [low, high] (or (low, high] with `low_open`)."""

    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise Bad(f"{_show(value)}: not a number") from None
        ok = math.isfinite(x) and (x > low if low_open else x >= low) and x <= high
        if not ok:
            lo = f"more than {low:g}" if low_open else f"at least {low:g}"
            raise Bad(f"{_show(value)}: must be {lo} and at most {high:g}{unit}")
        return x

    parse.__name__ = "number"
    return parse


def integer(low: int, high: int, *, unit: str = "") -> Callable[[str], int]:
    """A whole number in [low, high] (written as digits, not 1e3)."""

    def parse(value: str) -> int:
        try:
            x = int(value.strip(), 10)
        except ValueError:
            raise Bad(f"{_show(value)}: not a whole number") from None
        if not low <= x <= high:
            raise Bad(f"{value}: must be {low} to {high}{unit}")
        return x

    parse.__name__ = "integer"
    return parse


def port(value: str) -> str:
    """A board's or fixture's port of any kind in the registry (`hil.ports.KINDS`), checked
    without opening it."""
    from hil.errors import PortError
    from hil.ports import FORMS, check_port

    if not value:
        raise Bad(f"an empty port; {FORMS}")
    try:
        check_port(value)
    except PortError as exc:
        raise Bad(str(exc)) from None
    return value


def port_or_local(value: str) -> str:
    """`local` (this host) or a board's port."""
    return value if value == "local" else port(value)


def http_url(value: str) -> str:
    """An HTTP(S) API's base URL, such as http://127.0.0.1:8080/v1."""
    from urllib.parse import urlsplit

    text(value)
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        ok = False
    if not ok or not value.isprintable():
        raise Bad(f"{_show(value)[:80]}: give the API's base URL, e.g. http://127.0.0.1:8080/v1")
    return value


def label(value: str) -> str:
    """A short name or code (a language, an app, a version): printable UTF-8, one line."""
    text(value)
    if not value or not value.isprintable() or len(value) > 200:
        raise Bad(f"{_show(value)[:80]}: expected a short printable name (1 to 200 characters)")
    return value


def sim_name(value: str) -> str:
    """A simulated board's name (the folder of its flash under $OCULA_SIM_DIR)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise Bad(f"{_show(value)}: a sim board's name is 1 to 64 letters, digits, '-' or '_'")
    return value

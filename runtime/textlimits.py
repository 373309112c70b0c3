"""Limits for the text formats the runtime parses (JSON manifests, TOML profiles, atlas meta).

The stdlib parsers trust their input: `json` and `tomllib` recurse once per nesting level (a
file of 100 000 `[` is a RecursionError), `tomllib` takes time and memory quadratic in the
parts of a dotted key (a 40 kB key of 20 000 parts: minutes and gigabytes), and an integer of
5000 digits is a ValueError from `int()` (CPython's 4300-digit guard), none of them the
parser's own error. So before a
text is parsed, `check_text` scans it once at C speed (regular expressions, no per-character
Python loop in the common case) for its size, its nesting depth and its longest number, and
calls `error(message)` naming the limit that is broken; a caller passes its module's error
class. `loads_json` then parses with the numbers checked as they are read (no NaN, no
Infinity, no float that overflows to infinity).

Strings are blanked before brackets and digits are counted, so a `[` or a long number inside
a string is not counted; a string that never ends is left as it is (the parser refuses it).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "check_text", "loads_json", "read_limited"]

MAX_DEPTH = 64  # nested arrays/objects/tables
MAX_DIGITS = 100  # of one number, sign and exponent included

Error = Callable[[str], Exception]

# strings as an unrolled loop (a run of plain characters, then an escape and another run):
# one regex step per run, not per character
_JSON_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_TOML_STRINGS = re.compile(
    r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"|\'[^\'\n]*\'|#[^\n]*'
)
_BRACKETS = re.compile(r"[\[{]+|[\]}]+")
# a TOML dotted key (`a.b.c = 1`, `[a.b.c]`) nests one table per part, and tomllib spends
# time and memory quadratic in the parts; a part starts where a word starts (no rescans)
_KEY_PART = r'(?:(?<![A-Za-z0-9_-])(?>[A-Za-z0-9_-]+)|"")'


def read_limited(path: Path, limit: int, what: str, error: Error, fix: str) -> bytes:
    """The bytes of the file at `path`, or `error(...)` when it holds more than `limit` (named
    as `what`, e.g. "a manifest (MAX_MANIFEST_BYTES, 1 MiB)", with `fix`). At most `limit + 1`
    bytes are read, so a file that grows meanwhile cannot make the caller allocate more.
    OSError (missing, unreadable) is the caller's to word."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
        if len(data) > limit:
            size = os.fstat(f.fileno()).st_size
            raise error(f"{path}: {size} bytes is more than {what} may hold; {fix}")
    return data


_LONG_NUMBER = re.compile("[0-9_]{" + str(MAX_DIGITS + 1) + ",}")


def check_text(
    text: str,
    where: str,
    error: Error,
    *,
    toml: bool = False,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
) -> None:
    """Refuse `text` if it is longer than `max_bytes` characters, nests deeper than
    `max_depth` (brackets; for TOML also the parts of a dotted key) or holds a number of more
    than MAX_DIGITS digits."""
    if len(text) > max_bytes:
        raise error(f"{where}: {len(text)} characters is more than the limit of {max_bytes}")
    bare = (_TOML_STRINGS if toml else _JSON_STRINGS).sub('""', text)
    depth = 0
    for m in _BRACKETS.finditer(bare):
        run = m.end() - m.start()
        depth += run if bare[m.start()] in "[{" else -run
        if depth > max_depth:
            raise error(
                f"{where}: nested more than {max_depth} levels deep (the limit for this file); "
                "flatten it"
            )
    if toml and re.search(rf"(?:{_KEY_PART}\s*+\.\s*+){{{max_depth}}}", bare):
        raise error(
            f"{where}: a dotted key of more than {max_depth} parts (the nesting limit for this "
            "file); flatten it"
        )
    if _LONG_NUMBER.search(bare):
        raise error(f"{where}: a number of more than {MAX_DIGITS} digits (the limit); shorten it")


def loads_json(text: str, where: str, error: Error, *, max_bytes: int) -> Any:
    """`json.loads` after `check_text`, refusing NaN, Infinity and floats that overflow."""
    check_text(text, where, error, max_bytes=max_bytes)

    def constant(name: str) -> Any:
        raise error(f"{where}: {name} is not a JSON number; write a finite number")

    def number(s: str) -> float:
        v = float(s)
        if not math.isfinite(v):
            raise error(
                f"{where}: the number {s[:40]} is too large for a float (max about 1.8e308)"
            )
        return v

    try:
        return json.loads(text, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc})") from exc
    except (RecursionError, ValueError) as exc:  # the checks above should have caught it
        raise error(f"{where}: not a JSON document this reader takes ({exc})") from exc

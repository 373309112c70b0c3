"""Typed, bounded request/reply messages carried as link payloads.

A message is

    u16 header length (big-endian) | header: a JSON object (UTF-8) | blob: raw bytes

A request's header has "op", "_id" (the request number) and the op's fields; a reply's has
"ok", the same "_id" and the reply's fields (or "error" with a sentence when ok is false);
binary data (a chunk, a signature, a bitmap) rides in the blob so it is never escaped.

Decoding never evaluates anything and is bounded before it parses: the header's length is
checked against `MAX_HEADER`, the blob against a limit; JSON constants (NaN, Infinity),
duplicate keys, and nesting deeper than `MAX_DEPTH` are refused. An `Op` declares each field's
type and limit (string and list lengths, integer ranges) of its request and its reply;
`Schema.check_request` refuses unknown fields, missing fields and anything over a limit, with a
message that names the op, the field and the limit, and `Schema.check_reply` holds a reply to
what its op declares. Every failure is a `MessageError`. The board's requests are declared with
these in one table, `runtime.agent.api`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.link.errors import LinkError

__all__ = [
    "ENVELOPE",
    "MAX_BLOB",
    "MAX_HEADER",
    "Bool",
    "Bytes32",
    "FieldType",
    "Int",
    "Json",
    "List",
    "MessageError",
    "Num",
    "Obj",
    "Op",
    "Opt",
    "Schema",
    "Str",
    "decode",
    "encode",
]

MAX_HEADER = 8192
MAX_BLOB = 256 * 1024
MAX_DEPTH = 8
ENVELOPE = ("op", "_id", "ok")  # the keys every request or reply carries besides its fields
_LEN = struct.Struct(">H")


class MessageError(LinkError):
    """A message that is not well formed, not bounded, or not what its op declares."""


# -- wire format ---------------------------------------------------------------------------------
def encode(header: Mapping[str, Any], blob: bytes = b"", max_blob: int = MAX_BLOB) -> bytes:
    head = json.dumps(dict(header), separators=(",", ":"), allow_nan=False).encode()
    if len(head) > MAX_HEADER:
        raise MessageError(f"message header of {len(head)} bytes is over {MAX_HEADER}")
    if len(blob) > max_blob:
        raise MessageError(f"message blob of {len(blob)} bytes is over {max_blob}")
    return _LEN.pack(len(head)) + head + bytes(blob)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _depth(text: str) -> int:
    depth = best = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def decode(payload: bytes, max_blob: int = MAX_BLOB) -> tuple[dict[str, Any], bytes]:
    """(header, blob) of a message; MessageError for anything malformed or over a limit."""
    if len(payload) < _LEN.size:
        raise MessageError("message shorter than its length field")
    (n,) = _LEN.unpack_from(payload)
    if n > MAX_HEADER or _LEN.size + n > len(payload):
        raise MessageError(f"message header of {n} bytes does not fit (limit {MAX_HEADER})")
    blob = bytes(payload[_LEN.size + n :])
    if len(blob) > max_blob:
        raise MessageError(f"message blob of {len(blob)} bytes is over {max_blob}")
    try:
        text = bytes(payload[_LEN.size : _LEN.size + n]).decode("utf-8")
        if _depth(text) > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH}")
        header = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MessageError(f"message header is not acceptable JSON: {str(exc)[:100]}") from exc
    if not isinstance(header, dict):
        raise MessageError("message header is not a JSON object")
    return header, blob


# -- field types ---------------------------------------------------------------------------------
class FieldType(Protocol):
    def check(self, value: Any) -> str | None:
        """None when `value` is acceptable, else what is wrong with it."""

    def describe(self) -> str:
        """The type and its limits in a few words (the protocol's docs)."""


@dataclass(frozen=True)
class Int:
    lo: int = 0
    hi: int = (1 << 53) - 1

    def check(self, value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return "is not an integer"
        if not self.lo <= value <= self.hi:
            return f"is outside {self.lo}..{self.hi}"
        return None

    def describe(self) -> str:
        return f"integer {_n(self.lo)}..{_n(self.hi)}"


def _n(value: float) -> str:
    """A limit as the docs write it: 2^40 - 1 rather than 1099511627775."""
    for k in range(16, 64):
        if value in (1 << k, (1 << k) - 1):
            return f"2^{k}" + " - 1" * (value != 1 << k)
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Num:
    """A number (integer or float) in lo..hi; above lo only, when `above` is set."""

    lo: float = 0.0
    hi: float = float(1 << 53)
    above: bool = False

    def check(self, value: Any) -> str | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return "is not a number"
        if not (self.lo < value if self.above else self.lo <= value) or value > self.hi:
            return f"is outside {self.describe()[7:]}"
        return None

    def describe(self) -> str:
        return f"number {'(' if self.above else '['}{_n(self.lo)}, {_n(self.hi)}]"


@dataclass(frozen=True)
class Str:
    max_len: int
    allowed: str | None = None  # every character must be in this set, when given
    min_len: int = 0
    what: str = ""  # what the docs call it, when not "string of ..."

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return "is not a string"
        if len(value) > self.max_len:
            return f"is longer than {self.max_len} characters"
        if self.allowed is not None and any(c not in self.allowed for c in value):
            return "has characters that are not allowed"
        if len(value) < self.min_len:
            return f"is shorter than {self.min_len} characters"
        return None

    def describe(self) -> str:
        if self.what:
            return self.what
        chars = "" if self.allowed is None else f" of {self.allowed!r}"
        least = f"{self.min_len} to " if self.min_len else "at most "
        return f"string of {least}{self.max_len} characters{chars}"


@dataclass(frozen=True)
class Bool:
    def check(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "is not true or false"

    def describe(self) -> str:
        return "true or false"


HEX = "0123456789abcdef"


def Bytes32() -> Str:
    """A sha256 digest as 64 lowercase hex digits."""
    return Str(64, HEX, min_len=64, what="sha256: 64 lowercase hex digits")


@dataclass(frozen=True)
class List:
    item: FieldType
    max_items: int

    def check(self, value: Any) -> str | None:
        if not isinstance(value, list):
            return "is not a list"
        if len(value) > self.max_items:
            return f"has more than {self.max_items} items"
        for i, v in enumerate(value):
            why = self.item.check(v)
            if why:
                return f"item {i} {why}"
        return None

    def describe(self) -> str:
        return f"list of at most {self.max_items} ({self.item.describe()})"


@dataclass(frozen=True)
class Opt:
    """`item`, or null."""

    item: FieldType

    def check(self, value: Any) -> str | None:
        return None if value is None else self.item.check(value)

    def describe(self) -> str:
        return f"{self.item.describe()}, or null"


@dataclass(frozen=True)
class Json:
    """Any JSON value (the decoder has bounded its size and depth already)."""

    what: str = "any JSON value"

    def check(self, value: Any) -> str | None:
        return None

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True)
class Obj:
    """A JSON object; with `fields`, only those keys (each optional), each of its type."""

    fields: Mapping[str, FieldType] | None = None
    what: str = "object"

    def check(self, value: Any) -> str | None:
        if not isinstance(value, dict):
            return "is not an object"
        if self.fields is None:
            return None
        for key, v in value.items():
            kind = self.fields.get(key)
            if kind is None:
                return f"has an unknown key {str(key)[:40]!r}; known: {', '.join(self.fields)}"
            why = kind.check(v)
            if why:
                return f"key {key!r} {why}"
        return None

    def describe(self) -> str:
        if self.fields is None:
            return self.what
        inner = "; ".join(f"{k}: {t.describe()}" for k, t in self.fields.items())
        return f"{self.what} with any of {{{inner}}}"


@dataclass(frozen=True)
class Op:
    """One request: what it does, its fields (all required unless listed in `optional`), its
    blob limit, its reply's fields (`reply`, all present unless in `reply_optional`) and what
    its reply's blob holds, and the errors it answers with (kind: when)."""

    name: str
    fields: Mapping[str, FieldType] = field(default_factory=dict)
    blob: int = 0
    optional: Sequence[str] = ()
    reply: Mapping[str, FieldType] = field(default_factory=dict)
    reply_optional: Sequence[str] = ()
    reply_blob: str = ""
    doc: str = ""
    blob_doc: str = ""
    errors: Mapping[str, str] = field(default_factory=dict)


def _check_fields(
    what: str, fields: Mapping[str, Any], kinds: Mapping[str, FieldType], optional: Sequence[str]
) -> None:
    extra = set(fields) - set(kinds)
    if extra:
        raise MessageError(f"{what}: unknown field(s) {sorted(extra)[:5]}")
    for key, kind in kinds.items():
        if key not in fields:
            if key in optional:
                continue
            raise MessageError(f"{what}: field {key!r} is missing")
        why = kind.check(fields[key])
        if why:
            raise MessageError(f"{what}: field {key!r} {why}")


class Schema:
    """The requests a service accepts and the replies it gives."""

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = {op.name: op for op in ops}
        if len(self.ops) != len(ops):
            raise ValueError("two ops of one name")

    def op(self, name: Any) -> Op:
        if not isinstance(name, str) or name not in self.ops:
            known = ", ".join(sorted(self.ops))
            raise MessageError(f"unknown request {str(name)[:32]!r}; this side knows {known}")
        return self.ops[name]

    def check_request(self, header: Mapping[str, Any], blob: bytes) -> tuple[Op, dict[str, Any]]:
        """The op and its fields (without "op" and "_id"), or MessageError saying what is wrong."""
        op = self.op(header.get("op"))
        fields = {k: v for k, v in header.items() if k not in ENVELOPE}
        _check_fields(f"request {op.name!r}", fields, op.fields, op.optional)
        if len(blob) > op.blob:
            raise MessageError(
                f"request {op.name!r}: data of {len(blob)} bytes is over {op.blob} (the limit)"
            )
        return op, fields

    def check_reply(self, name: str, header: Mapping[str, Any]) -> None:
        """MessageError unless `header` is a reply that op `name` may give: its fields when
        "ok" is true, an "error" sentence (and the error's "kind") when it is false."""
        op = self.op(name)
        what = f"reply to {op.name!r}"
        ok = header.get("ok")
        fields = {k: v for k, v in header.items() if k not in ENVELOPE}
        if ok is True:
            _check_fields(what, fields, op.reply, op.reply_optional)
        elif ok is False:
            _check_fields(what, fields, ERROR_REPLY, ("kind",))
        else:
            raise MessageError(f"{what}: field 'ok' is not true or false")


#: the fields of every error reply
ERROR_REPLY: Mapping[str, FieldType] = {"error": Str(MAX_HEADER), "kind": Str(64)}

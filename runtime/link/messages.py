"""Typed, bounded request/reply messages carried as link payloads.

A message is

    u16 header length (big-endian) | header: a JSON object (UTF-8) | blob: raw bytes

A request's header has "op", "rid" (the request number) and the op's fields; a reply's has
"ok", the same "rid" and the reply's fields (or "error" with a sentence when ok is false); binary data (a chunk, a signature, a
bitmap) rides in the blob so it is never escaped. The layout is that of `runtime.agent.rpc`.

Decoding never evaluates anything and is bounded before it parses: the header's length is
checked against `MAX_HEADER`, the blob against the op's limit; JSON constants (NaN, Infinity),
duplicate keys, and nesting deeper than `MAX_DEPTH` are refused. An `Op` declares each field's
type and limit (string and list lengths, integer ranges) and `Schema.check_request` refuses
unknown fields, missing fields and anything over a limit, with a message that names the op,
the field and the limit. Every failure is a `MessageError`.

    SCHEMA = Schema([Op("put", {"id": Str(64), "offset": Int(0, 1 << 40)}, blob=32768)])
    client = Client(endpoint, SCHEMA)
    reply, blob = client.call("put", {"id": cid, "offset": 0}, data, timeout=5)

`Client.call` numbers its requests and skips replies whose "rid" is not the one it waits for (a
late reply to a request that timed out), so a retry never takes an old answer for a new one.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.link.errors import LinkError, LinkTimeout

__all__ = [
    "MAX_BLOB",
    "MAX_HEADER",
    "Bool",
    "Bytes32",
    "Client",
    "Int",
    "List",
    "MessageError",
    "Op",
    "RemoteError",
    "Schema",
    "Str",
    "decode",
    "encode",
]

MAX_HEADER = 8192
MAX_BLOB = 256 * 1024
MAX_DEPTH = 8
_LEN = struct.Struct(">H")


class MessageError(LinkError):
    """A message that is not well formed, not bounded, or not what its op declares."""


class RemoteError(LinkError):
    """The peer answered a request with ok=false; the message carries its reason."""


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


@dataclass(frozen=True)
class Str:
    max_len: int
    allowed: str | None = None  # every character must be in this set, when given

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return "is not a string"
        if len(value) > self.max_len:
            return f"is longer than {self.max_len} characters"
        if self.allowed is not None and any(c not in self.allowed for c in value):
            return "has characters that are not allowed"
        return None


@dataclass(frozen=True)
class Bool:
    def check(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "is not true or false"


HEX = "0123456789abcdef"


def Bytes32() -> Str:
    """A sha256 digest as 64 lowercase hex digits."""
    return Str(64, HEX)


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


@dataclass(frozen=True)
class Op:
    """One request: its fields (all required unless listed in `optional`) and blob limit."""

    name: str
    fields: Mapping[str, FieldType] = field(default_factory=dict)
    blob: int = 0
    optional: Sequence[str] = ()


class Schema:
    """The requests a service accepts."""

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = {op.name: op for op in ops}

    def check_request(self, header: Mapping[str, Any], blob: bytes) -> tuple[Op, dict[str, Any]]:
        """The op and its fields (without "op" and "rid"), or MessageError saying what is wrong."""
        name = header.get("op")
        if not isinstance(name, str) or name not in self.ops:
            known = ", ".join(sorted(self.ops))
            raise MessageError(f"unknown request {str(name)[:32]!r}; this side knows {known}")
        op = self.ops[name]
        fields = {k: v for k, v in header.items() if k not in ("op", "rid")}
        extra = set(fields) - set(op.fields)
        if extra:
            raise MessageError(f"request {name!r}: unknown field(s) {sorted(extra)[:5]}")
        for key, kind in op.fields.items():
            if key not in fields:
                if key in op.optional:
                    continue
                raise MessageError(f"request {name!r}: field {key!r} is missing")
            why = kind.check(fields[key])
            if why:
                raise MessageError(f"request {name!r}: field {key!r} {why}")
        if len(blob) > op.blob:
            raise MessageError(f"request {name!r}: data of {len(blob)} bytes is over {op.blob}")
        return op, fields


Handler = Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]]


def handle(schema: Schema, handlers: Mapping[str, Handler], payload: bytes) -> bytes:
    """One request payload in, one reply payload out; a bad request gets an error reply."""
    rid: Any = None
    try:
        header, blob = decode(payload)
        rid = header.get("rid") if isinstance(header.get("rid"), int) else None
        op, fields = schema.check_request(header, blob)
        reply, data = handlers[op.name](fields, blob)
        return encode({**reply, "ok": reply.get("ok", True), "rid": rid}, data)
    except (MessageError, KeyError) as exc:
        return encode({"ok": False, "error": str(exc)[:500], "rid": rid})


class RequestChannel(Protocol):
    def request(self, payload: bytes, timeout: float) -> bytes: ...

    def recv(self, timeout: float) -> bytes | None: ...


class Client:
    """Requests over an endpoint, matched to their replies by "rid"."""

    def __init__(self, endpoint: RequestChannel, max_blob: int = MAX_BLOB) -> None:
        self.endpoint = endpoint
        self.max_blob = max_blob
        self._next_id = 1

    def call(
        self,
        op: str,
        fields: Mapping[str, Any] | None = None,
        blob: bytes = b"",
        timeout: float = 10.0,
    ) -> tuple[dict[str, Any], bytes]:
        """The reply's (header, blob); RemoteError when the peer said ok=false."""
        rid = self._next_id
        self._next_id = (self._next_id + 1) & 0x7FFFFFFF or 1
        payload = encode({**(fields or {}), "op": op, "rid": rid}, blob, self.max_blob)
        reply = self.endpoint.request(payload, timeout)
        header, data = decode(reply, self.max_blob)
        while header.get("rid") != rid:  # a late reply to an earlier request: skip it
            more = self.endpoint.recv(timeout)
            if more is None:
                raise LinkTimeout(f"no reply to {op!r} (request {rid}) within {timeout:g} s")
            header, data = decode(more, self.max_blob)
        if not header.get("ok"):
            raise RemoteError(f"the peer refused {op!r}: {header.get('error', 'no reason given')}")
        return header, data

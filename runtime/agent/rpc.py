"""Request and reply messages of the agent, carried as link payloads.

    u16 header length | header (JSON object, at most MAX_HEADER bytes) | blob (the rest)

The header of a request holds "op" and the request's fields, of a reply "ok" and the reply's
fields; the blob carries binary data (a chunk part, a signature, a bitmap). Decoding is bounded
and never evaluates anything: JSON objects with string keys only, a header size limit, a blob
size limit, and any failure becomes RpcError.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from runtime.agent.errors import RequestError

__all__ = ["MAX_BLOB", "MAX_HEADER", "RpcError", "decode", "encode"]

MAX_HEADER = 8192
MAX_BLOB = 64 * 1024
_LEN = struct.Struct(">H")


class RpcError(RequestError):
    """A message that is not a well-formed, bounded request or reply."""


def encode(header: dict[str, Any], blob: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER or len(blob) > MAX_BLOB:
        raise RpcError(f"message too large: header {len(head)} B, blob {len(blob)} B")
    return _LEN.pack(len(head)) + head + blob


def decode(payload: bytes) -> tuple[dict[str, Any], bytes]:
    if len(payload) < 2:
        raise RpcError("message shorter than its header length")
    (n,) = _LEN.unpack_from(payload)
    if n > MAX_HEADER or 2 + n > len(payload):
        raise RpcError(f"message header of {n} bytes does not fit (limit {MAX_HEADER})")
    if len(payload) - 2 - n > MAX_BLOB:
        raise RpcError(f"message blob over the {MAX_BLOB}-byte limit")
    try:
        header = json.loads(payload[2 : 2 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RpcError(f"message header is not JSON: {str(exc)[:80]}") from exc
    if not isinstance(header, dict):
        raise RpcError("message header is not a JSON object")
    return header, bytes(payload[2 + n :])

"""Request and reply messages of the agent, carried as link payloads.

    u16 header length | header (JSON object, at most MAX_HEADER bytes) | blob (the rest)

The codec is the link's (`runtime.link.messages`): bounded before it parses, JSON objects only,
no NaN/Infinity, no duplicate keys, no deep nesting, never evaluated. The header of a request
holds "op", "_id" and the request's fields; of a reply, "ok", the same "_id" and the reply's
fields. The blob carries binary data (a chunk part, a signature, a bitmap), at most MAX_BLOB
bytes here. Every failure is RpcError, which the agent answers with an error reply.
"""

from __future__ import annotations

from typing import Any

from runtime.agent.errors import RequestError
from runtime.link import messages

__all__ = ["MAX_BLOB", "MAX_HEADER", "RpcError", "decode", "encode"]

MAX_HEADER = messages.MAX_HEADER
MAX_BLOB = 64 * 1024


class RpcError(RequestError):
    """A message that is not a well-formed, bounded request or reply."""


def encode(header: dict[str, Any], blob: bytes = b"") -> bytes:
    try:
        return messages.encode(header, blob, max_blob=MAX_BLOB)
    except (messages.MessageError, ValueError) as exc:
        raise RpcError(f"message too large or not encodable: {exc}") from exc


def decode(payload: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        return messages.decode(payload, max_blob=MAX_BLOB)
    except messages.MessageError as exc:
        raise RpcError(str(exc)) from exc

"""The board API: every request a host can make of a board's agent, declared once, as data.

Each `Op` below is one request: its fields and their limits, the largest blob it carries, its
reply's fields, what its blobs hold, and the errors it answers with. The agent's handlers
(`runtime.agent.service`) are plain functions registered against this table with
`registrar(...)`; the agent checks every request against it before a handler runs, and the
host's client (`board.client.Board`) checks every reply against it. The protocol section of the
docs (docs/protocol.md) is generated from it: `python -m runtime.agent.api --markdown`.

Messages are the link's bounded codec (`runtime.link.messages`): a JSON header of at most
MAX_HEADER bytes and a blob of at most MAX_BLOB bytes. A request's header holds "op", "_id" (a
number the reply repeats) and the op's fields; a reply's holds "ok", the same "_id" and the
reply's fields, or, when ok is false, "error" (a sentence) and "kind" (the error's class).

Adding a request: declare its `Op` in `OPS` and register its handler in the agent
(`@handles("name")`); nothing else changes. The pair is checked when an agent starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime.agent.bundlefmt import CHUNK_SIZE, MAX_PIECE_BYTES, MAX_TOP_BYTES, ZLIB_SLACK
from runtime.agent.errors import RequestError
from runtime.agent.inject import MAX_CLIP_BYTES
from runtime.link import messages
from runtime.link.endpoint import Endpoint
from runtime.link.messages import (
    Bool,
    Bytes32,
    Int,
    Json,
    List,
    Num,
    Obj,
    Op,
    Opt,
    Str,
)

__all__ = [
    "API",
    "MAX_BLOB",
    "MAX_HEADER",
    "MAX_MESSAGE",
    "PART",
    "PROTOCOL",
    "Api",
    "Handler",
    "Reply",
    "RpcError",
    "decode",
    "encode",
    "endpoint",
    "handle_payload",
    "registrar",
]

PROTOCOL = 1
MAX_HEADER = messages.MAX_HEADER
MAX_BLOB = 64 * 1024
# the largest request or reply on the link (length prefix, header, blob); a bigger message from
# the peer is refused by the connection before it is buffered
MAX_MESSAGE = 2 + MAX_HEADER + MAX_BLOB
PART = 32 * 1024  # the largest blob a request carries
MAX_HAVE = 512  # ids in one `have`
MAX_MISSING = 32 * 1024  # flags in one `missing` reply
MAX_RUN_S = 600

Reply = tuple[dict[str, Any], bytes]
Handler = Callable[[Any, dict[str, Any], bytes], Reply]  # (agent, fields, blob) -> reply

SLOT = Str(16)
COUNT = Int(0, 1 << 53)
BAD_FIELD = "a field is missing, unknown, of the wrong type or over its limit"

#: the AppOptions a `run` request may set, with their limits
APP_OPTIONS = Obj(
    {
        "source_lang": Str(8, min_len=1),
        "target_lang": Str(8, min_len=1),
        "question": Str(500, min_len=1),
        "max_tokens": Int(1, 4096),
        "max_length": Int(1, 1 << 20),
        "partial_every_s": Num(0, 60, above=True),
        "stable_updates": Int(1, 10),
        "look_every_s": Num(0, 600, above=True),
        "once": Bool(),
        "remote": Str(500, min_len=1),
        "remote_model": Str(200, min_len=1),
    },
    what="app options",
)

OPS: tuple[Op, ...] = (
    # identity ---------------------------------------------------------------------------------
    Op(
        "hello",
        doc="Who answers: the protocol, the agent's version, the board and the booted slot.",
        reply={
            "protocol": Int(1, 1 << 16),
            "agent": Str(32),
            "board": Str(64),
            "slot": SLOT,
            "boot_id": COUNT,
        },
    ),
    Op(
        "info",
        doc="The board's state: booted slot, trial and health check, slots, staged bundle, "
        "free bytes, its key's fingerprint and the limits of its requests.",
        reply={
            "board": Str(64),
            "agent": Str(32),
            "booted": SLOT,
            "trial": Bool(),
            "health": Obj(what="the boot's health check (ok, reason, ...)"),
            "active": Opt(SLOT),
            "pending": Opt(SLOT),
            "last": Opt(Obj(what="the last boot event (event, slot, bundle or reason)")),
            "slots": Obj(what="per slot: complete, version, bundle, bytes"),
            "staged": Opt(Bytes32()),
            "free_bytes": COUNT,
            "key": Opt(Str(16)),
            "code": Str(4096),
            "limits": Obj({"part": COUNT, "have": COUNT, "chunk": COUNT}),
        },
    ),
    # flashing ---------------------------------------------------------------------------------
    Op(
        "manifest",
        doc="One part of the bundle's top manifest (zlib), in order from offset 0.",
        fields={"offset": Int(0, MAX_TOP_BYTES)},
        blob=PART,
        blob_doc="the part",
        reply={"received": COUNT},
        errors={"RequestError": "a part out of order, or past the manifest's limit"},
    ),
    Op(
        "begin",
        doc="Stage the bundle whose top manifest was sent: signature, board, budgets and room "
        "on the store are checked from the manifest alone.",
        fields={"sha256": Bytes32(), "codec": Str(8)},
        optional=("codec",),
        blob=64,
        blob_doc="the ed25519 signature (0 or 64 bytes)",
        reply={"slot": SLOT, "bundle": Bytes32()},
        errors={
            "RequestError": "the manifest is incomplete or damaged: send it again",
            "BundleRejected": "signature, board, budget, or no room on the store",
            "StoreError": "both slots are in use (a trial boot is pending)",
        },
    ),
    Op(
        "have",
        doc="Which of these chunk ids the board stores.",
        blob=32 * MAX_HAVE,
        blob_doc=f"up to {MAX_HAVE} raw 32-byte ids",
        reply_blob="one byte per id: 1 when stored",
        errors={"RequestError": "the blob is not a whole number of ids"},
    ),
    Op(
        "missing",
        doc="Which of the staged bundle's index pieces (index: true) or chunks "
        "[start, start + count) the board lacks; chunks once every piece is here.",
        fields={"index": Bool(), "start": Int(0, 1 << 40), "count": Int(0, MAX_MISSING)},
        optional=("index",),
        reply={"total": COUNT},
        reply_blob="one byte per piece or chunk: 1 when missing",
        errors={"RequestError": "no bundle is staged, or start is past the end"},
    ),
    Op(
        "put",
        doc="One part of an index piece or a chunk; whole, it is hash-checked and stored. "
        "A part out of step gets the offset to resume from; offset 0 without data probes it.",
        fields={"id": Bytes32(), "offset": Int(0, MAX_PIECE_BYTES + ZLIB_SLACK)},
        blob=PART,
        blob_doc="the part",
        reply={"stored": Bool(), "resume": COUNT},
        errors={
            "RequestError": "no bundle is staged, or the id is not in it",
            "StoreError": "the data does not match its hash, or the store is full",
            "BundleRejected": "an index piece fails its checks (paths, sizes)",
        },
    ),
    Op(
        "install",
        doc="Install the staged bundle into the free slot, at most `budget` bytes per call; "
        "call again until done.",
        fields={"budget": Int(1, 1 << 30)},
        optional=("budget",),
        reply={"done": Bool(), "slot": SLOT, "files": COUNT, "total": COUNT},
        errors={
            "StoreError": "a chunk is missing or the store is full (the partial slot is removed)"
        },
    ),
    Op(
        "commit",
        doc="Make the installed slot the one to boot on trial; it rolls back unless confirmed "
        "within deadline_s after its boot.",
        fields={"deadline_s": Int(1, 3600)},
        optional=("deadline_s",),
        reply={"slot": SLOT, "boots": COUNT, "deadline_s": COUNT},
        errors={"RequestError": "no bundle staged, or the slot does not hold it"},
    ),
    Op(
        "confirm",
        doc="Keep the slot on trial that booted and passed its health check.",
        reply={"active": Opt(SLOT)},
        errors={"RequestError": "nothing on trial, or its health check failed"},
    ),
    Op("reboot", doc="Restart the board once the reply is sent."),
    Op(
        "verify",
        doc="Read every file of a slot (default: the booted one) back from the store and check "
        "it against the slot's manifest: `bad` lists what is missing or does not match.",
        fields={"slot": SLOT},
        optional=("slot",),
        reply={"slot": SLOT, "complete": Bool(), "bad": List(Str(4096), 10_000)},
        errors={"RequestError": "no such slot"},
    ),
    # operation --------------------------------------------------------------------------------
    Op(
        "stats",
        doc="The agent's resource use, request counters and link statistics.",
        reply={
            "uptime_s": Num(),
            "max_rss_kb": COUNT,
            "cpu_s": Num(),
            "open_files": Int(-1, 1 << 30),
            "counters": Obj(what="requests, errors, chunks_stored"),
            "link": Obj(what="the link's counters"),
        },
    ),
    Op(
        "logs",
        doc="The agent's log lines after number `since` (200 at most).",
        fields={"since": Int(0, 1 << 62)},
        optional=("since",),
        reply={"lines": List(Str(500), 200), "last": Int(0, 1 << 62)},
    ),
    Op(
        "trace",
        doc="A part of a trace file that a `run` wrote, from offset.",
        fields={"name": Str(64), "offset": Int(0, 1 << 40)},
        reply={"size": COUNT, "offset": COUNT},
        reply_blob=f"up to {PART} bytes of the file",
        errors={"RequestError": "no such trace, or a name that is not a plain file name"},
    ),
    Op(
        "inject",
        doc="A part of a clip (a WAV, or a PNG/PPM image) that a later `run` uses as its "
        "microphone or camera; resumable, hash-checked; `held` is where the next part starts.",
        fields={
            "sha256": Bytes32(),
            "size": Int(1, MAX_CLIP_BYTES),
            "offset": Int(0, MAX_CLIP_BYTES),
        },
        blob=PART,
        blob_doc="the part",
        reply={"held": COUNT, "complete": Bool()},
        errors={"RequestError": "a part out of step, or a clip that does not match its hash"},
    ),
    Op(
        "run",
        doc="Run an app on the board for `seconds` with `options`; `audio` and `camera` name "
        "injected clips that replace the microphone and the camera. The reply has the counters "
        "and latency percentiles and names its trace.",
        fields={
            "app": Str(32),
            "seconds": Num(0, MAX_RUN_S, above=True),
            "options": APP_OPTIONS,
            "audio": Bytes32(),
            "camera": Bytes32(),
        },
        optional=("seconds", "options", "audio", "camera"),
        reply={
            "trace": Str(64),
            "seconds": Num(),
            "counters": Obj(),
            "latency_s": Obj(what="per stage: percentiles in seconds"),
            "notes": List(Str(MAX_HEADER), 1000),
            "energy_j": Num(),
            "failures": Obj(what="per app: why it failed"),
            "summary": Json("the app's own summary"),
        },
        errors={
            "RequestError": "no such app, or no injected clip of that hash",
            "(an app's error)": "an app, an engine or a model refused (kind: its class)",
        },
    ),
)


class RpcError(RequestError):
    """A message that is not a well-formed, bounded request or reply."""


def encode(header: Mapping[str, Any], blob: bytes = b"") -> bytes:
    try:
        return messages.encode(header, blob, max_blob=MAX_BLOB)
    except (messages.MessageError, ValueError) as exc:
        raise RpcError(f"message too large or not encodable: {exc}") from exc


def decode(payload: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        return messages.decode(payload, max_blob=MAX_BLOB)
    except messages.MessageError as exc:
        raise RpcError(str(exc)) from exc


def endpoint(io: Any) -> Endpoint:
    """The link's blocking endpoint on `io` (a file descriptor or a pyserial-like port) with
    this API's message limit: the agent and the host build it here, with one setting."""
    return Endpoint(io, max_message=MAX_MESSAGE)


class Api:
    """A table of ops: checks requests (the agent's side) and replies (the host's side)."""

    def __init__(self, ops: Sequence[Op]) -> None:
        self.schema = messages.Schema(ops)
        for op in ops:
            if op.blob > MAX_BLOB:
                raise ValueError(f"op {op.name!r}: a blob of {op.blob} is over {MAX_BLOB}")

    @property
    def ops(self) -> Mapping[str, Op]:
        return self.schema.ops

    def with_ops(self, *ops: Op) -> Api:
        """A copy of this table with more ops (an extension, or a test's own op)."""
        return Api([*self.ops.values(), *ops])

    def check_request(self, op: str, fields: Mapping[str, Any], blob: bytes) -> None:
        """RequestError naming the op, the field and the limit unless the request fits."""
        try:
            self.schema.check_request({**fields, "op": op}, blob)
        except messages.MessageError as exc:
            raise RequestError(str(exc)) from exc

    def check_reply(self, op: str, reply: Mapping[str, Any]) -> None:
        """MessageError unless `reply` is one that `op` may give."""
        self.schema.check_reply(op, reply)

    def check_handlers(self, handlers: Mapping[str, Handler]) -> None:
        """ValueError unless every op has a handler and every handler an op."""
        lacking = sorted(set(self.ops) - set(handlers))
        unknown = sorted(set(handlers) - set(self.ops))
        if lacking or unknown:
            raise ValueError(f"ops without a handler: {lacking}; handlers without an op: {unknown}")

    def markdown(self) -> str:
        return _markdown(self)


API = Api(OPS)


def registrar(table: dict[str, Handler], api: Api = API) -> Callable[[str], Callable[[Any], Any]]:
    """`handles = registrar(HANDLERS)`; `@handles("hello")` puts a function of (agent, fields,
    blob) into HANDLERS as the handler of op "hello", which `api` must declare."""

    def handles(name: str) -> Callable[[Any], Any]:
        if name not in api.ops:
            raise ValueError(f"a handler for {name!r}, which runtime.agent.api does not declare")

        def register(fn: Any) -> Any:
            table[name] = fn
            return fn

        return register

    return handles


def handle_payload(handle: Callable[[str, dict[str, Any], bytes], Reply], payload: bytes) -> bytes:
    """One request payload in, one reply payload out, through `handle(op, fields, blob)`
    (which checks the request and never raises); malformed requests get error replies."""
    try:
        header, blob = decode(payload)
    except RpcError as exc:
        return encode({"ok": False, "error": str(exc), "kind": "RpcError"})
    rid = header.pop("_id", None)
    rid = rid if isinstance(rid, int) and not isinstance(rid, bool) else None
    op = header.pop("op", None)
    if not isinstance(op, str) or len(op) > 32:
        return encode(
            {"ok": False, "error": "request without an 'op'", "kind": "RequestError", "_id": rid}
        )
    reply, data = handle(op, header, blob)
    reply["_id"] = rid
    try:
        return encode(reply, data)
    except RpcError as exc:
        return encode(
            {"ok": False, "error": f"reply too large: {exc}", "kind": "RpcError", "_id": rid}
        )


# -- docs ----------------------------------------------------------------------------------------
def _table(kinds: Mapping[str, Any], optional: Sequence[str]) -> list[str]:
    rows = ["| field | type and limits |", "|---|---|"]
    for name, kind in kinds.items():
        rows.append(f"| `{name}`{' (optional)' * (name in optional)} | {kind.describe()} |")
    return rows


def _markdown(api: Api) -> str:
    out = [
        "# The board protocol",
        "",
        "<!-- generated by `python -m runtime.agent.api --markdown`; edit runtime/agent/api.py -->",
        "",
        f"Protocol {PROTOCOL}. Every request and reply is one link message: a u16 header length, "
        f"a JSON header of at most {MAX_HEADER} bytes, and a binary blob of at most {MAX_BLOB} "
        'bytes. A request\'s header holds `"op"`, `"_id"` (a number the reply repeats) and its '
        'fields; a reply\'s holds `"ok"`, the same `"_id"` and its fields, or, when `ok` is '
        'false, `"error"` (a sentence) and `"kind"` (the error\'s class). A request that does '
        "not fit its op's declaration (a field missing, unknown, of the wrong type or over its "
        "limit, a blob over its limit) is refused with kind `RequestError` before it is served; "
        "a fault of the agent itself is answered with kind `InternalError` (the board stays "
        "reachable and logs it whole).",
        "",
        f"Limits: a blob part of {PART} bytes, {MAX_HAVE} ids per `have`, {MAX_MISSING} flags "
        f"per `missing`, chunks of {CHUNK_SIZE} bytes, runs of at most {MAX_RUN_S} s.",
        "",
    ]
    for op in api.ops.values():
        out += [f"## `{op.name}`", "", op.doc, ""]
        if op.fields:
            out += ["Request:", "", *_table(op.fields, op.optional), ""]
        if op.blob:
            out += [f"Request blob: {op.blob_doc or 'data'}, at most {op.blob} bytes.", ""]
        if op.reply:
            out += ["Reply:", "", *_table(op.reply, op.reply_optional), ""]
        if op.reply_blob:
            out += [f"Reply blob: {op.reply_blob}.", ""]
        errors = {"RequestError": BAD_FIELD} if op.fields or op.blob else {}
        for kind, why in op.errors.items():
            errors[kind] = f"{errors[kind]}; {why}" if kind in errors else why
        if errors:
            out += ["Errors:", "", *(f"- `{k}`: {v}" for k, v in errors.items()), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.agent.api")
    parser.add_argument("--markdown", action="store_true", help="the protocol's docs (Markdown)")
    parser.add_argument("--out", type=Path, help="write them to this file (else stdout)")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.error("say what to write: --markdown")
    text = API.markdown()
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

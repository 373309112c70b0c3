"""The host side of flashing: delta, resumable, verified, A/B with a health-checked trial boot.

`flash(bundle, client)` drives a board's agent through the request sequence of the board API
(`runtime.agent.api`). The client is anything with `call(op, fields, blob) -> (reply, blob)`
and `reconnect(timeout)`: `board.client.Board` over a port in practice, the agent in-process in
unit tests. It sends the signed top manifest, then the index pieces the board lacks, then the
chunks it lacks; a board holding the previous bundle has every piece but the changed ones, so a
code-only change sends about the changed files' chunks. Every step is idempotent on the board,
so after a cut line or a reset the flasher reconnects and runs the sequence again: the manifest
is skipped when the board has it staged, `missing` skips every piece and chunk already stored,
and a record cut half-way resumes at the offset the board reports. Only the chunk in flight is at risk, and only its unsent part is sent again.
Chunk parts go out PIPELINE at a time (`Board.pipeline`), so the line stays busy while the
board verifies and stores what arrived; a reply that shows the board out of step (it restarted
mid-chunk) turns into a resume.

The result says what happened: bytes sent, chunks skipped, the slot booted, the health check,
and, when the board rolled back, the reason it gave.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from board.bundle import Bundle
from board.client import check
from board.errors import BoardRefused, LinkLost, PortUnavailable
from runtime.agent.api import PART

__all__ = ["Client", "FlashResult", "flash"]

log = logging.getLogger(__name__)
MISSING_BATCH = 32 * 1024  # chunks per 'missing' request (one reply byte each)
PIPELINE = 8  # put requests in flight (8 x 32 KiB)


class Client(Protocol):
    def call(
        self, op: str, fields: dict[str, Any] | None = None, blob: bytes = b""
    ) -> tuple[dict[str, Any], bytes]: ...

    def reconnect(self, timeout: float) -> None: ...


@dataclass
class FlashResult:
    ok: bool = False
    board: str = ""
    bundle: str = ""
    version: str = ""
    bundle_bytes: int = 0
    bytes_sent: int = 0  # payload: the next three and the signature
    manifest_bytes_sent: int = 0
    index_bytes_sent: int = 0
    chunk_bytes_sent: int = 0
    wire_bytes_sent: int = 0
    chunks_total: int = 0
    chunks_sent: int = 0
    chunks_skipped: int = 0
    resumed: int = 0
    seconds: float = 0.0
    slot: str | None = None
    booted: str | None = None
    health: dict[str, Any] = field(default_factory=dict)
    rolled_back: bool = False
    reason: str = ""
    already_installed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[str, int, int], None]


def _call(client: Client, op: str, fields: dict[str, Any] | None = None, blob: bytes = b"") -> Any:
    reply, data = client.call(op, fields or {}, blob)
    return check(op, reply), data


def flash(
    bundle: Bundle,
    client: Client,
    progress: Progress | None = None,
    deadline_s: int = 60,
    retries: int = 20,
    force: bool = False,
    reboot_timeout: float = 60.0,
) -> FlashResult:
    """Flash `bundle` through `client`; resume after cuts up to `retries` times in a row."""
    m = bundle.manifest
    result = FlashResult(
        bundle=m.digest,
        version=m.version,
        bundle_bytes=bundle.path.stat().st_size,
        chunks_total=len(m.chunks),
    )
    start = time.perf_counter()
    wire_before = int(getattr(client, "wire_bytes", 0))
    failures = 0
    stage = "transfer"
    while True:
        try:
            if stage == "transfer":
                done = _transfer(bundle, client, result, progress, force)
                if done:
                    break
                stage = "boot"
            if stage == "boot":
                _boot(bundle, client, result, deadline_s, reboot_timeout)
                break
        except PortUnavailable:
            raise
        except LinkLost as exc:
            failures += 1
            result.resumed += 1
            if failures > retries:
                raise LinkLost(f"{exc}; gave up after {retries} attempts to resume") from exc
            log.warning("link lost (%s); resuming", exc)
            client.reconnect(reboot_timeout)
    result.seconds = time.perf_counter() - start
    result.wire_bytes_sent = int(getattr(client, "wire_bytes", 0)) - wire_before
    return result


def _transfer(
    bundle: Bundle, client: Client, result: FlashResult, progress: Progress | None, force: bool
) -> bool:
    """Everything up to the commit; True when the board already runs this bundle."""
    m = bundle.manifest
    hello, _ = _call(client, "hello")
    result.board = hello["board"]
    if hello["board"] != m.board:
        raise BoardRefused(
            f"the bundle is for board {m.board!r} but the port has a {hello['board']!r} board"
        )
    info, _ = _call(client, "info")
    active = info.get("active")
    if (
        not force
        and active
        and info["slots"][active].get("bundle") == m.digest
        and not info.get("pending")
    ):
        result.ok, result.already_installed = True, True
        result.slot = result.booted = info.get("booted")
        result.chunks_skipped = len(m.chunks)
        return True
    if info.get("pending"):
        pending = info["slots"][info["pending"]].get("bundle")
        if pending == m.digest:
            result.slot = info["pending"]
            return False  # an earlier run committed this bundle: go on to its health check
        raise BoardRefused(
            f"slot {info['pending']} holds another bundle on trial; wait {info.get('deadline_s', 60)} s "
            "for it to roll back or flash that bundle to confirm it"
        )
    if info.get("staged") != m.digest:
        packed = zlib.compress(m.raw, 9)
        for offset in range(0, len(packed), PART):
            part = packed[offset : offset + PART]
            _call(client, "manifest", {"offset": offset}, part)
            result.bytes_sent += len(part)
            result.manifest_bytes_sent += len(part)
    begin = {"sha256": m.digest, "codec": "zlib"}
    reply, _ = _call(client, "begin", begin, bundle.signature)
    result.bytes_sent += len(bundle.signature)
    result.slot = reply["slot"]
    pieces = _missing(client, [r.id for r in m.index], index=True)
    sent = _send(bundle, client, pieces, result, None, 0)  # progress counts it with the chunks
    ids = [c.id for c in m.chunks]
    missing = _missing(client, ids, index=False)
    if not result.resumed:
        result.chunks_skipped = len(ids) - len(missing)
    _send(bundle, client, missing, result, progress, sent)
    while True:
        reply, _ = _call(client, "install", {})
        if progress:
            progress("install", reply["files"], reply["total"])
        if reply["done"]:
            break
    return False


def _missing(client: Client, ids: list[str], index: bool) -> list[str]:
    """The ids among `ids` (the staged bundle's index pieces, or its chunks) the board lacks."""
    out = []
    for i in range(0, len(ids), MISSING_BATCH):
        batch = ids[i : i + MISSING_BATCH]
        _, flags = _call(client, "missing", {"index": index, "start": i, "count": len(batch)})
        out += [cid for cid, lacks in zip(batch, flags, strict=True) if lacks]
    return out


def _send(
    bundle: Bundle,
    client: Client,
    missing: list[str],
    result: FlashResult,
    progress: Progress | None,
    before: int,
) -> int:
    """Put every record of `missing` (pieces or chunks), PIPELINE parts in flight; the bytes
    sent. After a resume the first one may be partly on the board: it goes on from there."""
    todo = before + sum(bundle.refs[c].stored for c in missing)
    pieces = bundle.manifest.index_map()
    sent_now = 0

    def parts() -> Iterator[tuple[str, int, bytes]]:
        """(id, offset, bytes) of every part still to send, read lazily."""
        for n, cid in enumerate(missing):
            data = bundle.read_chunk(cid)
            offset = 0
            if n == 0 and result.resumed:  # the record cut in flight may be partly there
                reply, _ = _call(client, "put", {"id": cid, "offset": 0}, b"")
                offset = reply["resume"]
            yield from ((cid, o, data[o : o + PART]) for o in range(offset, len(data), PART))
            if not data:
                yield cid, 0, b""

    pipelined = getattr(client, "pipeline", None)
    window = PIPELINE if pipelined else 1
    pending = parts()
    while batch := list(itertools.islice(pending, window)):
        calls = [("put", {"id": cid, "offset": o}, part) for cid, o, part in batch]
        replies = pipelined(calls) if pipelined else [client.call(*calls[0])]
        for (cid, o, part), (reply, _) in zip(batch, replies, strict=True):
            check("put", reply)
            if not reply["stored"] and reply["resume"] != o + len(part):
                # the board lost the start of this record (it restarted): resume properly
                raise LinkLost(f"record {cid[:12]} is out of step on the board; resuming")
            result.bytes_sent += len(part)
            sent_now += len(part)
            if cid in pieces:
                result.index_bytes_sent += len(part)
            else:
                result.chunk_bytes_sent += len(part)
                result.chunks_sent += int(reply["stored"])
        if progress:
            progress("send", before + sent_now, todo)
    return sent_now


def _boot(
    bundle: Bundle, client: Client, result: FlashResult, deadline_s: int, timeout: float
) -> None:
    """Commit, reboot into the new slot, wait for its health check, confirm or report why not."""
    info, _ = _call(client, "info")
    active = info.get("active")
    if active == result.slot and info["slots"][active].get("bundle") == bundle.manifest.digest:
        # confirmed already (the reply to an earlier confirm was lost in a cut)
        result.ok, result.booted = True, info["booted"]
        result.slot, result.health = active, info.get("health") or result.health
        return
    if not (info.get("pending") and info.get("trial")):
        reply, _ = _call(client, "commit", {"deadline_s": deadline_s})
        result.slot = reply["slot"]
        with contextlib.suppress(LinkLost):  # the board may go down before its reply arrives
            _call(client, "reboot")
        client.reconnect(timeout)
        info, _ = _call(client, "info")
    result.booted = info["booted"]
    result.health = info.get("health") or {}
    if info["booted"] == result.slot and info.get("trial") and result.health.get("ok"):
        _call(client, "confirm")
        result.ok = True
        return
    last = info.get("last") or {}
    result.rolled_back = last.get("event") == "rollback"
    result.reason = last.get("reason") or result.health.get("reason") or "unknown"
    result.ok = False

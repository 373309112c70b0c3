"""The agent's requests, as plain functions of (fields, blob) -> (fields, blob).

`Agent.handle(op, fields, blob)` is everything the link can ask of a board. It never evaluates
or unpickles what arrives: every request is checked against its declaration in the board API
(`runtime.agent.api`: each field's type and limit, the blob's size) before its handler runs, and
a request that fails gets an error reply naming the field; the agent keeps serving. Handlers are
plain functions of (agent, fields, blob), registered against that table with `@handles(op)`.

Flash sequence (the host's flasher drives it; every step is idempotent, so a cut or a reset at
any point resumes by sending the same steps again):

    manifest (parts of the top manifest) -> begin (signature) -> missing index (one byte per
    index piece) -> put (each missing piece) -> missing (one byte per chunk) -> put (parts of
    each missing chunk) -> install (repeat until done) -> commit -> reboot -> [trial boot, health
    check] -> hello/info -> confirm

`begin` refuses a bundle (signature, board, budgets, room on the store: runtime.agent.space)
from its top manifest alone; the slot and boot state change only through the events of
runtime.agent.bootstate; a piece is parsed (paths, sizes) when it arrives and refused before it
is stored.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import resource
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.agent import ed25519
from runtime.agent.api import (
    API,
    MAX_HAVE,
    PART,
    PROTOCOL,
    Api,
    Handler,
    Reply,
    registrar,
)
from runtime.agent.bootstate import MAX_BOOTS, Event
from runtime.agent.bundlefmt import (
    CHUNK_SIZE,
    MAX_TOP_BYTES,
    Top,
    parse_piece,
    parse_top,
)
from runtime.agent.errors import AgentError, BundleRejected, RequestError
from runtime.agent.store import Store
from runtime.budget import fits_flash
from runtime.errors import OculaError
from runtime.profile import Profile

__all__ = ["HANDLERS", "Agent", "BootInfo", "check_bundle"]

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
#: the handler of each op of runtime.agent.api, registered with @handles below
HANDLERS: dict[str, Handler] = {}
handles = registrar(HANDLERS)


@dataclass
class BootInfo:
    """What the boot ROM told this agent: which slot it runs and whether it is on trial."""

    slot: str  # "a", "b" or "factory"
    trial: bool = False
    boot_id: int = 0
    health: dict[str, Any] = field(default_factory=dict)
    code_path: str = ""


def check_bundle(manifest: Top, signature: bytes, profile: Profile, key: bytes | None) -> None:
    """Every refusal a board makes before accepting a bundle; BundleRejected says which."""
    if key is not None:
        if not signature:
            raise BundleRejected(
                f"board {profile.name} holds a public key and refuses unsigned bundles; "
                "build the bundle with --key"
            )
        if not ed25519.verify(key, manifest.raw, signature):
            raise BundleRejected(
                f"board {profile.name}: the bundle signature does not verify with the board's "
                "key (tampered bundle, or signed by another key)"
            )
    if manifest.board != profile.name:
        raise BundleRejected(
            f"the bundle is for board {manifest.board!r}, this board is {profile.name!r}; "
            f"build it with --board {profile.name}"
        )
    mb = manifest.artifact_bytes / 2**20
    if mb > profile.budget.max_artifact_mb:
        raise BundleRejected(
            f"the bundle's artifacts take {mb:.1f} MiB; board {profile.name} allows "
            f"{profile.budget.max_artifact_mb} MiB (budget.max_artifact_mb)"
        )
    if manifest.rss_mb > profile.budget.max_rss_mb:
        raise BundleRejected(
            f"the bundle needs about {manifest.rss_mb} MiB of RAM; board {profile.name} allows "
            f"{profile.budget.max_rss_mb} MiB (budget.max_rss_mb)"
        )
    if not fits_flash(manifest.total_bytes, profile.memory.flash_mb):
        raise BundleRejected(
            f"the bundle is {manifest.total_bytes / 2**20:.1f} MiB; two slots of it do not fit in "
            f"board {profile.name}'s {profile.memory.flash_mb} MiB of flash"
        )


def _inflate_manifest(data: bytes) -> bytes:
    """A zlib-compressed top manifest, inflated to at most MAX_TOP_BYTES."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_TOP_BYTES + 1)
    except zlib.error as exc:
        raise RequestError(f"manifest is not valid zlib data ({exc}); send it again") from exc
    if len(raw) > MAX_TOP_BYTES or not inflater.eof:
        raise RequestError(f"manifest inflates past {MAX_TOP_BYTES} bytes or is cut")
    return raw


class Agent:
    """One board's agent state; `handle` serves one request."""

    def __init__(
        self,
        store: Store,
        profile: Profile,
        key: bytes | None,
        boot: BootInfo,
        api: Api = API,
        handlers: dict[str, Handler] | None = None,
    ) -> None:
        """`api` and `handlers`: the requests this agent serves (an extension's, a test's)."""
        self.api = api
        self.handlers = HANDLERS if handlers is None else handlers
        api.check_handlers(self.handlers)
        self.store = store
        self.profile = profile
        self.key = key
        self.boot = boot
        self.started = time.monotonic()
        self.reboot_requested = False
        self._committed_here = False  # a commit in this boot: its trial starts at the next
        self.logs: deque[tuple[int, str]] = deque(maxlen=1000)
        self._log_seq = 0
        self._incoming = bytearray()
        self._partial: tuple[str, bytearray] | None = None
        self.counters: dict[str, int] = {"requests": 0, "errors": 0, "chunks_stored": 0}
        self.link_stats: Callable[[], dict[str, int]] | None = None  # set by the server

    def note(self, line: str) -> None:
        self._log_seq += 1
        self.logs.append((self._log_seq, line[:500]))
        log.info("%s", line)

    def handle(self, op: str, fields: dict[str, Any], blob: bytes) -> Reply:
        """Serve one request; errors become {"ok": False, "error": ...} replies."""
        self.counters["requests"] += 1
        try:
            self.api.check_request(op, fields, blob)
            reply, data = self.handlers[op](self, fields, blob)
        except AgentError as exc:
            self.counters["errors"] += 1
            self.note(f"{op}: {exc}")
            return {"ok": False, "error": str(exc), "kind": type(exc).__name__}, b""
        except OSError as exc:
            self.counters["errors"] += 1
            self.note(f"{op}: storage error {exc}")
            return {"ok": False, "error": self._storage_error(exc), "kind": "StoreError"}, b""
        except OculaError as exc:  # an app, an engine or a model refused: say so, keep serving
            self.counters["errors"] += 1
            self.note(f"{op}: {exc}")
            return {"ok": False, "error": str(exc), "kind": type(exc).__name__}, b""
        except Exception as exc:  # a bug: log it whole, answer, and keep the board reachable
            self.counters["errors"] += 1
            log.exception("request %s failed", op)
            error = f"internal error in '{op}': {exc!r}"[:500]
            return {"ok": False, "error": error, "kind": "InternalError"}, b""
        return {"ok": True, **reply}, data

    def _storage_error(self, exc: OSError) -> str:
        """An OSError of the store in words: what failed and, for a full store, how much room
        the staged flash still needs."""
        error = f"storage error on board {self.profile.name}: {exc}"
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return error
        staged = self.store.staged()
        try:
            need = f" ({self.store.space_for(staged).describe()})" if staged else ""
        except (OSError, AgentError):
            need = ""
        return f"{error}; its store is full{need}: free space on the board, then flash again"

    # identity ---------------------------------------------------------------------------------
    @handles("hello")
    def op_hello(self, fields: dict[str, Any], blob: bytes) -> Reply:
        return {
            "protocol": PROTOCOL,
            "agent": AGENT_VERSION,
            "board": self.profile.name,
            "slot": self.boot.slot,
            "boot_id": self.boot.boot_id,
        }, b""

    @handles("info")
    def op_info(self, fields: dict[str, Any], blob: bytes) -> Reply:
        state = self.store.state()
        staged = self.store.staged()
        return {
            "board": self.profile.name,
            "agent": AGENT_VERSION,
            "booted": self.boot.slot,
            "trial": self.boot.trial,
            "health": self._health(state.trial),
            "active": state.active,
            "pending": state.trial,
            "last": state.last,
            "slots": {s: self.store.slot_info(s) for s in ("a", "b")},
            "staged": staged.digest if staged else None,
            "free_bytes": self.store.free_bytes(),
            "key": hashlib.sha256(self.key).hexdigest()[:16] if self.key else None,
            "code": self.boot.code_path,
            "limits": {"part": PART, "have": MAX_HAVE, "chunk": CHUNK_SIZE},
        }, b""

    def _health(self, pending: str | None) -> dict[str, Any]:
        """The boot's health check; a slot committed before this boot that did not boot is
        one the boot ROM could not count (a full or read-only store), said as such."""
        if pending is None or self.boot.trial or self._committed_here:
            return self.boot.health
        return {
            "ok": False,
            "reason": f"slot {pending} is committed but the board booted slot {self.boot.slot}: "
            f"the boot ROM could not save its boot count (the store has {self.store.free_bytes()}"
            " bytes free, or is read-only); free space on the board, then flash again",
        }

    # flashing ---------------------------------------------------------------------------------
    @handles("manifest")
    def op_manifest(self, fields: dict[str, Any], blob: bytes) -> Reply:
        offset = fields["offset"]
        if offset == 0:
            self._incoming = bytearray()
        if offset != len(self._incoming) or offset + len(blob) > MAX_TOP_BYTES:
            raise RequestError(f"manifest part at {offset}; expected {len(self._incoming)}")
        self._incoming += blob
        return {"received": len(self._incoming)}, b""

    @handles("begin")
    def op_begin(self, fields: dict[str, Any], blob: bytes) -> Reply:
        digest = fields["sha256"]
        if len(blob) not in (0, 64):
            raise RequestError("signature must be 0 or 64 bytes")
        raw = bytes(self._incoming)
        if fields.get("codec") == "zlib" and raw:
            raw = _inflate_manifest(raw)
        if hashlib.sha256(raw).hexdigest() != digest:
            staged = self.store.staged()
            if staged is None or staged.digest != digest:
                raise RequestError("manifest incomplete or damaged in transit; send it again")
            raw = staged.raw
        manifest = parse_top(raw)
        check_bundle(manifest, blob, self.profile, self.key)
        slot = self.store.writable_slot()
        space = self.store.space_for(manifest)
        if space.missing:
            raise BundleRejected(
                f"board {self.profile.name} has no room for bundle {manifest.digest[:12]}: "
                f"{space.describe()}; free that much on the board or flash a smaller bundle"
            )
        self.store.stage(manifest, blob)
        self._incoming = bytearray()
        self.note(f"staged bundle {manifest.digest[:12]} version {manifest.version} for {slot}")
        return {"slot": slot, "bundle": manifest.digest}, b""

    def _staged(self) -> Top:
        m = self.store.staged()
        if m is None:
            raise RequestError("no bundle is staged; send 'manifest' and 'begin' first")
        return m

    @handles("have")
    def op_have(self, fields: dict[str, Any], blob: bytes) -> Reply:
        if len(blob) % 32:
            raise RequestError(f"have: up to {MAX_HAVE} raw 32-byte ids")
        ids = [blob[i : i + 32].hex() for i in range(0, len(blob), 32)]
        return {}, bytes(self.store.have(ids))

    @handles("missing")
    def op_missing(self, fields: dict[str, Any], blob: bytes) -> Reply:
        """Which of the staged bundle's index pieces (`index`: true) or chunks [start,
        start+count) the board lacks: one byte each (1 = missing), so the host sends no ids at
        all. Chunks can be listed once every index piece is here."""
        top = self._staged()
        refs = top.index if fields.get("index", False) else self.store.resolved(top).chunks
        start, count = fields["start"], fields["count"]
        if start > len(refs):
            raise RequestError(f"field 'start' must be an integer from 0 to {len(refs)}")
        ids = [c.id for c in refs[start : start + count]]
        return {"total": len(refs)}, bytes(not has for has in self.store.have(ids))

    @handles("put")
    def op_put(self, fields: dict[str, Any], blob: bytes) -> Reply:
        """One part of an index piece or a chunk; whole, it is hash-checked (a piece is parsed
        too) and stored. A part out of step gets the offset to resume from."""
        cid, offset = fields["id"], fields["offset"]
        top = self._staged()
        ref = top.index_map().get(cid)
        check = parse_piece if ref is not None else None
        if ref is None:
            ref = self.store.resolved(top).chunk_map().get(cid)
        if ref is None:
            raise RequestError(f"chunk {cid[:12]} is not in the staged bundle")
        if ref.stored == 0:  # the chunk of an empty file: nothing to receive
            self.store.put(ref, b"")
            return {"stored": True, "resume": 0}, b""
        same = self._partial is not None and self._partial[0] == cid
        if offset == 0 and not blob:  # a probe: where does this chunk resume?
            return {
                "stored": False,
                "resume": len(self._partial[1]) if same and self._partial else 0,
            }, b""
        if offset == 0 or not same:
            if offset != 0:
                return {"stored": False, "resume": 0}, b""
            self._partial = (cid, bytearray())
        assert self._partial is not None
        part = self._partial[1]
        if offset != len(part):
            return {"stored": False, "resume": len(part)}, b""
        if offset + len(blob) > ref.stored:
            self._partial = None
            raise RequestError(f"chunk {cid[:12]}: more than its {ref.stored} bytes")
        part += blob
        if len(part) < ref.stored:
            return {"stored": False, "resume": len(part)}, b""
        self._partial = None
        fresh = self.store.put(ref, bytes(part), check)
        self.counters["chunks_stored"] += int(fresh)
        return {"stored": True, "resume": ref.stored}, b""

    @handles("install")
    def op_install(self, fields: dict[str, Any], blob: bytes) -> Reply:
        budget = fields.get("budget", 32 << 20)
        self._staged()
        return self.store.install_step(budget), b""

    @handles("commit")
    def op_commit(self, fields: dict[str, Any], blob: bytes) -> Reply:
        m = self._staged()
        state = self.store.state()
        pending = self.store.slot_manifest(state.trial) if state.trial else None
        # committing the bundle already on trial again renews its boots (a flash resumed, or
        # a power-on that could not save its boot count and booted the active slot instead)
        if state.trial is not None and pending is not None and pending.digest == m.digest:
            slot = state.trial
        else:
            slot = self.store.writable_slot()
        installed = self.store.slot_manifest(slot)
        if installed is None or installed.digest != m.digest:
            raise RequestError(f"slot {slot} does not hold the staged bundle; install it first")
        deadline = fields.get("deadline_s", 60)
        self.store.transition(Event.COMMIT, slot=slot, bundle=m.digest, deadline_s=deadline)
        self._committed_here = True
        self.note(f"committed slot {slot} for a trial boot")
        return {"slot": slot, "boots": MAX_BOOTS, "deadline_s": deadline}, b""

    @handles("confirm")
    def op_confirm(self, fields: dict[str, Any], blob: bytes) -> Reply:
        state = self.store.state()
        if not self.boot.trial or state.trial != self.boot.slot:
            raise RequestError(f"nothing to confirm: slot {self.boot.slot} is not on trial")
        if not self.boot.health.get("ok"):
            raise RequestError(f"slot {self.boot.slot} failed its health check")
        state = self.store.transition(Event.CONFIRM, slot=self.boot.slot)
        self.store.clear_staging()
        self.boot.trial = False
        self.note(f"slot {state.active} confirmed")
        return {"active": state.active}, b""

    @handles("verify")
    def op_verify(self, fields: dict[str, Any], blob: bytes) -> Reply:
        slot = fields.get("slot", self.boot.slot)
        if slot not in ("a", "b"):
            raise RequestError(f"no slot {slot!r} to verify; slots are 'a' and 'b'")
        complete = self.store.slot_manifest(slot) is not None
        bad = self.store.verify_slot(slot) if complete else []
        return {"slot": slot, "complete": complete, "bad": bad[:10_000]}, b""

    @handles("reboot")
    def op_reboot(self, fields: dict[str, Any], blob: bytes) -> Reply:
        self.reboot_requested = True
        return {}, b""

    def rollback(self, reason: str, event: Event = Event.HEALTH_FAIL) -> None:
        """Give up the trial slot: the next boot runs the previous one. Never fails: when the
        boot state cannot be saved, the trial's boots run out and the boot ROM rolls back."""
        slot = self.store.state().trial
        if slot is None:
            return
        if self.store.transition(event, fatal=False, reason=reason).trial is None:
            self.note(f"rolled back from slot {slot}: {reason}")
        else:
            self.note(
                f"slot {slot}: {reason}; the rollback could not be saved, so the boot ROM "
                "rolls back when its boots run out"
            )

    # operation --------------------------------------------------------------------------------
    @handles("stats")
    def op_stats(self, fields: dict[str, Any], blob: bytes) -> Reply:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "uptime_s": time.monotonic() - self.started,
            "max_rss_kb": usage.ru_maxrss,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "open_files": len(os.listdir("/proc/self/fd"))
            if os.path.isdir("/proc/self/fd")
            else -1,
            "counters": dict(self.counters),
            "link": self.link_stats() if self.link_stats else {},
        }, b""

    @handles("logs")
    def op_logs(self, fields: dict[str, Any], blob: bytes) -> Reply:
        since = fields.get("since", 0)
        lines = [(s, t) for s, t in self.logs if s > since][:200]
        return {"lines": [t for _, t in lines], "last": lines[-1][0] if lines else since}, b""

    @handles("trace")
    def op_trace(self, fields: dict[str, Any], blob: bytes) -> Reply:
        name, offset = fields["name"], fields["offset"]
        if not name.replace("-", "_").replace(".", "_").isidentifier():
            raise RequestError(f"trace name {name!r} must be a plain file name")
        path = self.store.root / "traces" / name
        if not path.is_file():
            raise RequestError(f"no trace {name!r} on board {self.profile.name}")
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(PART)
        return {"size": path.stat().st_size, "offset": offset}, data

    @handles("inject")
    def op_inject(self, fields: dict[str, Any], blob: bytes) -> Reply:
        """A part of a clip (WAV or image) that a later `run` uses as its microphone or camera
        (runtime.agent.inject): fields sha256, size, offset; `held` is where the next part starts."""
        from runtime.agent.inject import Clips

        size, offset = fields["size"], fields["offset"]
        held = Clips(self.store.root / "inject").put(fields["sha256"], size, offset, blob)
        return {"held": held, "complete": held == size}, b""

    @handles("run")
    def op_run(self, fields: dict[str, Any], blob: bytes) -> Reply:
        """Run an app on this board for `seconds` with `options` (AppOptions fields); `audio` and
        `camera`, sha256s of injected clips (`op_inject`), replace the microphone (a WAV played in
        real time) and the camera (one image, every frame). The reply has its
        counters and latency percentiles and names its trace (see `op_trace`)."""
        app = fields["app"]
        seconds = fields.get("seconds", 5.0)
        from runtime.apps import APPS
        from runtime.apps.device import app_options, run_on_board

        if app not in APPS:
            raise RequestError(f"no app {app!r}; apps are {', '.join(APPS)}")
        options = app_options(fields.get("options", {}))
        injected: dict[str, Path] = {}
        for device in ("audio", "camera"):
            if device in fields:
                from runtime.agent.inject import Clips

                digest = fields[device]
                clip = Clips(self.store.root / "inject").path(digest)
                if clip is None:
                    raise RequestError(
                        f"no injected clip {digest[:12]} for the {device}; send it with 'inject'"
                    )
                injected[device] = clip
        artifacts = self.store.root / "apps" / "no-artifacts"  # factory code: no models
        if (
            self.boot.slot in ("a", "b")
            and (self.store.slot_dir(self.boot.slot) / "artifacts").is_dir()
        ):
            artifacts = self.store.slot_dir(self.boot.slot) / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        traces = self.store.root / "traces"
        traces.mkdir(exist_ok=True)
        self.note(f"running {app} for {seconds} s")
        reply = run_on_board(
            app,
            float(seconds),
            artifacts=artifacts,
            profile=self.profile,
            traces=traces,
            work=self.store.root / "apps",
            options=options,
            audio=injected.get("audio"),
            camera=injected.get("camera"),
        )
        return reply, b""

"""The device's flash: a staging chunk store, two slots (A/B) and the boot state.

Layout under the store root (nothing is ever written outside it):

    board.toml        the board's profile (provisioned at the factory; identifies the board)
    trusted.pub       optional Ed25519 public key (32 raw bytes): only bundles it signed install
    state.json        the boot state: active slot, trial slot + boots left, the last event
    staging/          manifest.json + manifest.sig (the top manifest of the bundle being flashed),
                      chunks/<id> (its index pieces and chunks, each stored once its hash matched)
    slots/a, slots/b  installed files + slot.json (the top manifest, its signature and its index
                      pieces; written last: a slot without it is incomplete)

The active slot is also a source: a chunk it holds is read from its files, an index piece from
its slot.json, so a re-flash needs neither sent again.

Rules it keeps, so that a power cut at any moment leaves a bootable board:
- every file that matters is written to a temporary name, fsynced, then renamed into place;
- a chunk enters the store only after its sha256 matches its name;
- installing writes only the slot that is neither active nor on trial, and removes that slot's
  slot.json first, so a half-written slot is never booted;
- the switch to a new slot is one atomic rename of state.json, whose changes are the events of
  `runtime.agent.bootstate` (`transition`);
- a flash is accepted only when the store has room for all of it (`space_for`: the chunks still
  to be staged, the whole slot copy, the boot state and a margin), and an install that fails
  (a full disk, an I/O error) removes the partial slot it wrote before it reports the error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

from runtime.agent.bootstate import (
    BootMachine,
    BootState,
    BootStateError,
    Event,
    drive,
    parse_state,
)
from runtime.agent.bundlefmt import BundleManifest, ChunkRef, Top, parse_piece, parse_top, resolve
from runtime.agent.errors import BundleRejected, RequestError, StoreError
from runtime.agent.space import Space, space_for, usage

__all__ = ["SLOTS", "BootState", "Space", "Store", "atomic_write"]

log = logging.getLogger(__name__)

SLOTS = ("a", "b")
SLOT_MARK = "slot.json"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees either the old or the new content; a write
    that fails (a full disk) removes its temporary file and raises."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _why(exc: OSError) -> str:
    """An OSError in words a user acts on."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the store is full ({exc.strerror})"
    if exc.errno == errno.EROFS:
        return "the store is read-only"
    return f"{exc.strerror or exc} ({exc.filename or 'store'})"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unpack_chunk(ref: ChunkRef, data: bytes) -> bytes:
    """Decompress (bounded by its size) and verify one chunk or index piece; StoreError when it
    is not what ref says."""
    if len(data) != ref.stored:
        raise StoreError(f"chunk {ref.id[:12]}: got {len(data)} bytes, expected {ref.stored}")
    if ref.codec == "zlib":
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(data, ref.size + 1)
        except zlib.error as exc:
            raise StoreError(f"chunk {ref.id[:12]}: bad zlib data ({exc})") from exc
        if not inflater.eof or inflater.unconsumed_tail:
            raise StoreError(f"chunk {ref.id[:12]}: zlib stream too long or cut")
    else:
        raw = data
    if len(raw) != ref.size or hashlib.sha256(raw).hexdigest() != ref.id:
        raise StoreError(f"chunk {ref.id[:12]}: content does not match its sha256; not stored")
    return raw


class Store:
    """The store at `root`; every method checks its inputs and stays inside root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.staging = self.root / "staging"
        self.chunks = self.staging / "chunks"
        self._resolved: BundleManifest | None = None
        for d in (self.chunks, self.root / "slots" / "a", self.root / "slots" / "b"):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a read-only or full store still boots and answers
                log.warning("store %s: cannot create %s (%s)", self.root, d.name, exc)

    # boot state -------------------------------------------------------------------------------
    def state(self) -> BootState:
        path = self.root / "state.json"
        try:
            return parse_state(path.read_bytes())
        except FileNotFoundError:
            return BootState()
        except ValueError as exc:  # cannot happen with atomic writes; say so if it does
            raise StoreError(f"{path}: boot state is damaged ({exc})") from exc

    def save_boot_state(self, raw: bytes) -> None:
        """Write state.json; only the boot state machine's `drive` calls it."""
        atomic_write(self.root / "state.json", raw)

    def transition(self, event: Event, *, fatal: bool = True, **args: Any) -> BootState:
        """Feed one event to the boot state machine and save the result. A save that fails
        raises StoreError when `fatal` (the request is refused, the state is unchanged), else
        is logged and the state on disk stays as it was."""
        machine = BootMachine(self.state())
        try:
            error = drive(machine, [(event, args)], self.save_boot_state)
        except BootStateError as exc:
            raise RequestError(str(exc)) from exc
        if error is not None and fatal:
            raise StoreError(
                f"cannot record {event.value} in {self.root / 'state.json'}: {_why(error)}; "
                "the boot state is unchanged"
            ) from error
        return machine.record

    # slots ------------------------------------------------------------------------------------
    def slot_dir(self, slot: str) -> Path:
        if slot not in SLOTS:
            raise StoreError(f"no slot {slot!r}; slots are {SLOTS}")
        return self.root / "slots" / slot

    def slot_manifest(self, slot: str) -> BundleManifest | None:
        """The manifest of a complete slot, or None when the slot is empty or incomplete."""
        try:
            doc = json.loads((self.slot_dir(slot) / SLOT_MARK).read_bytes())
            top = parse_top(bytes.fromhex(doc["manifest"]))
            pieces = {i: text.encode() for i, text in doc["index"].items()}
            return resolve(top, pieces)
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError, BundleRejected):
            return None

    def _slot_pieces(self, slot: str | None) -> dict[str, str]:
        """Index piece id -> piece text, of a complete slot (empty when there is none)."""
        if slot is None:
            return {}
        try:
            doc = json.loads((self.slot_dir(slot) / SLOT_MARK).read_bytes())
            pieces = doc["index"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return {}
        return pieces if isinstance(pieces, dict) else {}

    def slot_info(self, slot: str) -> dict[str, Any]:
        m = self.slot_manifest(slot)
        if m is None:
            return {"complete": False}
        return {"complete": True, "version": m.version, "bundle": m.digest, "bytes": m.total_bytes}

    def writable_slot(self) -> str:
        """The slot a new bundle goes to: neither the active one nor one on trial."""
        state = self.state()
        busy = {state.active, state.trial}
        for slot in SLOTS:
            if slot not in busy:
                return slot
        raise StoreError("both slots are in use (a trial boot is pending); confirm it first")

    # staging ----------------------------------------------------------------------------------
    def stage(self, top: Top, signature: bytes) -> None:
        """Make `top` the bundle being flashed; keep the pieces and chunks it can use."""
        current = self.staged()
        if current is not None and current.digest == top.digest:
            return
        if current is not None:
            keep = {r.id for r in top.index}
            for raw in self.pieces_here(list(keep)).values():  # and the chunks of those here
                with contextlib.suppress(BundleRejected):
                    keep.update(parse_piece(raw)[1])
            for p in self.chunks.iterdir():
                if p.name not in keep:
                    p.unlink(missing_ok=True)
        self._resolved = None
        atomic_write(self.staging / "manifest.sig", signature)
        atomic_write(self.staging / "manifest.json", top.raw)

    def staged(self) -> Top | None:
        """The top manifest of the bundle being flashed (its pieces may not all be here yet)."""
        try:
            return parse_top((self.staging / "manifest.json").read_bytes())
        except (FileNotFoundError, BundleRejected):
            return None

    def pieces_here(self, ids: list[str]) -> dict[str, bytes]:
        """The index pieces of `ids` that are here, from staging or the active slot."""
        slot = self._slot_pieces(self.state().active)
        out = {}
        for pid in ids:
            path = self.chunks / pid
            if path.is_file():
                out[pid] = path.read_bytes()
            elif isinstance(slot.get(pid), str):
                out[pid] = slot[pid].encode()
        return out

    def resolved(self, top: Top) -> BundleManifest:
        """The staged bundle's whole manifest; StoreError naming a piece that is not here yet.
        Pieces are immutable (content-addressed), so the result is kept for later requests."""
        if self._resolved is not None and self._resolved.digest == top.digest:
            return self._resolved
        pieces = self.pieces_here([r.id for r in top.index])
        for ref in top.index:
            if ref.id not in pieces:
                raise StoreError(
                    f"index piece {ref.id[:12]} of the staged bundle is missing; send it first"
                )
        self._resolved = resolve(top, pieces)
        return self._resolved

    def staged_signature(self) -> bytes:
        try:
            return (self.staging / "manifest.sig").read_bytes()
        except FileNotFoundError:
            return b""

    def active_sources(self) -> dict[str, tuple[Path, int]]:
        """Chunk id -> (file, offset) for chunks the active slot already holds."""
        state = self.state()
        out: dict[str, tuple[Path, int]] = {}
        if state.active is None:
            return out
        m = self.slot_manifest(state.active)
        if m is None:
            return out
        sizes = m.chunk_map()
        base = self.slot_dir(state.active)
        for f in m.files:
            offset = 0
            for cid in f.chunks:
                out.setdefault(cid, (base / f.path, offset))
                offset += sizes[cid].size
        return out

    def have(self, ids: list[str]) -> list[bool]:
        """Whether each chunk or index piece is here (staged, or in the active slot)."""
        sources = self.active_sources()
        pieces = self._slot_pieces(self.state().active)
        return [i in sources or i in pieces or (self.chunks / i).is_file() for i in ids]

    def put(self, ref: ChunkRef, data: bytes, check: Any = None) -> bool:
        """Verify and store one chunk or piece (`check(raw)` may refuse it before it is stored);
        False when it was already there (idempotent)."""
        path = self.chunks / ref.id
        if path.is_file():
            return False
        raw = unpack_chunk(ref, data)
        if check is not None:
            check(raw)
        atomic_write(path, raw)
        return True

    def _read_chunk(self, ref: ChunkRef, sources: dict[str, tuple[Path, int]]) -> bytes:
        path = self.chunks / ref.id
        if path.is_file():
            data = path.read_bytes()
        elif ref.id in sources:
            file, offset = sources[ref.id]
            with open(file, "rb") as fh:
                fh.seek(offset)
                data = fh.read(ref.size)
        else:
            raise StoreError(f"chunk {ref.id[:12]} is missing; send it before installing")
        if hashlib.sha256(data).hexdigest() != ref.id:
            raise StoreError(f"chunk {ref.id[:12]} in the store is corrupt; send it again")
        return data

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def space_for(self, top: Top) -> Space:
        """The room a flash of `top` needs here against what it has (runtime.agent.space)."""
        return space_for(self, top)

    # install ----------------------------------------------------------------------------------
    def install_step(self, budget_bytes: int = 64 << 20) -> dict[str, Any]:
        """Write up to about `budget_bytes` of the staged bundle into the writable slot.

        Call again until it returns done; each call resumes after the files already in place
        (a file is renamed into the slot only once it is whole and its sha256 matches). When a
        write fails (OSError: a full disk, an I/O error) the partial slot is removed and
        StoreError says what is missing; the staged chunks stay, so a later flash resumes.
        """
        top = self.staged()
        if top is None:
            raise StoreError("no bundle is staged; send a manifest first")
        m = self.resolved(top)
        slot = self.writable_slot()
        try:
            return self._install(m, slot, budget_bytes)
        except OSError as exc:
            freed = usage(self.slot_dir(slot))
            self._empty_slot(slot)
            space = self.space_for(top)
            raise StoreError(
                f"installing into slot {slot} failed: {_why(exc)}; the partial slot was removed "
                f"({freed} bytes freed) and the active slot is untouched; "
                f"{space.describe()}: free that much on the board, then flash again"
            ) from exc

    def _empty_slot(self, slot: str) -> None:
        base = self.slot_dir(slot)
        with contextlib.suppress(OSError):
            (base / SLOT_MARK).unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)
        with contextlib.suppress(OSError):
            base.mkdir(parents=True, exist_ok=True)

    def _install(self, m: BundleManifest, slot: str, budget_bytes: int) -> dict[str, Any]:
        base = self.slot_dir(slot)
        mark = base / SLOT_MARK
        existing = self.slot_manifest(slot)
        if existing is not None and existing.digest == m.digest:
            return {"done": True, "slot": slot, "files": len(m.files), "total": len(m.files)}
        if mark.exists():
            mark.unlink()
            _fsync_dir(base)
        progress = base / ".installing"
        owner = progress.read_text() if progress.exists() else ""
        if owner != m.digest:
            shutil.rmtree(base)
            base.mkdir(parents=True)
            atomic_write(progress, m.digest.encode())
        sizes = m.chunk_map()
        sources = self.active_sources()
        written = 0
        done = 0
        for f in m.files:
            target = base / f.path
            if target.is_file() and target.stat().st_size == f.size:
                done += 1
                continue
            if written >= budget_bytes:
                break
            target.parent.mkdir(parents=True, exist_ok=True)
            refs = [sizes[c] for c in f.chunks]
            complete, n = self._write_file(target, f.sha256, refs, sources, budget_bytes - written)
            written += n
            if not complete:
                break
            done += 1
        if done < len(m.files):
            return {"done": False, "slot": slot, "files": done, "total": len(m.files)}
        index = {i: raw.decode() for i, raw in self.pieces_here([r.id for r in m.index]).items()}
        if len(index) != len(m.index):
            raise StoreError("an index piece of the staged bundle went missing; send it again")
        doc = {"manifest": m.raw.hex(), "signature": self.staged_signature().hex(), "index": index}
        atomic_write(mark, json.dumps(doc).encode())
        progress.unlink(missing_ok=True)
        return {"done": True, "slot": slot, "files": done, "total": len(m.files)}

    def _write_file(
        self,
        target: Path,
        sha: str,
        refs: list[ChunkRef],
        sources: dict[str, tuple[Path, int]],
        budget: int,
    ) -> tuple[bool, int]:
        """Append whole chunks to `target`'s .part file, up to `budget` bytes (at least one
        chunk); when the file is whole and its sha256 matches, rename it into place.

        Returns (complete, bytes written). A .part left by an earlier call (or a power cut) is
        continued from its last whole chunk; a torn one fails the final hash and starts over.
        """
        tmp = target.with_name(f".{target.name}.part")
        have = tmp.stat().st_size if tmp.exists() else 0
        offset, start = 0, 0
        for ref in refs:  # continue after the last chunk that is wholly in the .part file
            if offset + ref.size > have:
                break
            offset += ref.size
            start += 1
        written = 0
        with open(tmp, "r+b" if tmp.exists() else "wb") as out:
            out.truncate(offset)
            out.seek(offset)
            for ref in refs[start:]:
                out.write(self._read_chunk(ref, sources))
                written += ref.size
                if written >= budget:
                    break
            out.flush()
            os.fsync(out.fileno())
        if written < sum(r.size for r in refs[start:]):
            return False, written  # more of this file in the next call
        digest = hashlib.sha256()
        with open(tmp, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != sha:
            tmp.unlink()
            if start == 0:
                raise StoreError(f"{target.name}: assembled file does not match its sha256")
            return False, written  # torn by a power cut before this call: write it again
        os.replace(tmp, target)
        return True, written

    def verify_slot(self, slot: str) -> list[str]:
        """Files of a complete slot whose content no longer matches the manifest."""
        m = self.slot_manifest(slot)
        if m is None:
            return ["slot.json (slot incomplete)"]
        bad = []
        base = self.slot_dir(slot)
        for f in m.files:
            digest = hashlib.sha256()
            try:
                with open(base / f.path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
            except OSError:
                bad.append(f.path)
                continue
            if digest.hexdigest() != f.sha256:
                bad.append(f.path)
        return bad

    def clear_staging(self) -> None:
        self._resolved = None
        (self.staging / "manifest.json").unlink(missing_ok=True)
        for p in self.chunks.iterdir():
            p.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.staging / "manifest.sig").unlink()

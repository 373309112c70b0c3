"""How much room a flash needs on the store, against how much it has.

A flash needs, at its peak (the trial boot, before the confirm clears the staging): the chunks
and index pieces still to be received, in `staging/`; a whole copy of the bundle's files in the
writable slot, with its slot.json; the optimized copies of its models that the trial's health
check writes next to them (runtime.engine.session's cache: model files are counted again, and
before their index pieces are here every artifact byte is); the boot state and temporary files;
a margin.
Chunks the active slot holds are read from it and need no room. What the flash itself frees
counts as available: the writable slot's old files (the install replaces them) and staged
chunks of another bundle (`stage` drops them). Sizes are counted in whole filesystem blocks.
Before the chunks are listed (their index pieces not yet here) a piece's files are counted
whole, as if every chunk in them were new: the estimate errs towards refusing at `begin`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runtime.agent.bundlefmt import CHUNK_SIZE, ChunkRef, Top, parse_piece
from runtime.agent.errors import BundleRejected, StoreError

__all__ = ["MARGIN", "Holdings", "Space", "space_for", "usage"]

MARGIN = 256 * 1024  # kept free beyond a flash's need (logs, a trace, the filesystem's own)


def usage(path: Path) -> int:
    """Bytes a file or a tree takes on disk (allocated blocks)."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not path.is_dir():
        return st.st_blocks * 512
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


class Holdings(Protocol):
    """What `space_for` reads of a store (runtime.agent.store.Store is one): where it is,
    the chunks and index pieces it holds, its slots."""

    root: Path
    chunks: Path  # the staged chunks' folder

    def pieces_here(self, ids: list[str]) -> dict[str, bytes]: ...

    def active_sources(self) -> dict[str, tuple[Path, int]]: ...

    def slot_dir(self, slot: str) -> Path: ...

    def writable_slot(self) -> str: ...

    def staged(self) -> Top | None: ...

    def free_bytes(self) -> int: ...


@dataclass
class Space:
    """What a flash needs on the store against what it has, in bytes."""

    free: int  # free now
    reclaim: int  # freed by the flash itself (the writable slot's old files, stale chunks)
    staging: int  # chunks and index pieces still to be stored
    slot: int  # the whole slot copy, slot.json included
    cache: int  # optimized models the trial's health check writes into the slot
    reserve: int  # boot state, temporary files and a margin

    @property
    def need(self) -> int:
        return self.staging + self.slot + self.cache + self.reserve

    @property
    def missing(self) -> int:
        return max(0, self.need - self.free - self.reclaim)

    def describe(self) -> str:
        return (
            f"the flash needs {self.need} bytes (staging {self.staging}, slot copy {self.slot}, "
            f"model caches {self.cache}, boot state and margin {self.reserve}) and {self.free + self.reclaim} are "
            f"available ({self.free} free, {self.reclaim} to be reclaimed): "
            f"{self.missing} bytes ({self.missing / 1e6:.1f} MB) missing"
        )


def space_for(store: Holdings, top: Top) -> Space:
    """The room a flash of `top` needs here, from what is known before its chunks arrive:
    the index pieces already here (staged, or in the active slot) name their chunks
    exactly; the files of the others are counted whole (their chunks may all be new)."""
    block = max(512, os.statvfs(store.root).f_frsize)

    def blocks(n: int) -> int:
        return -(-n // block) * block

    known = store.pieces_here([r.id for r in top.index])
    sources = store.active_sources()
    files: dict[str, int] = {}
    chunks: dict[str, ChunkRef] = {}
    for raw in known.values():
        with contextlib.suppress(BundleRejected):
            entries, refs = parse_piece(raw)
            files.update((f.path, f.size) for f in entries)
            chunks.update(refs)
    unknown = [r for r in top.index if r.id not in known]
    rest = max(0, top.total_bytes - sum(files.values()))  # bytes of files not listed here
    per_file = 2 * block * max(1, len(unknown))  # a last partial block, per file and chunk
    rest_blocks = blocks(rest) + (rest // CHUNK_SIZE + 1) * block + per_file
    staging = sum(blocks(r.size) for r in unknown) + rest_blocks
    staging += sum(
        blocks(ref.size)
        for cid, ref in chunks.items()
        if cid not in sources and not (store.chunks / cid).is_file()
    )
    mark = 2 * len(top.raw) + sum(r.size for r in top.index) + 1024
    slot = sum(blocks(n) for n in files.values()) + rest_blocks + blocks(mark)
    folders = tuple(f"{folder.rstrip('/')}/" for folder in top.artifacts.values())
    in_artifacts = {p: n for p, n in files.items() if p.startswith(folders)}
    models = sum(n for p, n in in_artifacts.items() if p.endswith((".onnx", ".data")))
    unknown_artifacts = max(0, top.artifact_bytes - sum(in_artifacts.values()))
    cache = blocks(models) + blocks(unknown_artifacts)
    reserve = 4 * blocks(4096) + MARGIN
    reclaim = 0
    with contextlib.suppress(StoreError):
        reclaim += usage(store.slot_dir(store.writable_slot()))
    current = store.staged()
    if current is not None and current.digest != top.digest:
        keep = {r.id for r in top.index} | set(chunks)
        with contextlib.suppress(OSError):
            reclaim += sum(usage(p) for p in store.chunks.iterdir() if p.name not in keep)
    return Space(store.free_bytes(), reclaim, staging, slot, cache, reserve)

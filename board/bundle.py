"""Build, sign and read bundles (the format is `runtime.agent.bundlefmt`).

`build` packs the runtime code (the `runtime/` package, Python files only), the artifacts
(each a folder with its manifest.json, stored under `artifacts/<kind>/`), the display's glyph
atlas (`artifacts/glyphs.npz`, rendered on the host by `ocula.glyphatlas`: the board has no
font rasterizer) and the board profile (`profile.toml`) into one file. Files are cut into
CHUNK_SIZE chunks named by the sha256 of their raw bytes; a chunk is stored zlib-compressed when
that saves at least 3% (ONNX weights, int4 ones especially, barely compress; code and JSON do).

The file list goes into index pieces (see `runtime.agent.bundlefmt`), one per folder, split
every PIECE_FILES files, and one of its own for a file of more than OWN_PIECE_CHUNKS chunks: a
change to one source file then changes one piece of a few hundred bytes, and a change to an
artifact's small files does not resend a large model's chunk list. The signed top manifest
lists the pieces. The same inputs give the same bytes, so a rebuilt, unchanged bundle has the
same manifest and a board already holding it skips every piece and chunk.

`Bundle.open` reads a bundle back, validates its manifest with the device's own parser and
checks the file is complete (a truncated bundle is refused before anything is sent).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import runtime
from board.errors import BoardError
from runtime import budget
from runtime.agent.bundlefmt import (
    CHUNK_SIZE,
    FORMAT,
    HEADER,
    MAGIC,
    MAX_PIECE_BYTES,
    MAX_TOP_BYTES,
    OLD_MAGICS,
    SIG_LEN,
    BundleManifest,
    check_path,
    encode_manifest,
    parse_top,
    resolve,
)
from runtime.agent.errors import BundleRejected, StoreError
from runtime.io.glyphs import BUNDLE_NAME as GLYPHS
from runtime.manifest import Manifest
from runtime.profile import Profile

__all__ = ["Bundle", "build"]

RUNTIME_DIR = Path(runtime.__file__).resolve().parent
KINDS = ("llm", "asr", "vad", "vision")
PIECE_FILES = 32  # files per index piece at most
OWN_PIECE_CHUNKS = 8  # a file of more chunks (2 MiB) gets an index piece of its own


def _files(folder: Path, prefix: str, code_only: bool = False) -> list[tuple[str, Path]]:
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        parts = rel.split("/")
        if "__pycache__" in parts or any(p.startswith(".") for p in parts):
            continue  # caches and hidden files (an engine's .ocula-cache) are not the artifact
        if path.is_symlink():
            raise BoardError(f"{path}: symbolic links are not packed; copy the file instead")
        if not path.is_file():
            continue
        if code_only and path.suffix not in (".py", ".json", ".toml", ".txt"):
            continue
        name = f"{prefix}/{rel}" if prefix else rel
        try:
            check_path(name)
        except BundleRejected as exc:
            raise BoardError(f"{path}: {exc}") from exc
        out.append((name, path))
    return out


def _check_artifact(kind: str, folder: Path) -> Manifest:
    """The folder is an artifact of `kind` whose files match its manifest (runtime.manifest);
    its manifest."""
    from runtime.errors import OculaError
    from runtime.manifest import load_manifest

    if not (folder / "manifest.json").is_file():
        raise BoardError(
            f"{folder}: not an artifact folder (no manifest.json); make one with 'ocula export'"
        )
    try:
        manifest = load_manifest(folder, verify_files=True)
    except OculaError as exc:
        raise BoardError(f"{folder}: not a valid artifact: {exc}") from exc
    if manifest.kind != kind:
        raise BoardError(
            f"{folder}: its manifest says kind {manifest.kind!r}, but it was given as --{kind}"
        )
    return manifest


def _check_glyphs(path: Path) -> None:
    """The file is a glyph atlas the board's runtime can load."""
    from runtime.errors import OculaError
    from runtime.io.glyphs import GlyphAtlas

    try:
        GlyphAtlas.load(path)
    except OculaError as exc:
        raise BoardError(
            f"{exc} (given as the bundle's glyph atlas; build one with "
            "ocula.glyphatlas.cached_atlas())"
        ) from exc
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        # numpy's .npz reader raises these for an empty or truncated file
        raise BoardError(
            f"glyph atlas {path}: not a glyph atlas ({type(exc).__name__}: {exc}); build one "
            "with ocula.glyphatlas.cached_atlas()"
        ) from exc


def build(
    profile: Profile,
    out: Path,
    artifacts: dict[str, Path],
    key: Path | None = None,
    version: str | None = None,
    runtime_dir: Path = RUNTIME_DIR,
    progress: Any = None,
    glyphs: Path | None = None,
) -> dict[str, Any]:
    """Write the bundle to `out`; return a summary (sizes, chunks, digest, signed).

    `glyphs`: the display's glyph atlas (.npz); without one the board's display shows boxes."""
    entries: list[tuple[str, Path]] = _files(runtime_dir, "runtime", code_only=True)
    models: list[budget.Memory] = []
    for kind, folder in sorted(artifacts.items()):
        if kind not in KINDS:
            raise BoardError(f"unknown artifact kind {kind!r}; expected one of {KINDS}")
        folder = Path(folder)
        if not folder.is_dir():
            raise BoardError(f"{folder}: no such artifact folder (given as --{kind})")
        manifest = _check_artifact(kind, folder)
        length = budget.llm_length(manifest.llm, profile) if manifest.llm is not None else None
        models.append(budget.memory(manifest, length))
        entries += _files(folder, f"artifacts/{kind}")
    if glyphs is not None:
        _check_glyphs(Path(glyphs))
        entries.append((f"artifacts/{GLYPHS}", Path(glyphs)))
    chunks: dict[str, tuple[int, str, bytes]] = {}
    files: list[dict[str, Any]] = []
    artifact_bytes = 0
    for name, path in [*entries, ("profile.toml", Path(profile.source))]:
        size, digest, ids = _chunk_file(path, chunks)
        entry: dict[str, Any] = {"path": name, "size": size}
        entry["chunks"] = [[cid, len(chunks[cid][2]), chunks[cid][1]] for cid in ids]
        if len(ids) > 1:  # a file of one chunk is named by that chunk's sha256
            entry["sha256"] = digest
        files.append(entry)
        if name.startswith("artifacts/"):
            artifact_bytes += size
        if progress is not None:
            progress(name, size)
    pieces = _index_pieces(files)
    packed = [zlib.compress(piece, 9) for piece in pieces]
    ids = [hashlib.sha256(piece).hexdigest() for piece in pieces]
    code_digest = hashlib.sha256(encode_manifest({"f": files})).hexdigest()[:10]
    doc = {
        "format": FORMAT,
        "board": profile.name,
        "version": version or f"{getattr(runtime, '__version__', '0.1.0')}+{code_digest}",
        "artifacts": {k: f"artifacts/{k}" for k in sorted(artifacts)},
        "rss_mb": budget.process_rss_mb(models),  # what the board's agent checks
        "bytes": sum(f["size"] for f in files),
        "artifact_bytes": sum(  # what the board's budget counts: the artifact folders
            f["size"]
            for f in files
            if f["path"].startswith(tuple(f"artifacts/{k}/" for k in artifacts))
        ),
        "index": [[i, len(p), len(z)] for i, p, z in zip(ids, pieces, packed, strict=True)],
    }
    raw = encode_manifest(doc)
    if len(raw) > MAX_TOP_BYTES:
        raise BoardError(f"the manifest would be {len(raw)} bytes; the limit is {MAX_TOP_BYTES}")
    manifest = resolve(parse_top(raw), dict(zip(ids, pieces, strict=True)))  # the device's check
    signature = b""
    if key is not None:
        from board import keys

        signature = keys.sign(Path(key), raw)
    with _atomic(out) as fh:
        fh.write(HEADER.pack(MAGIC, len(raw)) + raw + SIG_LEN.pack(len(signature)) + signature)
        for z in packed:
            fh.write(z)
        for c in manifest.chunks:
            fh.write(chunks[c.id][2])
    return {
        "bundle": str(out),
        "board": profile.name,
        "version": manifest.version,
        "digest": manifest.digest,
        "files": len(files),
        "chunks": len(chunks),
        "index_pieces": len(pieces),
        "manifest_bytes": len(raw),
        "raw_bytes": manifest.total_bytes,
        "bundle_bytes": out.stat().st_size,
        "artifact_bytes": artifact_bytes,
        "rss_mb": manifest.rss_mb,
        "signed": bool(signature),
        "glyphs": glyphs is not None,
    }


@contextlib.contextmanager
def _atomic(out: Path) -> Iterator[BinaryIO]:
    """Write `out` through a temporary beside it, renamed into place once complete.

    On any failure (a full disk, Ctrl-C) the temporary and the folders made for `out` are
    removed and `out` is left as it was; an OSError becomes a BoardError naming `out`."""
    if out.is_dir():
        raise BoardError(f"{out}: is a folder; give the bundle a file name")
    made = [p for p in reversed(out.parents) if not p.exists()]
    fd, tmp, done = -1, "", False
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
        os.fchmod(fd, 0o644)  # as open() would make it under the usual umask
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        done = True
    except OSError as exc:
        raise BoardError(
            f"{out}: cannot write the bundle: {exc.strerror or exc}; nothing was written"
        ) from exc
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _index_pieces(files: list[dict[str, Any]]) -> list[bytes]:
    """The file entries in index pieces: by folder, at most PIECE_FILES each, a large file
    alone (so a folder's small files can change without resending its chunk list)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in files:
        if len(f["chunks"]) > OWN_PIECE_CHUNKS:
            key = ("file", f["path"])
        else:
            key = ("folder", f["path"].rpartition("/")[0])
        groups.setdefault(key, []).append(f)
    pieces = []
    for group in groups.values():
        for i in range(0, len(group), PIECE_FILES):
            piece = encode_manifest({"files": group[i : i + PIECE_FILES]})
            if len(piece) > MAX_PIECE_BYTES:
                raise BoardError(
                    f"{group[i]['path']}: its chunk list alone would be {len(piece)} bytes, over "
                    f"the {MAX_PIECE_BYTES} a board accepts; the file is too large for a bundle"
                )
            pieces.append(piece)
    return pieces


def _chunk_file(
    path: Path, chunks: dict[str, tuple[int, str, bytes]]
) -> tuple[int, str, list[str]]:
    digest = hashlib.sha256()
    ids: list[str] = []
    size = 0
    with open(path, "rb") as fh:
        while True:
            piece = fh.read(CHUNK_SIZE)
            if not piece and ids:
                break
            digest.update(piece)
            size += len(piece)
            cid = hashlib.sha256(piece).hexdigest()
            ids.append(cid)
            if cid not in chunks:
                packed = zlib.compress(piece, 6)
                if len(packed) <= len(piece) * 0.97:
                    chunks[cid] = (len(piece), "zlib", packed)
                else:
                    chunks[cid] = (len(piece), "raw", piece)
            if len(piece) < CHUNK_SIZE:
                break
    return size, digest.hexdigest(), ids


@dataclass
class Bundle:
    """A bundle file opened for reading: its manifest, signature and where each record lies
    (index pieces and chunks alike, by sha256)."""

    path: Path
    manifest: BundleManifest
    signature: bytes
    offsets: dict[str, int]

    def __post_init__(self) -> None:
        self.refs = {**self.manifest.chunk_map(), **self.manifest.index_map()}

    @classmethod
    def open(cls, path: Path) -> Bundle:
        from runtime.agent.store import unpack_chunk

        path = Path(path)
        if not path.is_file():
            raise BoardError(f"{path}: no such bundle; build one with 'ocula bundle'")
        actual = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(HEADER.size)
            if len(head) >= 8 and head[:8] in OLD_MAGICS:
                raise BoardError(
                    f"{path}: a bundle of an earlier format (built by an earlier ocula); "
                    "rebuild it with this version's 'ocula bundle'"
                )
            if len(head) < HEADER.size or head[:8] != MAGIC:
                raise BoardError(f"{path}: not an Ocula bundle (bad magic)")
            _, n = HEADER.unpack(head)
            if n > MAX_TOP_BYTES:
                raise BoardError(f"{path}: manifest length {n} is over the limit")
            raw = fh.read(n)
            sig_head = fh.read(SIG_LEN.size)
            if len(raw) < n or len(sig_head) < SIG_LEN.size:
                raise BoardError(f"{path}: truncated bundle (the manifest is cut); rebuild it")
            (slen,) = SIG_LEN.unpack(sig_head)
            signature = fh.read(slen)
            if slen not in (0, 64) or len(signature) != slen:
                raise BoardError(f"{path}: truncated or damaged signature; rebuild the bundle")
            try:
                top = parse_top(raw)
            except BundleRejected as exc:
                raise BoardError(f"{path}: {exc}") from exc
            offset = fh.tell()
            if actual < offset + sum(r.stored for r in top.index):
                raise BoardError(f"{path}: truncated bundle (the index is cut); rebuild it")
            offsets, pieces = {}, {}
            try:
                for ref in top.index:
                    offsets[ref.id] = offset
                    pieces[ref.id] = unpack_chunk(ref, fh.read(ref.stored))
                    offset += ref.stored
                manifest = resolve(top, pieces)
            except (BundleRejected, StoreError) as exc:
                raise BoardError(f"{path}: damaged bundle ({exc}); rebuild or re-copy it") from exc
        for c in manifest.chunks:
            offsets[c.id] = offset
            offset += c.stored
        if actual != offset:
            what = "truncated" if actual < offset else "has trailing bytes"
            raise BoardError(
                f"{path}: bundle {what} ({actual} bytes, expected {offset}); rebuild or re-copy it"
            )
        return cls(path, manifest, signature, offsets)

    def read_chunk(self, cid: str) -> bytes:
        """The stored bytes of an index piece or a chunk, as they go over the link."""
        with open(self.path, "rb") as fh:
            fh.seek(self.offsets[cid])
            data = fh.read(self.refs[cid].stored)
        return data

    def extract(self, dest: Path) -> None:
        """Unpack every file under `dest` (for inspection and tests), verifying each chunk."""
        from runtime.agent.store import unpack_chunk

        refs = self.manifest.chunk_map()
        for f in self.manifest.files:
            target = dest / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            for cid in f.chunks:
                buf.write(unpack_chunk(refs[cid], self.read_chunk(cid)))
            target.write_bytes(buf.getvalue())

"""The bundle format, shared by the host that builds bundles and the device that checks them.

A bundle is one file:

    MAGIC (8 bytes) | u32 manifest length | manifest (canonical JSON, UTF-8)
    | u16 signature length (0 or 64) | signature | chunk records, in manifest order

The manifest lists every file of the bundle as a list of content-addressed chunks (sha256 of
the raw bytes, at most CHUNK_SIZE each) and every chunk once with its raw size, stored size and
codec ("raw" or "zlib"). The Ed25519 signature covers the manifest bytes exactly as stored, so
the chunk hashes inside it bind every byte of the bundle.

`parse_manifest` is the only way untrusted manifest bytes become a `Manifest`: it bounds every
size and count, refuses paths that are absolute, contain `..`, backslashes or control
characters, and never evaluates anything (JSON only). The device calls it before it writes a
single byte; the host calls it when it reads a bundle back.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from runtime.agent.errors import BundleRejected

__all__ = [
    "CHUNK_SIZE",
    "FORMAT",
    "MAGIC",
    "MAX_CHUNKS",
    "MAX_MANIFEST_BYTES",
    "ChunkRef",
    "FileEntry",
    "Manifest",
    "check_path",
    "encode_manifest",
    "parse_manifest",
]

MAGIC = b"OCULAB\x00\x01"
FORMAT = 1
CHUNK_SIZE = 256 * 1024
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
MAX_FILES = 20_000
MAX_CHUNKS = 200_000
MAX_PATH = 240
MAX_FILE_BYTES = 1 << 36
HEADER = struct.Struct(">8sI")
SIG_LEN = struct.Struct(">H")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+@=-]*\Z")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
CODECS = ("raw", "zlib")


@dataclass(frozen=True)
class ChunkRef:
    id: str
    size: int
    stored: int
    codec: str


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    board: str
    version: str
    files: tuple[FileEntry, ...]
    chunks: tuple[ChunkRef, ...]
    artifacts: dict[str, str]
    rss_mb: int
    raw: bytes

    @property
    def digest(self) -> str:
        """sha256 of the manifest bytes: the bundle's identity."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def artifact_bytes(self) -> int:
        prefixes = tuple(d.rstrip("/") + "/" for d in self.artifacts.values())
        return sum(f.size for f in self.files if f.path.startswith(prefixes))

    def chunk_map(self) -> dict[str, ChunkRef]:
        return {c.id: c for c in self.chunks}


def check_path(path: Any) -> str:
    """A safe relative path inside a slot, or BundleRejected naming what is wrong with it."""
    if not isinstance(path, str) or not path:
        raise BundleRejected(f"bundle file name {path!r} is not a non-empty string")
    if len(path) > MAX_PATH:
        raise BundleRejected(f"bundle file name {path[:60]!r}... is longer than {MAX_PATH}")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _PATH_PART.match(part):
            raise BundleRejected(
                f"bundle file name {path!r} is refused: each part must be a plain name "
                "(letters, digits, ._+@=-), no absolute paths, no '..', no empty parts"
            )
    return path


def encode_manifest(doc: dict[str, Any]) -> bytes:
    """Canonical JSON bytes of a manifest document (sorted keys, no spaces)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _get(doc: dict[str, Any], key: str, kind: type, where: str = "manifest") -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BundleRejected(f"{where}: field {key!r} must be {kind.__name__}, got {value!r:.60}")
    return value


def _size(value: Any, limit: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise BundleRejected(f"{what}: {value!r:.40} is not a size between 0 and {limit}")
    return value


def _hexid(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise BundleRejected(f"{what}: {value!r:.80} is not a sha256 hex digest")
    return value


def parse_manifest(raw: bytes) -> Manifest:
    """Validate untrusted manifest bytes; raise BundleRejected with the first problem."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleRejected(f"manifest is {len(raw)} bytes; the limit is {MAX_MANIFEST_BYTES}")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleRejected(f"manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleRejected("manifest is not a JSON object")
    if doc.get("format") != FORMAT:
        raise BundleRejected(f"manifest format {doc.get('format')!r:.20} is not {FORMAT}")
    board = _get(doc, "board", str)
    version = _get(doc, "version", str)
    if not _NAME.match(board) or not _NAME.match(version):
        raise BundleRejected(f"manifest board {board!r:.70} or version {version!r:.70} is invalid")
    chunk_docs = _get(doc, "chunks", list)
    file_docs = _get(doc, "files", list)
    if len(chunk_docs) > MAX_CHUNKS or len(file_docs) > MAX_FILES:
        raise BundleRejected(
            f"manifest lists {len(file_docs)} files and {len(chunk_docs)} chunks; "
            f"the limits are {MAX_FILES} and {MAX_CHUNKS}"
        )
    chunks: dict[str, ChunkRef] = {}
    for c in chunk_docs:
        if not isinstance(c, dict):
            raise BundleRejected("manifest: a chunk entry is not an object")
        cid = _hexid(c.get("id"), "chunk id")
        codec = c.get("codec")
        if codec not in CODECS:
            raise BundleRejected(f"chunk {cid[:12]}: codec {codec!r:.20} is not one of {CODECS}")
        ref = ChunkRef(
            cid,
            _size(c.get("size"), CHUNK_SIZE, f"chunk {cid[:12]} size"),
            _size(c.get("stored"), CHUNK_SIZE + 1024, f"chunk {cid[:12]} stored size"),
            str(codec),
        )
        if cid in chunks:
            raise BundleRejected(f"chunk {cid[:12]} is listed twice")
        chunks[cid] = ref
    files: list[FileEntry] = []
    seen: set[str] = set()
    for f in file_docs:
        if not isinstance(f, dict):
            raise BundleRejected("manifest: a file entry is not an object")
        path = check_path(f.get("path"))
        folded = path.lower()
        if folded in seen:
            raise BundleRejected(f"bundle file {path!r} is listed twice")
        seen.add(folded)
        ids = f.get("chunks")
        if not isinstance(ids, list):
            raise BundleRejected(f"bundle file {path!r}: chunks must be a list")
        refs = tuple(_hexid(i, f"bundle file {path!r} chunk") for i in ids)
        for i in refs:
            if i not in chunks:
                raise BundleRejected(f"bundle file {path!r} names chunk {i[:12]} not in the list")
        size = _size(f.get("size"), MAX_FILE_BYTES, f"bundle file {path!r} size")
        if sum(chunks[i].size for i in refs) != size:
            raise BundleRejected(f"bundle file {path!r}: chunk sizes do not add up to {size}")
        files.append(FileEntry(path, size, _hexid(f.get("sha256"), f"{path} sha256"), refs))
    dirs = {p.rsplit("/", i)[0] for p in seen for i in range(1, p.count("/") + 1)}
    clash = dirs & seen
    if clash:
        raise BundleRejected(f"bundle file {min(clash)!r} is also a folder of other files")
    artifacts = _get(doc, "artifacts", dict)
    for kind, folder in artifacts.items():
        if not _NAME.match(str(kind)):
            raise BundleRejected(f"artifact kind {kind!r:.40} is invalid")
        check_path(folder)
    rss_mb = _size(doc.get("rss_mb"), 1 << 24, "manifest rss_mb")
    return Manifest(
        board, version, tuple(files), tuple(chunks.values()), dict(artifacts), rss_mb, raw
    )

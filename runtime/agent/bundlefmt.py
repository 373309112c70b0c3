"""The bundle format, shared by the host that builds bundles and the device that checks them.

A bundle is one file:

    MAGIC (8 bytes) | u32 top manifest length | top manifest (canonical JSON, UTF-8)
    | u16 signature length (0 or 64) | signature | index pieces, in top order
    | chunk records, in resolved order

The manifest has two levels, so that a re-flash sends only what changed:
- the top manifest (small, signed): format, board, version, the artifacts map, the RAM estimate,
  the bytes of all files and of the artifacts (the board's budget checks run on these before it
  stores anything), and the index: every index piece as [sha256, size, stored size] (a piece is
  zlib-compressed canonical JSON);
- an index piece lists some files: path, size and its chunks as [sha256, stored size, codec]
  (sha256 of the raw bytes; CHUNK_SIZE each but the last, so sizes follow from the file's size;
  codec "raw" or "zlib"). A file of several chunks also carries its own sha256; a file of one
  chunk is that chunk, so its sha256 is the chunk's.
The host groups files into pieces (by folder, a large file alone), so changing one runtime file
changes one small piece: the board holds the others already (pieces are content-addressed like
chunks) and a flash sends the top manifest, that piece and the changed chunk.

The Ed25519 signature covers the top manifest bytes exactly as stored. The top binds each piece
by its sha256 and each piece binds each chunk by its sha256, so the signature binds every byte
the board installs; the board checks each piece's and each chunk's hash before it uses them.

`parse_top`, `parse_piece` and `resolve` are the only way untrusted bytes become a
`BundleManifest` (the bundle's: not `runtime.manifest.Manifest`, an artifact's): they bound
every size and count, refuse paths that are absolute, contain `..`, backslashes or control
characters, and never evaluate anything (JSON only). The device calls them before it
writes a byte of a file; the host calls them when it builds a bundle and reads one back.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.agent.errors import BundleRejected

__all__ = [
    "CHUNK_SIZE",
    "FORMAT",
    "MAGIC",
    "MAX_CHUNKS",
    "MAX_PIECE_BYTES",
    "MAX_TOP_BYTES",
    "BundleManifest",
    "ChunkRef",
    "FileEntry",
    "Top",
    "check_path",
    "encode_manifest",
    "parse_piece",
    "parse_top",
    "resolve",
]

MAGIC = b"OCULAB\x00\x02"
OLD_MAGICS = (b"OCULAB\x00\x01",)
FORMAT = 2
CHUNK_SIZE = 256 * 1024
MAX_TOP_BYTES = 1024 * 1024
MAX_PIECE_BYTES = 8 * 1024 * 1024
MAX_INDEX_BYTES = 16 * 1024 * 1024
MAX_PIECES = 4096
MAX_FILES = 20_000
MAX_CHUNKS = 200_000
MAX_PATH = 240
MAX_FILE_BYTES = 1 << 36
ZLIB_SLACK = 1024  # a stored (compressed) record may be this much larger than its raw bytes
HEADER = struct.Struct(">8sI")
SIG_LEN = struct.Struct(">H")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+@=-]*\Z")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
CODECS = ("raw", "zlib")


@dataclass(frozen=True)
class ChunkRef:
    """A content-addressed record: a chunk of a file, or an index piece (always zlib)."""

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
class Top:
    """The signed top manifest: enough to accept or refuse a bundle, and its index pieces."""

    board: str
    version: str
    artifacts: dict[str, str]
    rss_mb: int
    total_bytes: int
    artifact_bytes: int
    index: tuple[ChunkRef, ...]
    raw: bytes

    @property
    def digest(self) -> str:
        """sha256 of the top manifest bytes: the bundle's identity."""
        return hashlib.sha256(self.raw).hexdigest()

    def index_map(self) -> dict[str, ChunkRef]:
        return {r.id: r for r in self.index}


@dataclass(frozen=True)
class BundleManifest(Top):
    """A top manifest resolved with its index pieces: every file and every chunk."""

    files: tuple[FileEntry, ...] = ()
    chunks: tuple[ChunkRef, ...] = ()

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
    """Canonical JSON bytes of a top manifest or a piece (sorted keys, no spaces)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _get(doc: dict[str, Any], key: str, kind: type, where: str = "manifest") -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BundleRejected(f"{where}: field {key!r} must be {kind.__name__}, got {value!r:.60}")
    return value


def _size(value: Any, limit: int, what: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= limit:
        raise BundleRejected(f"{what}: {value!r:.40} is not a size between {low} and {limit}")
    return value


def _hexid(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise BundleRejected(f"{what}: {value!r:.80} is not a sha256 hex digest")
    return value


def _json(raw: bytes, limit: int, what: str) -> dict[str, Any]:
    if len(raw) > limit:
        raise BundleRejected(f"{what} is {len(raw)} bytes; the limit is {limit}")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleRejected(f"{what} is not JSON: {str(exc)[:120]}") from exc
    if not isinstance(doc, dict):
        raise BundleRejected(f"{what} is not a JSON object")
    return doc


def parse_top(raw: bytes) -> Top:
    """Validate untrusted top manifest bytes; raise BundleRejected with the first problem."""
    doc = _json(raw, MAX_TOP_BYTES, "manifest")
    fmt = doc.get("format")
    if fmt != FORMAT:
        if fmt == 1:
            raise BundleRejected(
                "bundle format 1 was built by an earlier ocula (one manifest, sent whole); "
                "rebuild the bundle with this version's 'ocula bundle'"
            )
        raise BundleRejected(f"manifest format {fmt!r:.20} is not {FORMAT}")
    board = _get(doc, "board", str)
    version = _get(doc, "version", str)
    if not _NAME.match(board) or not _NAME.match(version):
        raise BundleRejected(f"manifest board {board!r:.70} or version {version!r:.70} is invalid")
    artifacts = _get(doc, "artifacts", dict)
    for kind, folder in artifacts.items():
        if not _NAME.match(str(kind)):
            raise BundleRejected(f"artifact kind {kind!r:.40} is invalid")
        check_path(folder)
    rss_mb = _size(doc.get("rss_mb"), 1 << 24, "manifest rss_mb")
    total = _size(doc.get("bytes"), MAX_FILE_BYTES * 16, "manifest bytes")
    artifact_bytes = _size(doc.get("artifact_bytes"), total, "manifest artifact_bytes")
    index_docs = _get(doc, "index", list)
    if not 1 <= len(index_docs) <= MAX_PIECES:
        raise BundleRejected(f"manifest index has {len(index_docs)} pieces; 1 to {MAX_PIECES}")
    index: dict[str, ChunkRef] = {}
    for item in index_docs:
        if not isinstance(item, list) or len(item) != 3:
            raise BundleRejected("manifest index: an entry is not [sha256, size, stored]")
        pid = _hexid(item[0], "index piece id")
        size = _size(item[1], MAX_PIECE_BYTES, f"index piece {pid[:12]} size", low=1)
        stored = _size(item[2], size + ZLIB_SLACK, f"index piece {pid[:12]} stored size", low=1)
        if pid in index:
            raise BundleRejected(f"index piece {pid[:12]} is listed twice")
        index[pid] = ChunkRef(pid, size, stored, "zlib")
    if sum(r.size for r in index.values()) > MAX_INDEX_BYTES:
        raise BundleRejected(f"manifest index pieces add up to more than {MAX_INDEX_BYTES} bytes")
    return Top(
        board, version, dict(artifacts), rss_mb, total, artifact_bytes, tuple(index.values()), raw
    )


def parse_piece(raw: bytes) -> tuple[list[FileEntry], dict[str, ChunkRef]]:
    """Validate one untrusted index piece: its files and the chunks they name."""
    doc = _json(raw, MAX_PIECE_BYTES, "index piece")
    file_docs = _get(doc, "files", list, "index piece")
    if not file_docs or len(file_docs) > MAX_FILES:
        raise BundleRejected(f"index piece lists {len(file_docs)} files; 1 to {MAX_FILES}")
    chunks: dict[str, ChunkRef] = {}
    return [_file_entry(f, chunks) for f in file_docs], chunks


def _file_entry(f: Any, chunks: dict[str, ChunkRef]) -> FileEntry:
    """One file of a piece; its chunks are added to `chunks` (the same id, the same sizes)."""
    if not isinstance(f, dict):
        raise BundleRejected("index piece: a file entry is not an object")
    path = check_path(f.get("path"))
    size = _size(f.get("size"), MAX_FILE_BYTES, f"bundle file {path!r} size")
    items = f.get("chunks")
    if not isinstance(items, list) or len(items) != max(1, -(-size // CHUNK_SIZE)):
        raise BundleRejected(
            f"bundle file {path!r}: its chunks must be a list that cuts its {size} bytes "
            f"into chunks of {CHUNK_SIZE}"
        )
    ids = []
    for n, item in enumerate(items):
        if not isinstance(item, list) or len(item) != 3:
            raise BundleRejected(f"bundle file {path!r}: a chunk is not [sha256, stored, codec]")
        cid = _hexid(item[0], f"bundle file {path!r} chunk")
        want = CHUNK_SIZE if n < len(items) - 1 else size - CHUNK_SIZE * n
        stored = _size(item[1], want + ZLIB_SLACK, f"chunk {cid[:12]} stored size")
        if item[2] not in CODECS:
            raise BundleRejected(f"chunk {cid[:12]}: codec {item[2]!r:.20} is not in {CODECS}")
        ref = ChunkRef(cid, want, stored, str(item[2]))
        if chunks.setdefault(cid, ref) != ref:
            raise BundleRejected(f"chunk {cid[:12]} is listed twice with different sizes")
        ids.append(cid)
    if len(ids) == 1 and "sha256" not in f:
        return FileEntry(path, size, ids[0], tuple(ids))  # a file of one chunk is that chunk
    sha = _hexid(f.get("sha256"), f"bundle file {path!r} sha256")
    if len(ids) == 1 and sha != ids[0]:
        raise BundleRejected(f"bundle file {path!r}: sha256 is not its one chunk's")
    return FileEntry(path, size, sha, tuple(ids))


def resolve(top: Top, pieces: Mapping[str, bytes]) -> BundleManifest:
    """The whole manifest from the top and the raw bytes of every piece it lists (each checked
    against its sha256 here); BundleRejected when a piece is missing, wrong, or the pieces
    together break a rule (a path twice, a file that is a folder, totals that do not add up)."""
    files: list[FileEntry] = []
    chunks: dict[str, ChunkRef] = {}
    seen: set[str] = set()
    for ref in top.index:
        raw = pieces.get(ref.id)
        if raw is None:
            raise BundleRejected(f"index piece {ref.id[:12]} is missing")
        if len(raw) != ref.size or hashlib.sha256(raw).hexdigest() != ref.id:
            raise BundleRejected(f"index piece {ref.id[:12]} does not match its sha256")
        piece_files, piece_chunks = parse_piece(raw)
        for f in piece_files:
            folded = f.path.lower()
            if folded in seen:
                raise BundleRejected(f"bundle file {f.path!r} is listed twice")
            seen.add(folded)
        for cid, c in piece_chunks.items():
            if chunks.setdefault(cid, c) != c:
                raise BundleRejected(f"chunk {cid[:12]} is listed twice with different sizes")
        files += piece_files
        if len(files) > MAX_FILES or len(chunks) > MAX_CHUNKS:
            raise BundleRejected(
                f"the index lists over {MAX_FILES} files or {MAX_CHUNKS} chunks (the limits)"
            )
    dirs = {p.rsplit("/", i)[0] for p in seen for i in range(1, p.count("/") + 1)}
    clash = dirs & seen
    if clash:
        raise BundleRejected(f"bundle file {min(clash)!r} is also a folder of other files")
    total = sum(f.size for f in files)
    prefixes = tuple(d.rstrip("/") + "/" for d in top.artifacts.values())
    artifact_bytes = sum(f.size for f in files if f.path.startswith(prefixes))
    if (total, artifact_bytes) != (top.total_bytes, top.artifact_bytes):
        raise BundleRejected(
            f"the index pieces hold {total} bytes ({artifact_bytes} of artifacts); the top "
            f"manifest says {top.total_bytes} ({top.artifact_bytes})"
        )
    return BundleManifest(
        top.board,
        top.version,
        top.artifacts,
        top.rss_mb,
        top.total_bytes,
        top.artifact_bytes,
        top.index,
        top.raw,
        tuple(files),
        tuple(chunks.values()),
    )

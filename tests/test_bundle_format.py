"""Bundle files and the device's manifest parser: round trip, determinism, hostile input."""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from board import bundle as bundles
from board import profiles
from board.errors import BoardError
from export.packaged import export_packaged
from hil.sim import InProcessBoard
from runtime.agent import api
from runtime.agent.api import PART
from runtime.agent.bundlefmt import (
    CHUNK_SIZE,
    ChunkRef,
    encode_manifest,
    parse_piece,
    parse_top,
    resolve,
)
from runtime.agent.errors import BundleRejected, StoreError
from runtime.agent.store import unpack_chunk


def artifact(folder: Path, size: int) -> Path:
    """The real VAD artifact plus `size` bytes of a repeating pattern."""
    export_packaged("vad", folder)
    (folder / "weights.bin").write_bytes(bytes(range(256)) * (size // 256))
    return folder


def test_round_trip_and_determinism(tmp_path: Path) -> None:
    asr = artifact(tmp_path / "vad", 3 * CHUNK_SIZE + 1024)
    a, b = tmp_path / "a.bundle", tmp_path / "b.bundle"
    bundles.build(profiles.find("sim"), a, {"vad": asr})
    bundles.build(profiles.find("sim"), b, {"vad": asr})
    assert a.read_bytes() == b.read_bytes()
    opened = bundles.Bundle.open(a)
    out = tmp_path / "out"
    opened.extract(out)
    assert (out / "artifacts/vad/weights.bin").read_bytes() == (asr / "weights.bin").read_bytes()
    assert (out / "profile.toml").read_bytes() == profiles.path_of("sim").read_bytes()
    src = bundles.RUNTIME_DIR / "agent" / "store.py"
    assert (out / "runtime/agent/store.py").read_bytes() == src.read_bytes()
    # four pieces of one repeated pattern: three identical full chunks are stored once
    weights = next(f for f in opened.manifest.files if f.path.endswith("weights.bin"))
    assert len(weights.chunks) == 4 and len(set(weights.chunks)) == 2
    for f in opened.manifest.files:
        assert hashlib.sha256((out / f.path).read_bytes()).hexdigest() == f.sha256


def _top_and_piece(path: str, total: int = 1, fmt: int = 2) -> tuple[bytes, bytes]:
    """A top manifest and its one index piece, listing one file of one byte at `path`."""
    cid = hashlib.sha256(b"x").hexdigest()
    piece = encode_manifest({"files": [{"path": path, "size": 1, "chunks": [[cid, 1, "raw"]]}]})
    top = encode_manifest(
        {
            "format": fmt,
            "board": "sim",
            "version": "1",
            "artifacts": {},
            "rss_mb": 1,
            "bytes": total,
            "artifact_bytes": 0,
            "index": [
                [hashlib.sha256(piece).hexdigest(), len(piece), len(zlib.compress(piece, 9))]
            ],
        }
    )
    return top, piece


def _resolve(top: bytes, piece: bytes):
    return resolve(parse_top(top), {hashlib.sha256(piece).hexdigest(): piece})


BAD_PATHS = [
    "../evil",
    "/etc/passwd",
    "a/../../b",
    "a\\b",
    "a//b",
    ".",
    "a/./b",
    "",
    "a/\x00b",
    ".hidden/../../x",
    "x" * 300,
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_path_traversal_is_refused(path: str) -> None:
    with pytest.raises(BundleRejected, match=r"refused|string|longer"):
        _resolve(*_top_and_piece(path))


def test_pieces_must_add_up_to_the_signed_top() -> None:
    """The budget checks run on the top's totals; pieces that disagree with them are refused."""
    assert _resolve(*_top_and_piece("a/b")).files[0].path == "a/b"
    with pytest.raises(BundleRejected, match=r"hold 1 bytes .* says 1000000"):
        _resolve(*_top_and_piece("a/b", total=1_000_000))
    top, piece = _top_and_piece("a/b")
    forged = {hashlib.sha256(piece).hexdigest(): piece.replace(b"a/b", b"a/c")}
    with pytest.raises(BundleRejected, match="does not match its sha256"):
        resolve(parse_top(top), forged)
    with pytest.raises(BundleRejected, match="is missing"):
        resolve(parse_top(top), {})


def test_earlier_format_is_refused_with_the_fix(tmp_path: Path) -> None:
    top, _ = _top_and_piece("a", fmt=1)
    with pytest.raises(BundleRejected, match=r"format 1 was built by an earlier ocula.*rebuild"):
        parse_top(top)
    old = tmp_path / "old.bundle"
    old.write_bytes(b"OCULAB\x00\x01" + b"\x00" * 100)
    with pytest.raises(BoardError, match=r"earlier format.*rebuild it"):
        bundles.Bundle.open(old)


def _send_top(board: InProcessBoard, top: bytes) -> dict:
    assert board.call("manifest", {"offset": 0}, top)[0]["ok"]
    return board.call("begin", {"sha256": hashlib.sha256(top).hexdigest()})[0]


def test_traversal_over_the_link_writes_nothing_outside(tmp_path: Path) -> None:
    board = InProcessBoard(tmp_path / "boards" / "sim")
    before = sorted(p.name for p in tmp_path.iterdir())
    top, piece = _top_and_piece("../../escaped")
    assert _send_top(board, top)["ok"]  # the top alone names no file
    pid = hashlib.sha256(piece).hexdigest()
    reply, flags = board.call("missing", {"index": True, "start": 0, "count": 1})
    assert reply["ok"] and flags == b"\x01"
    reply, _ = board.call("put", {"id": pid, "offset": 0}, zlib.compress(piece, 9))
    assert not reply["ok"] and "refused" in reply["error"]  # parsed before it is stored
    assert not (board.root / "staging" / "chunks" / pid).exists()
    reply, _ = board.call("missing", {"start": 0, "count": 1})
    assert not reply["ok"] and "missing; send it first" in reply["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list(tmp_path.rglob("escaped"))


def test_a_piece_that_is_not_its_hash_is_refused(tmp_path: Path) -> None:
    board = InProcessBoard(tmp_path / "boards" / "sim")
    top, piece = _top_and_piece("a/b")
    assert _send_top(board, top)["ok"]
    pid = hashlib.sha256(piece).hexdigest()
    forged = zlib.compress(piece.replace(b"a/b", b"a/c"), 9)
    assert len(forged) == len(zlib.compress(piece, 9))
    reply, _ = board.call("put", {"id": pid, "offset": 0}, forged)
    assert not reply["ok"] and "does not match its sha256" in reply["error"]
    reply, _ = board.call("put", {"id": pid, "offset": 0}, zlib.compress(piece, 9))
    assert reply["ok"] and reply["stored"]
    reply, flags = board.call("missing", {"start": 0, "count": 1})
    assert reply["ok"] and reply["total"] == 1 and flags == b"\x01"


def test_a_damaged_bundle_file_is_refused(tmp_path: Path) -> None:
    vad = artifact(tmp_path / "vad", 1024)
    path = tmp_path / "a.bundle"
    bundles.build(profiles.find("sim"), path, {"vad": vad})
    opened = bundles.Bundle.open(path)
    first = opened.manifest.index[0]
    data = bytearray(path.read_bytes())
    data[opened.offsets[first.id] + first.stored // 2] ^= 0x40  # inside the first index piece
    path.write_bytes(bytes(data))
    with pytest.raises(BoardError, match="damaged bundle"):
        bundles.Bundle.open(path)


def test_oversized_fields_are_refused(tmp_path: Path) -> None:
    board = InProcessBoard(tmp_path / "boards" / "sim")
    reply, _ = board.call("manifest", {"offset": 0}, b"x" * (PART + 1))
    assert not reply["ok"] and "limit" in reply["error"]
    reply, _ = board.call("put", {"id": "a" * 65, "offset": 0})
    assert not reply["ok"] and "'id'" in reply["error"]
    reply, _ = board.call("logs", {"since": "not a number"})
    assert not reply["ok"]
    with pytest.raises(api.RpcError):
        api.encode({"op": "x" * (api.MAX_HEADER + 1)})
    with pytest.raises(api.RpcError):
        api.decode(b"\xff\xff" + b"{}")
    with pytest.raises(api.RpcError):
        api.decode(b"\x00\x02{}" + b"\x00" * (api.MAX_BLOB + 1))
    big = b"[" * 5000
    with pytest.raises(api.RpcError):
        api.decode(len(big).to_bytes(2, "big") + big)


def test_decompression_bomb_is_refused() -> None:
    bomb = zlib.compress(b"\x00" * (CHUNK_SIZE * 4))
    ref = ChunkRef(hashlib.sha256(b"\x00" * 100).hexdigest(), 100, len(bomb), "zlib")
    with pytest.raises(StoreError, match=r"too long|does not match"):
        unpack_chunk(ref, bomb)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parsers_raise_only_bundle_rejected_on_bytes(raw: bytes) -> None:
    with contextlib.suppress(BundleRejected):
        parse_top(raw)
    with contextlib.suppress(BundleRejected):
        parse_piece(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
TOP_KEYS = ["board", "version", "artifacts", "rss_mb", "bytes", "artifact_bytes", "index"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["format", *TOP_KEYS]), json_values))
def test_top_parser_raises_only_bundle_rejected_on_json(doc: dict) -> None:
    doc.setdefault("format", 2)
    with contextlib.suppress(BundleRejected):
        parse_top(json.dumps(doc).encode())


file_docs = st.fixed_dictionaries(
    {},
    optional={
        "path": st.sampled_from(["a", "a/b", "../x", 3]) | st.text(max_size=8),
        "size": st.integers(-1, 3 * CHUNK_SIZE) | json_values,
        "sha256": st.sampled_from([hashlib.sha256(b"x").hexdigest(), "0" * 64]) | json_values,
        "chunks": st.lists(
            st.tuples(
                st.sampled_from([hashlib.sha256(b"x").hexdigest(), "x"]),
                st.integers(-1, CHUNK_SIZE + 2048),
                st.sampled_from(["raw", "zlib", "lzma"]),
            ).map(list)
            | json_values,
            max_size=4,
        ),
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(file_docs | json_values, max_size=4))
def test_piece_parser_raises_only_bundle_rejected_on_json(files: list) -> None:
    with contextlib.suppress(BundleRejected):
        parse_piece(json.dumps({"files": files}).encode())


@pytest.fixture(scope="module")
def fuzz_board(tmp_path_factory: pytest.TempPathFactory) -> InProcessBoard:
    return InProcessBoard(tmp_path_factory.mktemp("fuzz") / "sim")


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=300))
def test_agent_answers_any_payload(fuzz_board: InProcessBoard, payload: bytes) -> None:
    header, _ = api.decode(api.handle_payload(fuzz_board.agent.handle, payload))
    assert header["ok"] in (True, False)


def test_cli_bundle_carries_the_glyph_atlas_unless_told_not_to(tmp_path: Path, ocula) -> None:
    from runtime.io.glyphs import GlyphAtlas

    vad = artifact(tmp_path / "vad", 1024)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    res = ocula(
        "bundle", "--board", "sim", "--vad", str(vad), "--out", str(tmp_path / "a.bundle"), env=env
    )
    assert res.code == 0, res.err
    assert "with the display's glyph atlas" in res.out
    Bundle = bundles.Bundle
    Bundle.open(tmp_path / "a.bundle").extract(tmp_path / "a")
    atlas = GlyphAtlas.load(tmp_path / "a/artifacts/glyphs.npz")
    assert atlas.glyph("中").bitmap.any() and atlas.glyph("A").bitmap.any()

    res = ocula(
        "bundle",
        "--board",
        "sim",
        "--vad",
        str(vad),
        "--out",
        str(tmp_path / "b.bundle"),
        "--no-glyphs",
        "--json",
        env=env,
    )
    assert res.code == 0, res.err
    assert json.loads(res.out)["glyphs"] is False
    Bundle.open(tmp_path / "b.bundle").extract(tmp_path / "b")
    assert not (tmp_path / "b/artifacts/glyphs.npz").exists()

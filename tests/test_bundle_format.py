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
from export.packaged import export_packaged
from hil.sim import InProcessBoard
from runtime.agent import rpc
from runtime.agent.bundlefmt import CHUNK_SIZE, ChunkRef, encode_manifest, parse_manifest
from runtime.agent.errors import BundleRejected, StoreError
from runtime.agent.serve import handle_payload
from runtime.agent.service import PART
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


def _manifest(path: str) -> bytes:
    data = b"x"
    cid = hashlib.sha256(data).hexdigest()
    return encode_manifest(
        {
            "format": 1,
            "board": "sim",
            "version": "1",
            "files": [{"path": path, "size": 1, "sha256": cid, "chunks": [cid]}],
            "chunks": [{"id": cid, "size": 1, "stored": 1, "codec": "raw"}],
            "artifacts": {},
            "rss_mb": 1,
        }
    )


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
        parse_manifest(_manifest(path))


def test_traversal_over_the_link_writes_nothing_outside(tmp_path: Path) -> None:
    board = InProcessBoard(tmp_path / "boards" / "sim")
    before = sorted(p.name for p in tmp_path.iterdir())
    raw = _manifest("../../escaped")
    assert board.call("manifest", {"offset": 0}, raw)[0]["ok"]
    reply, _ = board.call("begin", {"sha256": hashlib.sha256(raw).hexdigest()})
    assert not reply["ok"] and "refused" in reply["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list(tmp_path.rglob("escaped"))


def test_oversized_fields_are_refused(tmp_path: Path) -> None:
    board = InProcessBoard(tmp_path / "boards" / "sim")
    reply, _ = board.call("manifest", {"offset": 0}, b"x" * (PART + 1))
    assert not reply["ok"] and "limit" in reply["error"]
    reply, _ = board.call("put", {"id": "a" * 65, "offset": 0})
    assert not reply["ok"] and "'id'" in reply["error"]
    reply, _ = board.call("logs", {"since": "not a number"})
    assert not reply["ok"]
    with pytest.raises(rpc.RpcError):
        rpc.encode({"op": "x" * (rpc.MAX_HEADER + 1)})
    with pytest.raises(rpc.RpcError):
        rpc.decode(b"\xff\xff" + b"{}")
    with pytest.raises(rpc.RpcError):
        rpc.decode(b"\x00\x02{}" + b"\x00" * (rpc.MAX_BLOB + 1))
    big = b"[" * 5000
    with pytest.raises(rpc.RpcError):
        rpc.decode(len(big).to_bytes(2, "big") + big)


def test_decompression_bomb_is_refused() -> None:
    bomb = zlib.compress(b"\x00" * (CHUNK_SIZE * 4))
    ref = ChunkRef(hashlib.sha256(b"\x00" * 100).hexdigest(), 100, len(bomb), "zlib")
    with pytest.raises(StoreError, match=r"too long|does not match"):
        unpack_chunk(ref, bomb)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parser_raises_only_bundle_rejected_on_bytes(raw: bytes) -> None:
    with contextlib.suppress(BundleRejected):
        parse_manifest(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["format", "board", "version", "files", "chunks", "artifacts", "rss_mb"]),
        json_values,
    )
)
def test_parser_raises_only_bundle_rejected_on_json(doc: dict) -> None:
    doc.setdefault("format", 1)
    with contextlib.suppress(BundleRejected):
        parse_manifest(json.dumps(doc).encode())


@pytest.fixture(scope="module")
def fuzz_board(tmp_path_factory: pytest.TempPathFactory) -> InProcessBoard:
    return InProcessBoard(tmp_path_factory.mktemp("fuzz") / "sim")


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=300))
def test_agent_answers_any_payload(fuzz_board: InProcessBoard, payload: bytes) -> None:
    header, _ = rpc.decode(handle_payload(fuzz_board.agent, payload))
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

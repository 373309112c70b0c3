"""Flash logic against the real agent in-process: refusals, delta, resume, A/B, rollback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from pathlib import Path

import pytest

from board import bundle as bundles
from board import keys, profiles
from board.errors import BoardError, BoardRefused
from board.flash import flash
from export.packaged import export_packaged
from hil.sim import InProcessBoard
from runtime.agent.boot import choose_slot
from runtime.agent.store import Store


def make_artifact(folder: Path, extra_mb: float = 0.0, broken: bool = False) -> Path:
    """The real Silero VAD artifact (`ocula export vad`), padded with `extra_mb` of data; with
    `broken`, its graph is garbage that the manifest vouches for (bundles fine, cannot run)."""
    export_packaged("vad", folder)
    if extra_mb:
        (folder / "padding.bin").write_bytes(os.urandom(int(extra_mb * 1e6)))
    if broken:
        garbage = b"not an onnx graph" * 100
        (folder / "vad.onnx").write_bytes(garbage)
        doc = json.loads((folder / "manifest.json").read_text())
        for f in doc["files"]:
            if f["path"] == "vad.onnx":
                f["sha256"], f["size"] = hashlib.sha256(garbage).hexdigest(), len(garbage)
        (folder / "manifest.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, bytes]:
    priv, pub = keys.generate(tmp_path / "keys" / "dev")
    return priv, keys.load_public_raw(pub)


def build(tmp_path: Path, name: str, key: Path | None = None, board: str = "sim", **art: Path):
    out = tmp_path / f"{name}.bundle"
    bundles.build(profiles.find(board), out, art, key=key)
    return bundles.Bundle.open(out)


def send_by_hand(board: InProcessBoard, b: bundles.Bundle) -> None:
    """The transfer requests of a flash, one by one: the top manifest, begin, every index piece,
    then every chunk (each stored record answered `stored`)."""
    for off in range(0, len(b.manifest.raw), 32768):
        board.call("manifest", {"offset": off}, b.manifest.raw[off : off + 32768])
    assert board.call("begin", {"sha256": b.manifest.digest})[0]["ok"]
    for ref in [*b.manifest.index, *b.manifest.chunks]:
        data = b.read_chunk(ref.id)
        for off in range(0, max(len(data), 1), 32768):
            reply, _ = board.call("put", {"id": ref.id, "offset": off}, data[off : off + 32768])
            assert reply["ok"], reply
        assert reply["stored"]


def test_flash_signed_bundle_then_delta_reflash(tmp_path: Path, keypair) -> None:
    priv, pub = keypair
    llm = make_artifact(tmp_path / "llm", extra_mb=1.0)
    board = InProcessBoard(tmp_path / "board", key=pub)
    first = build(tmp_path, "one", key=priv, vad=llm)
    r = flash(first, board)
    assert r.ok and r.booted == "a" and r.health["ok"]
    assert r.chunks_skipped == 0
    # the slot holds exactly the bundle's files
    for f in first.manifest.files:
        assert (board.root / "slots" / "a" / f.path).stat().st_size == f.size
    # unchanged: nothing to send
    again = flash(first, board)
    assert again.already_installed and again.bytes_sent == 0
    forced = flash(first, board, force=True)  # same bundle into the other slot, nothing re-sent
    assert forced.ok and forced.booted == "b" and forced.chunks_sent == 0
    assert flash(first, board, force=True).booted == "a"
    # change the runtime code only: the artifact's chunks come from slot a
    code = tmp_path / "runtime"
    shutil.copytree(bundles.RUNTIME_DIR, code, ignore=shutil.ignore_patterns("__pycache__"))
    (code / "agent" / "extra.py").write_text("X = 1\n" * 500)
    out = tmp_path / "two.bundle"
    bundles.build(profiles.find("sim"), out, {"vad": llm}, key=priv, runtime_dir=code)
    second = bundles.Bundle.open(out)
    r2 = flash(second, board)
    assert r2.ok and r2.booted == "b"
    # on the wire: the top manifest, the signature, the one index piece that lists the new
    # file (runtime/agent/) and the new file's chunk; every other piece and chunk is on the board
    new_chunks = [c for c in second.manifest.chunks if c.id not in first.manifest.chunk_map()]
    new_pieces = [p for p in second.manifest.index if p.id not in first.manifest.index_map()]
    assert [c.size for c in new_chunks] == [len("X = 1\n" * 500)]
    assert len(new_pieces) == 1 and r2.index_bytes_sent == new_pieces[0].stored
    assert r2.chunk_bytes_sent == new_chunks[0].stored and r2.chunks_sent == 1
    assert r2.manifest_bytes_sent == len(zlib.compress(second.manifest.raw, 9))
    assert r2.bytes_sent == r2.manifest_bytes_sent + 64 + r2.index_bytes_sent + r2.chunk_bytes_sent
    assert Store(board.root).state().active == "b"
    slot = board.root / "slots" / "b"
    assert (slot / "runtime/agent/extra.py").read_bytes() == (code / "agent/extra.py").read_bytes()
    assert Store(board.root).verify_slot("b") == []


def test_a_large_file_keeps_its_chunk_list_when_its_folder_changes(tmp_path: Path) -> None:
    """A large file's chunk list is an index piece of its own: adding a note beside a 2.5 MB
    weights file resends the folder's small piece and the note, not the weights' chunk list."""
    vad = make_artifact(tmp_path / "vad", extra_mb=2.5)
    board = InProcessBoard(tmp_path / "board")
    first = build(tmp_path, "one", vad=vad)
    assert flash(first, board).ok
    (vad / "notes.txt").write_text("calibrated on the lab's rig\n")
    second = build(tmp_path, "two", vad=vad)
    r = flash(second, board)
    assert r.ok and r.booted == "b" and r.chunks_sent == 1
    new_pieces = [p for p in second.manifest.index if p.id not in first.manifest.index_map()]
    assert len(new_pieces) == 1 and r.index_bytes_sent == new_pieces[0].stored
    padding = next(f for f in second.manifest.files if f.path.endswith("padding.bin"))
    assert len(padding.chunks) > 8 and r.index_bytes_sent < 40 * len(padding.chunks)
    assert (board.root / "slots/b/artifacts/vad/notes.txt").read_text().startswith("calibrated")


def test_refusals(tmp_path: Path, keypair) -> None:
    priv, pub = keypair
    board = InProcessBoard(tmp_path / "board", key=pub)
    unsigned = build(tmp_path, "unsigned")
    with pytest.raises(BoardRefused, match="refuses unsigned"):
        flash(unsigned, board)
    other_priv, _ = keys.generate(tmp_path / "keys" / "other")
    foreign = build(tmp_path, "foreign", key=other_priv)
    with pytest.raises(BoardRefused, match="does not verify"):
        flash(foreign, board)
    rpi = build(tmp_path, "rpi", key=priv, board="rpi5")
    with pytest.raises(BoardRefused, match="for board 'rpi5'"):
        flash(rpi, board)
    # tampered: one byte of the manifest changed after signing
    good = build(tmp_path, "good", key=priv)
    data = bytearray(good.path.read_bytes())
    idx = data.index(b'"version":"') + len(b'"version":"')
    data[idx] = ord("9") if data[idx] != ord("9") else ord("8")
    tampered_path = tmp_path / "tampered.bundle"
    tampered_path.write_bytes(bytes(data))
    with pytest.raises(BoardRefused, match="does not verify"):
        flash(bundles.Bundle.open(tampered_path), board)
    assert Store(board.root).state().active is None
    assert not any((board.root / "slots" / "a").iterdir())


@pytest.mark.parametrize(
    ("edits", "extra_mb", "message"),
    [
        ({"max_artifact_mb = 2048": "max_artifact_mb = 1"}, 1.5, r"budget\.max_artifact_mb"),
        ({"max_rss_mb = 4096": "max_rss_mb = 100"}, 0.0, r"budget\.max_rss_mb"),
        (
            {"flash_mb = 8192": "flash_mb = 16", "max_artifact_mb = 2048": "max_artifact_mb = 16"},
            9.0,
            "two slots of it do not fit",
        ),
    ],
)
def test_over_budget_is_refused(tmp_path: Path, edits: dict, extra_mb: float, message: str) -> None:
    text = profiles.path_of("sim").read_text().replace('name = "sim"', 'name = "tiny"')
    for old, new in edits.items():
        text = text.replace(old, new)
    prof = tmp_path / "tiny.toml"
    prof.write_text(text)
    board = InProcessBoard(tmp_path / "boards" / "tiny", profile=str(prof))
    out = tmp_path / "big.bundle"
    vad = make_artifact(tmp_path / "vad", extra_mb=extra_mb)
    bundles.build(profiles.find(str(prof)), out, {"vad": vad})
    with pytest.raises(BoardRefused, match=message):
        flash(bundles.Bundle.open(out), board)
    assert not any((board.root / "slots" / "a").iterdir())


def test_resume_after_cuts_sends_each_chunk_once(tmp_path: Path) -> None:
    llm = make_artifact(tmp_path / "llm", extra_mb=2.0)
    b = build(tmp_path, "b", vad=llm)
    board = InProcessBoard(tmp_path / "board")
    board.cut_after = 30
    r = flash(b, board)
    assert r.ok and r.resumed == 1
    payload = sum(c.stored for c in b.manifest.chunks)
    index = sum(p.stored for p in b.manifest.index)
    # each attempt asks `missing` again; no piece or chunk byte is sent twice
    assert r.chunk_bytes_sent == payload and r.index_bytes_sent == index
    assert r.bytes_sent <= payload + index + 2 * len(b.manifest.raw)


def test_failed_health_check_rolls_back_with_reason(tmp_path: Path) -> None:
    good = make_artifact(tmp_path / "good")
    board = InProcessBoard(tmp_path / "board")
    r = flash(build(tmp_path, "ok", vad=good), board)
    assert r.ok and r.health["inference"]["vad"].startswith("vad: p(speech) of silence")
    broken = make_artifact(tmp_path / "broken", broken=True)
    r = flash(build(tmp_path, "broken", vad=broken), board)
    assert not r.ok and r.rolled_back
    assert r.booted == "a" and "vad artifact failed" in r.reason
    assert Store(board.root).state().active == "a"


def test_unconfirmed_trial_rolls_back_after_its_boots(tmp_path: Path) -> None:
    board = InProcessBoard(tmp_path / "board")
    assert flash(build(tmp_path, "one"), board).ok
    llm = make_artifact(tmp_path / "llm")
    b = build(tmp_path, "two", vad=llm)
    send_by_hand(board, b)
    while not board.call("install", {})[0]["done"]:
        pass
    assert board.call("commit", {})[0]["slot"] == "b"
    store = Store(board.root)
    booted = [choose_slot(store) for _ in range(4)]  # power cuts before any confirm
    assert booted[:3] == [("b", True)] * 3 and booted[3] == ("a", False)
    assert store.state().last["event"] == "rollback"


def test_truncated_bundle_is_refused(tmp_path: Path) -> None:
    b = build(tmp_path, "b", vad=make_artifact(tmp_path / "llm", extra_mb=0.3))
    data = b.path.read_bytes()
    cut = tmp_path / "cut.bundle"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(BoardError, match="truncated"):
        bundles.Bundle.open(cut)
    cut.write_bytes(data[:50])
    with pytest.raises(BoardError, match="truncated"):
        bundles.Bundle.open(cut)


def test_llm_artifact_health_check_generates_a_token(tmp_path: Path) -> None:
    from tests.artifacts import llm_artifact

    llm = llm_artifact("tiny-qwen2", quant="int4")
    board = InProcessBoard(tmp_path / "board")
    r = flash(build(tmp_path, "llm", llm=llm), board)
    assert r.ok, r.reason
    assert r.health["inference"]["llm"].startswith("llm: generated token")


def test_run_an_app_and_fetch_its_trace(tmp_path: Path) -> None:
    from tests.artifacts import asr_artifact

    board = InProcessBoard(tmp_path / "board")
    reply, _ = board.call("run", {"app": "captions", "seconds": 0.5})
    assert not reply["ok"] and reply["kind"] == "MissingModel"  # factory code: no models yet
    reply, _ = board.call("run", {"app": "../../etc", "seconds": 1})
    assert not reply["ok"] and "no app" in reply["error"]
    vad = make_artifact(tmp_path / "vad")
    out = tmp_path / "apps.bundle"
    vision = export_packaged("vision", tmp_path / "vision")
    arts = {"vad": vad, "asr": asr_artifact("tiny-whisper"), "vision": vision}
    bundles.build(profiles.find("sim"), out, arts)
    r = flash(bundles.Bundle.open(out), board)
    assert r.ok, r.reason
    checks = r.health["inference"]  # one real inference per artifact, through the engines
    assert checks["asr"].startswith("asr: 1 s of silence ->")
    assert checks["vision"].startswith("vision: blank image -> 0 boxes")
    assert checks["vad"].startswith("vad: p(speech) of silence")
    reply, _ = board.call("run", {"app": "captions", "seconds": 1.0})
    assert reply["ok"], reply
    trace, offset = b"", 0
    while True:
        r, blob = board.call("trace", {"name": reply["trace"], "offset": offset})
        assert r["ok"]
        trace, offset = trace + blob, offset + len(blob)
        if offset >= r["size"]:
            break
    events = json.loads(trace)["traceEvents"]
    assert events and all("ph" in e for e in events)


def test_install_of_a_large_file_resumes_chunk_by_chunk(tmp_path: Path) -> None:
    """Installing spreads one big file over several requests; a cut between them resumes."""
    vad = make_artifact(tmp_path / "vad", extra_mb=1.5)
    b = build(tmp_path, "big", vad=vad)
    board = InProcessBoard(tmp_path / "board")
    send_by_hand(board, b)
    steps = []
    while True:
        reply, _ = board.call("install", {"budget": 300_000})
        assert reply["ok"], reply
        steps.append(reply["files"])
        if len(steps) == 3:
            board.agent = board.power_on()  # a power cut between two install requests
        if reply["done"]:
            break
    padding = next(f for f in b.manifest.files if f.path.endswith("padding.bin"))
    assert len(steps) > padding.size // 300_000  # the 1.5 MB file took several requests
    assert Store(board.root).verify_slot("a") == []


def test_verify_reads_a_slot_back_and_names_what_does_not_match(tmp_path: Path) -> None:
    reply, _ = InProcessBoard(tmp_path / "new").call("verify")
    assert not reply["ok"] and reply["kind"] == "RequestError" and "factory" in reply["error"]
    board = InProcessBoard(tmp_path / "sim")
    assert flash(build(tmp_path, "v", vad=make_artifact(tmp_path / "vad")), board).ok
    reply, _ = board.call("verify")
    assert reply["ok"] and reply["complete"] and reply["bad"] == []
    slot = reply["slot"]
    store = Store(tmp_path / "sim")
    onnx = next(store.slot_dir(slot).rglob("vad.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"!")  # one byte flipped on the flash
    reply, _ = board.call("verify", {"slot": slot})
    assert reply["ok"] and reply["bad"] == [str(onnx.relative_to(store.slot_dir(slot)))]
    other = "b" if slot == "a" else "a"
    reply, _ = board.call("verify", {"slot": other})
    assert reply["ok"] and not reply["complete"] and reply["bad"] == []

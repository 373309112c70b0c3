"""True power cuts: qemu killed at seeded moments of a flash, a commit and a boot, with what the
guest wrote but did not flush dropped by the disk (`hil.cutdisk`), as a board losing power loses
its page cache and its flash's write cache. After every cut the board boots again: it must boot
a complete slot (the old bundle or the new one) whose every file reads back as its manifest
says (`verify`), and the same flash must then resume to completion.

`make qemu-test` runs OCULA_QEMU_CUTS (5) seeds; `make faults` runs 30 and prints the tally
(written to OCULA_FAULT_TALLY, beside the sim board's cuts: `python -m tests.test_faults_powercut
TALLY`)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from board.client import Board
from board.flash import flash
from hil.qemu import QemuBoard
from hil.sim import InProcessBoard
from hil.transport import open_port
from tests.qemu.conftest import record
from tests.test_faults_powercut import TAIL_OPS, CutOnce, Recorder, _bundle, _tally

CASES = int(os.environ.get("OCULA_QEMU_CUTS", "5"))
BOOT_S = float(os.environ.get("OCULA_QEMU_BOOT_S", "300"))


class Cutter:
    """The board's power switch as CutOnce sees it; keeps what each cut dropped."""

    def __init__(self, board: QemuBoard, torn: bool) -> None:
        self.board, self.torn = board, torn
        self.dropped: list[int] = []

    def power_cut(self) -> None:
        self.dropped.append(self.board.power_cut(torn=self.torn))

    def running(self) -> bool:
        return self.board.running()

    def boot(self) -> None:
        self.board.boot()


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, qemu_board: QemuBoard
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cuts")
    rng = random.Random(1234)
    old = _bundle(tmp, "old", rng.randbytes(600_000), profile="qemu")
    new = _bundle(tmp, "new", rng.randbytes(900_000), profile="qemu")
    probe = Recorder(InProcessBoard(tmp / "probe" / "qemu", profile="qemu"))
    assert flash(new, probe).ok
    client = Board(lambda: open_port(qemu_board.port), name="qemu://ci", timeout=30)
    try:
        assert flash(old, client, reboot_timeout=BOOT_S).ok
        yield {"bundles": (old, new), "ops": probe.ops, "board": qemu_board, "client": client}
    finally:
        client.close()


def _check_booted(client: Board, bundles: tuple[Any, Any]) -> tuple[str, bool]:
    info, _ = client.request("info")
    booted = info["booted"]
    assert booted in ("a", "b"), f"booted {booted} after a cut"
    digest = info["slots"][booted]["bundle"]
    assert digest in (b.manifest.digest for b in bundles)
    check, _ = client.request("verify", {"slot": booted})
    assert check["complete"] and check["bad"] == [], check
    return ("new" if digest == bundles[1].manifest.digest else "old"), True


@pytest.mark.parametrize("seed", range(CASES))
def test_power_cut(seed: int, world: dict[str, Any]) -> None:
    rng = random.Random(seed)
    board: QemuBoard = world["board"]
    client: Board = world["client"]
    old, new = world["bundles"]
    info, _ = client.request("info")
    current = info["slots"][info["booted"]]["bundle"]
    target = new if current == old.manifest.digest else old
    pair = (old, new)
    switch = Cutter(board, torn=bool(seed % 4 == 3))
    ops = world["ops"]
    phase = ("flash", "commit", "boot")[seed % 3]
    outcome: list[str] = []
    verified = True
    if phase == "boot":  # cut while the guest boots, at a seeded moment before the agent is up
        board.power_cut()
        board.boot()
        time.sleep(rng.uniform(0.0, max(1.0, board.boot_s or 30.0)))
        switch.power_cut()
        board.boot()
        client.reconnect(BOOT_S)
        slot, verified = _check_booted(client, pair)
        outcome.append(slot)
        result = flash(target, client, reboot_timeout=BOOT_S)
        k, op = 0, "boot"
    else:
        candidates = [i + 1 for i, o in enumerate(ops) if (o in TAIL_OPS) == (phase == "commit")]
        k = rng.choice(candidates)
        cutter = CutOnce(client, switch, k, rng.uniform(0, 0.05))  # type: ignore[arg-type]
        result = flash(target, cutter, reboot_timeout=BOOT_S)
        op = cutter.cut_op
        for after in cutter.after_cut:
            assert after["booted"] in ("a", "b"), after
            digest = after["slots"][after["booted"]]["bundle"]
            assert digest in (old.manifest.digest, new.manifest.digest)
            outcome.append("new" if digest == target.manifest.digest else "old")
        client.timeout = 30
        if cutter.after_cut:
            check, _ = client.request("verify")
            assert check["complete"] and check["bad"] == [], check
    assert result.ok, result
    info, _ = client.request("info")
    assert info["slots"][info["active"]]["bundle"] == target.manifest.digest
    check, _ = client.request("verify", {"slot": info["active"]})
    assert check["complete"] and check["bad"] == [], check
    _tally(
        {
            "fault": "power_cut",
            "board": "qemu",
            "seed": seed,
            "phase": phase,
            "op": op,
            "k": k,
            "cut": bool(switch.dropped),
            "torn": switch.torn,
            "dropped_sectors": sum(switch.dropped),
            "booted_after_cut": outcome,
            "verified": verified,
            "resumed": result.resumed,
            "ok": result.ok,
        }
    )
    record(figure="power_cut", seed=seed, phase=phase, op=op, dropped=sum(switch.dropped))

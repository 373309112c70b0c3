"""True power cuts: qemu killed at seeded moments of a flash (a chunk being written, the slot
being installed, the commit, the confirm) and of a boot, with what the guest wrote but did not
flush dropped by the disk (`hil.cutdisk`; every fourth cut torn: a seeded half of it lands), as a
board losing power loses its page cache and its flash's write cache. After every cut the board
boots again: it must boot a complete slot (the bundle it held or the new one) whose every file
reads back as its manifest says (`verify`), and the same flash must then resume to completion.

`make qemu-test` runs OCULA_QEMU_CUTS (5) seeds, one per moment; `make faults` runs 30 and
prints the tally (OCULA_FAULT_TALLY, beside the sim board's cuts: `python -m
tests.test_faults_powercut TALLY`)."""

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
from hil.transport import open_port
from tests.qemu.conftest import record
from tests.test_faults_powercut import CutOnce, _bundle, _tally

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


class CutAtOp(CutOnce):
    """CutOnce whose cut lands during the `j`-th `op` request: a flash's request sequence on a
    real board depends on what it already holds, so the moment is named by its op."""

    def __init__(self, client: Board, switch: Cutter, op: str, j: int, delay: float) -> None:
        super().__init__(client, switch, 0, delay)  # type: ignore[arg-type]
        self.op, self.j, self.seen = op, j, 0

    def call(self, op: str, fields: Any = None, blob: bytes = b"") -> Any:
        if op == self.op:
            self.seen += 1
            if self.seen == self.j:
                self.k = self.n + 1
        return super().call(op, fields, blob)

    def pipeline(self, calls: list[Any]) -> list[Any]:
        for i, call in enumerate(calls):
            if call[0] == self.op:
                self.seen += 1
                if self.seen == self.j:
                    self.k = self.n + 1 + i
        return super().pipeline(calls)


# where a cut lands: a chunk being written, the slot being installed, the commit of the boot
# state, the confirm of the new slot, or anywhere in a boot before the agent answers
MOMENTS = ("put", "install", "commit", "confirm", "boot")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, qemu_board: QemuBoard
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cuts")
    first = _bundle(tmp, "first", random.Random(1234).randbytes(600_000), profile="qemu")
    client = Board(lambda: open_port(qemu_board.port), name="qemu://ci", timeout=30)
    try:
        assert flash(first, client, reboot_timeout=BOOT_S).ok
        yield {"tmp": tmp, "board": qemu_board, "client": client}
    finally:
        client.close()


def _booted(client: Board) -> tuple[str, str]:
    """(slot, bundle digest) the board booted; that slot reads back whole (`verify`)."""
    info, _ = client.request("info")
    booted = info["booted"]
    assert booted in ("a", "b"), f"booted {booted} after a cut"
    check, _ = client.request("verify", {"slot": booted})
    assert check["complete"] and check["bad"] == [], check
    return booted, str(info["slots"][booted]["bundle"])


@pytest.mark.parametrize("seed", range(CASES))
def test_power_cut(seed: int, world: dict[str, Any]) -> None:
    rng = random.Random(seed)
    board: QemuBoard = world["board"]
    client: Board = world["client"]
    client.timeout = 30
    client.reconnect(BOOT_S)  # the last case's board may still be booting its new slot
    _, before = _booted(client)
    payload = rng.randbytes(rng.randint(300_000, 900_000))
    target = _bundle(world["tmp"], f"case{seed}", payload, profile="qemu")
    switch = Cutter(board, torn=seed % 4 == 3)
    moment = MOMENTS[seed % len(MOMENTS)]
    outcome: list[str] = []
    if moment == "boot":  # a cut at a seeded moment of a boot, before the agent is up
        board.power_cut()
        board.boot()
        time.sleep(rng.uniform(0.0, max(1.0, board.boot_s or 30.0)))
        switch.power_cut()
        board.boot()
        client.reconnect(BOOT_S)
        after_cut = [client.request("info")[0]]
        result = flash(target, client, reboot_timeout=BOOT_S)
        op = "boot"
    else:
        j = rng.randint(1, 3) if moment == "put" else 1
        cutter = CutAtOp(client, switch, moment, j, rng.uniform(0, 0.05))
        result = flash(target, cutter, reboot_timeout=BOOT_S)
        after_cut, op = cutter.after_cut, cutter.cut_op
    for info in after_cut:
        slot = info["booted"]
        assert slot in ("a", "b"), info
        digest = info["slots"][slot]["bundle"]
        assert digest in (before, target.manifest.digest), info
        outcome.append("new" if digest == target.manifest.digest else "old")
    client.timeout = 30
    assert result.ok, result
    if not board.running():  # the cut landed after the flash's last reply: power on again,
        board.boot()  # and what the board confirmed before it must be what boots
        outcome.append("new")  # (checked below: the confirmed bundle boots)
    client.reconnect(BOOT_S)
    slot, digest = _booted(client)
    assert digest == target.manifest.digest
    assert switch.dropped, f"no cut landed during {moment}"
    _tally(
        {
            "fault": "power_cut",
            "board": "qemu",
            "seed": seed,
            "op": op,
            "cut": True,
            "torn": switch.torn,
            "dropped_sectors": sum(switch.dropped),
            "booted_after_cut": outcome,
            "verified": True,
            "resumed": result.resumed,
            "ok": result.ok,
        }
    )
    record(figure="power_cut", seed=seed, op=op, dropped=sum(switch.dropped), slot=slot)

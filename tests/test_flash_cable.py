"""Flashing through the virtual null-modem: bit errors at 1e-4 and random cuts of the line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from board import bundle as bundles
from board import profiles
from board.client import Board
from board.flash import flash
from export.packaged import export_packaged
from hil.cable import Cable, random_cuts
from hil.sim import SimBoard
from hil.transport import open_port
from runtime.agent.store import Store


@pytest.mark.parametrize("seed", [1, 2])
def test_flash_survives_bit_errors_and_cuts(tmp_path: Path, seed: int) -> None:
    art = tmp_path / "vad"
    export_packaged("vad", art)
    payload = random.Random(seed).randbytes(700_000)
    (art / "padding.bin").write_bytes(payload)
    out = tmp_path / "b.bundle"
    bundles.build(profiles.find("sim"), out, {"vad": art})
    bundle = bundles.Bundle.open(out)
    cuts = random_cuts(seed, count=3, span=3.0, length=(0.1, 0.6), start=0.5)
    with Cable(ber=1e-4, seed=seed, schedule=cuts) as cable:
        with SimBoard("sim", base=tmp_path, port=cable.b):
            client = Board(lambda: open_port(cable.a), name=cable.a, timeout=5)
            try:
                client.reconnect(30)
                result = flash(bundle, client, reboot_timeout=60, retries=50)
            finally:
                client.close()
        stats = cable.stats()
    assert result.ok and result.booted == "a", result
    assert sum(d["flipped_bits"] for d in stats.values()) > 0
    slot = tmp_path / "sim" / "slots" / "a"
    assert (slot / "artifacts" / "vad" / "padding.bin").read_bytes() == payload
    assert (slot / "artifacts" / "vad" / "vad.onnx").read_bytes() == (art / "vad.onnx").read_bytes()
    assert Store(tmp_path / "sim").verify_slot("a") == []

"""Full and read-only stores, on a small tmpfs made by the test, over the real simulated board.

A flash that does not fit is refused at `begin` with the missing bytes named (and `ocula flash`
prints that as one line); a disk that fills during the install fails the install, which removes
its partial slot; a disk full at power-on (the boot ROM cannot save its boot count) and a
read-only store still boot the last good slot. Needs root (it mounts a tmpfs).
"""

from __future__ import annotations

import random
import re
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
from tests.smallfs import fill, free_bytes, remount, small_fs

MB = 1 << 20


def _bundle(tmp: Path, name: str, padding: int) -> bundles.Bundle:
    art = tmp / f"{name}-vad"
    export_packaged("vad", art)
    (art / "padding.bin").write_bytes(random.Random(name).randbytes(padding))
    out = tmp / f"{name}.bundle"
    bundles.build(profiles.find("sim"), out, {"vad": art}, version=name)
    return bundles.Bundle.open(out)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[bundles.Bundle, bundles.Bundle]:
    tmp = tmp_path_factory.mktemp("diskfull")
    return _bundle(tmp, "old", 300_000), _bundle(tmp, "new", 3_000_000)


def _client(board: SimBoard) -> Board:
    client = Board(lambda: open_port(board.port), name=board.port)
    client.reconnect(30)
    return client


def _leftovers(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith((".tmp", ".part"))
    )


def _power_cycle(board: SimBoard, client: Board) -> dict[str, Any]:
    board.power_cut()
    board.boot()
    client.reconnect(30)
    info, _ = client.call("info")
    return info


def test_a_flash_that_does_not_fit_is_refused_at_begin(
    tmp_path: Path, pair: tuple[bundles.Bundle, bundles.Bundle], ocula: Any
) -> None:
    old, new = pair
    size = old.manifest.total_bytes + new.manifest.total_bytes + 7 * MB // 2
    with small_fs(tmp_path, size) as mnt:
        with SimBoard("sim", base=mnt) as board:
            client = _client(board)
            try:
                assert flash(old, client, reboot_timeout=30).ok
                free = free_bytes(mnt)
                # the old check (bundle size against free space) accepted it, and it bricked
                assert new.manifest.total_bytes < free
                with pytest.raises(BoardRefused) as refused:
                    flash(new, client, reboot_timeout=30)
                message = str(refused.value)
                assert "the board refused 'begin'" in message
                assert "bytes" in message and "missing" in message
                found = re.search(r"(\d+) bytes \([\d.]+ MB\) missing", message)
                assert found, message
                missing = int(found.group(1))
                assert 0 < missing <= 3 * new.manifest.total_bytes - free
                assert Store(mnt / "sim").staged() is None  # nothing was stored
                info = _power_cycle(board, client)
                assert info["booted"] == "a" and info["slots"]["a"]["version"] == "old"
            finally:
                client.close()
        r = ocula("flash", str(new.path), "--port", "sim://sim", env={"OCULA_SIM_DIR": str(mnt)})
        lines = [line for line in r.err.splitlines() if line.startswith("ocula:")]
        assert r.code == 1 and "Traceback" not in r.err, r.err
        assert len(lines) == 1 and "bytes" in lines[0] and "missing" in lines[0], r.err
        assert "check the cable" not in r.err
        store = Store(mnt / "sim")
        assert store.state().active == "a" and store.verify_slot("a") == []
        # the bytes named are the bytes needed: grow the disk by them and the flash goes through
        found = re.search(r"(\d+) bytes \([\d.]+ MB\) missing", lines[0])
        assert found, lines[0]
        remount(mnt, f"size={size + int(found.group(1)) + 64 * 1024}")
        r = ocula("flash", str(new.path), "--port", "sim://sim", env={"OCULA_SIM_DIR": str(mnt)})
        assert r.code == 0, r.err
        assert store.state().active == "b" and store.verify_slot("b") == []


class FillBefore:
    """Passes calls to a client; just before the first call of `op` fills the disk."""

    def __init__(self, client: Board, mnt: Path, op: str, leave: int = 0) -> None:
        self.client, self.mnt, self.op, self.leave = client, mnt, op, leave
        self.filler: Path | None = None

    def call(self, op: str, fields: Any = None, blob: bytes = b"") -> Any:
        if op == self.op and self.filler is None:
            self.filler = fill(self.mnt, self.leave)
        return self.client.call(op, fields, blob)

    def reconnect(self, timeout: float) -> None:
        self.client.reconnect(timeout)


def test_a_disk_that_fills_during_install_fails_it_and_frees_the_slot(
    tmp_path: Path, pair: tuple[bundles.Bundle, bundles.Bundle]
) -> None:
    old, new = pair
    size = 2 * old.manifest.total_bytes + 2 * new.manifest.total_bytes + 2 * MB
    with small_fs(tmp_path, size) as mnt:
        with SimBoard("sim", base=mnt) as board:
            client = _client(board)
            try:
                assert flash(old, client, reboot_timeout=30).ok
                filling = FillBefore(client, mnt, "install", leave=MB)
                with pytest.raises(BoardRefused) as refused:
                    flash(new, filling, reboot_timeout=30)
                message = str(refused.value)
                assert "the board refused 'install'" in message
                assert "the store is full" in message and "partial slot was removed" in message
                assert "missing" in message and "flash again" in message
                store = Store(mnt / "sim")
                assert list(store.slot_dir("b").iterdir()) == []
                assert _leftovers(mnt / "sim") == []
                assert store.state().active == "a" and store.state().trial is None
                info = _power_cycle(board, client)
                assert info["booted"] == "a" and info["slots"]["a"]["version"] == "old"
                assert filling.filler is not None
                filling.filler.unlink()
                result = flash(new, client, reboot_timeout=30)
                assert result.ok and result.booted == "b", result
            finally:
                client.close()
        store = Store(mnt / "sim")
        assert store.state().active == "b" and store.verify_slot("b") == []


def test_a_full_disk_at_power_on_boots_the_good_slot(
    tmp_path: Path, pair: tuple[bundles.Bundle, bundles.Bundle]
) -> None:
    """The brick of issue 14: a trial pending, the disk full, the ROM cannot save its boot count.
    It boots the active slot, answers, and once there is room the trial goes on."""
    old, new = pair
    size = 2 * old.manifest.total_bytes + 2 * new.manifest.total_bytes + 2 * MB
    with small_fs(tmp_path, size) as mnt, SimBoard("sim", base=mnt) as board:
        client = _client(board)
        try:
            assert flash(old, client, reboot_timeout=30).ok
            filling = FillBefore(client, mnt, "reboot")
            result = flash(new, filling, reboot_timeout=30)
            assert not result.ok and result.booted == "a", result
            assert "could not save its boot count" in result.reason, result
            state = Store(mnt / "sim").state()
            assert state.trial == "b" and state.boots_left == 3  # nothing could be saved
            for _ in range(3):  # every power-on, not only the first
                info = _power_cycle(board, client)
                assert info["booted"] == "a" and info["slots"]["a"]["version"] == "old"
            assert filling.filler is not None
            filling.filler.unlink()
            result = flash(new, client, reboot_timeout=30)
            assert result.ok and result.booted == "b", result
        finally:
            client.close()


def test_a_read_only_store_boots_the_good_slot(
    tmp_path: Path, pair: tuple[bundles.Bundle, bundles.Bundle]
) -> None:
    """The ROM's slot choice and the agent's start on a store it cannot write at all, with a
    trial pending: the active slot boots and answers (the ROM's lock is outside this test)."""
    old, new = pair
    size = 2 * old.manifest.total_bytes + 2 * new.manifest.total_bytes + 2 * MB
    with small_fs(tmp_path, size) as mnt:
        root = mnt / "sim"
        board = InProcessBoard(root)
        assert flash(old, board).ok

        class NoReboot:
            def call(self, op: str, fields: Any = None, blob: bytes = b"") -> Any:
                if op == "reboot":
                    remount(mnt, "ro")
                return board.call(op, fields, blob)

            def reconnect(self, timeout: float) -> None:
                return None

        result = flash(new, NoReboot())
        try:
            assert not result.ok and result.booted == "a", result
            assert "could not save its boot count" in result.reason, result
            assert Store(root).state().trial == "b"
            for _ in range(3):
                board.agent = board.power_on()
                info, _ = board.call("info")
                assert info["ok"] and info["booted"] == "a" and not info["trial"]
                assert info["slots"]["a"]["version"] == "old"
            with pytest.raises(Exception, match="read-only"):
                raise_refusal(board.call("commit"))
        finally:
            remount(mnt, "rw")


def raise_refusal(reply: tuple[dict[str, Any], bytes]) -> None:
    if not reply[0].get("ok"):
        raise RuntimeError(reply[0]["error"])

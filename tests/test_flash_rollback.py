"""Automatic rollback on a real simulated board: broken code, a missed deadline, a bad model."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

from board import bundle as bundles
from board import profiles
from board.client import Board
from board.errors import LinkLost
from board.flash import flash
from export.packaged import export_packaged
from hil.sim import SimBoard
from hil.transport import open_port
from runtime.agent.store import Store


def _build(tmp: Path, name: str, runtime_dir: Path = bundles.RUNTIME_DIR) -> bundles.Bundle:
    art = tmp / f"{name}-vad"
    export_packaged("vad", art)
    (art / "padding.bin").write_bytes(name.encode() * 1000)
    out = tmp / f"{name}.bundle"
    bundles.build(profiles.find("sim"), out, {"vad": art}, runtime_dir=runtime_dir)
    return bundles.Bundle.open(out)


def _client(board: SimBoard) -> Board:
    client = Board(lambda: open_port(board.port), name=board.port)
    client.reconnect(30)
    return client


def test_code_that_cannot_boot_rolls_back_after_its_boots(tmp_path: Path) -> None:
    good = _build(tmp_path, "good")
    broken_code = tmp_path / "broken-runtime"
    shutil.copytree(bundles.RUNTIME_DIR, broken_code, ignore=shutil.ignore_patterns("__pycache__"))
    serve = broken_code / "agent" / "serve.py"
    text = serve.read_text().replace(
        'if __name__ == "__main__":', 'raise SystemExit("this build cannot start")\n\n\nif 0:'
    )
    serve.write_text(text)
    broken = _build(tmp_path, "broken", runtime_dir=broken_code)
    with SimBoard("sim", base=tmp_path) as board:
        client = _client(board)
        try:
            assert flash(good, client, reboot_timeout=30).ok
            result = flash(broken, client, reboot_timeout=30)
        finally:
            client.close()
    assert not result.ok and result.rolled_back and result.booted == "a"
    assert "did not pass its health check within its boots" in result.reason
    state = Store(tmp_path / "sim").state()
    assert state.active == "a" and state.trial is None
    log = (tmp_path / "sim" / "console.log").read_text()
    assert log.count("this build cannot start") == 3


def test_unconfirmed_trial_rolls_back_at_its_deadline(tmp_path: Path) -> None:
    first, second = _build(tmp_path, "first"), _build(tmp_path, "second")
    with SimBoard("sim", base=tmp_path) as board:
        client = _client(board)
        try:
            assert flash(first, client, reboot_timeout=30).ok

            class NoConfirm:
                """Passes every request but the confirm: the host vanished after the reboot."""

                def call(self, op, fields=None, blob=b""):
                    if op == "confirm":
                        raise LinkLost("host gone")
                    return client.call(op, fields, blob)

                def reconnect(self, timeout):
                    client.reconnect(timeout)

            with contextlib.suppress(LinkLost):
                flash(second, NoConfirm(), deadline_s=4, retries=0, reboot_timeout=30)
            info, _ = client.call("info")
            assert info["booted"] == "a" or (info["booted"] == "b" and info["trial"])
            deadline = time.monotonic() + 30
            client.timeout = 2.0
            while time.monotonic() < deadline:
                try:
                    client.reconnect(5)
                    info, _ = client.call("info")
                except LinkLost:
                    continue
                if info["booted"] == "a":
                    break
            assert info["booted"] == "a", info
            assert info["last"]["event"] == "rollback"
            assert "not confirmed by the host within 4 s" in info["last"]["reason"]
        finally:
            client.close()

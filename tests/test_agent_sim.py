"""The simulated board over a real pty, through pyserial: the same path as a USB serial port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from board import bundle as bundles
from board import keys, profiles
from board.client import Board
from board.flash import flash
from export.packaged import export_packaged
from hil.errors import PortError
from hil.sim import SimBoard
from hil.transport import open_port
from runtime.agent.store import Store
from runtime.errors import OculaError


def _bundle(tmp_path: Path, name: str, key: Path | None = None, board: str = "sim") -> Path:
    art = tmp_path / f"{name}-vad"
    export_packaged("vad", art)
    (art / "padding.bin").write_bytes(name.encode() * 40000)
    out = tmp_path / f"{name}.bundle"
    bundles.build(profiles.find(board), out, {"vad": art}, key=key)
    return out


def test_flash_over_pty_and_reboot_into_new_slot(tmp_path: Path) -> None:
    bundle = bundles.Bundle.open(_bundle(tmp_path, "one"))
    with SimBoard("sim", base=tmp_path) as board:
        client = Board(lambda: open_port(board.port), name=board.port)
        try:
            client.reconnect(30)
            hello, _ = client.call("hello")
            assert hello["board"] == "sim" and hello["slot"] == "factory"
            result = flash(bundle, client, reboot_timeout=30)
            assert result.ok and result.booted == "a" and result.health["ok"]
            info, _ = client.call("info")
            # the agent now runs from the slot's own copy of the runtime
            assert info["code"] == str(tmp_path / "sim" / "slots" / "a")
            assert info["active"] == "a" and info["trial"] is False
        finally:
            client.close()
    assert Store(tmp_path / "sim").verify_slot("a") == []


def test_sim_url_keeps_its_flash_between_commands(tmp_path: Path, ocula) -> None:
    priv, pub = keys.generate(tmp_path / "k")
    path = _bundle(tmp_path, "two", key=priv)
    env = {"OCULA_SIM_DIR": str(tmp_path / "state")}
    port = f"sim://glasses?profile=sim&key={pub}"
    r = ocula("flash", str(path), "--port", port, "--json", env=env, timeout=120)
    assert r.code == 0, r.err
    first = json.loads(r.out)
    assert first["ok"] and first["booted"] == "a" and first["bytes_sent"] > 0
    r = ocula("flash", str(path), "--port", port, "--json", env=env, timeout=120)
    assert r.code == 0, r.err
    again = json.loads(r.out)
    assert again["already_installed"] and again["bytes_sent"] == 0
    assert again["chunks_skipped"] == again["chunks_total"]
    r = ocula("flash", str(path), "--port", str(tmp_path / "ttyNOPE"), env=env, timeout=60)
    assert r.code == 1 and "no such port" in r.err and "Traceback" not in r.err
    unsigned = _bundle(tmp_path, "three")
    r = ocula("flash", str(unsigned), "--port", port, env=env, timeout=120)
    assert r.code == 1 and "refuses unsigned" in r.err and "Traceback" not in r.err


def test_busy_and_missing_ports_say_so(tmp_path: Path) -> None:
    with SimBoard("busy", base=tmp_path) as board:
        client = Board(lambda: open_port(board.port), name=board.port)
        client.reconnect(30)  # the ROM holds the store's lock once it answers
        client.close()
        with pytest.raises(PortError, match=r"busy.*held by process \d+"):
            SimBoard("busy", base=tmp_path).start()
    # a local port held by another process: the error names that process
    master, slave = os.openpty()
    path = os.ttyname(slave)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from hil.transport import open_port; p = open_port({path!r}); "
            "print('open', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(PortError, match=rf"busy \(held by {holder.pid} "):
            open_port(path)
    finally:
        holder.kill()
        holder.wait()
        os.close(master)
        os.close(slave)
    with pytest.raises(PortError, match="no such port"):
        open_port(str(tmp_path / "ttyNOPE"))
    with pytest.raises(PortError, match="unknown port scheme 'nope'"):
        open_port("nope://x")


def test_frame_flood_and_garbage_leave_the_agent_serving(tmp_path: Path) -> None:
    import os

    from runtime.link import framing

    with SimBoard("sim", base=tmp_path) as board:
        raw = open_port(board.port)
        try:
            flood = os.urandom(1 << 20) + framing.encode(os.urandom(200_000)) * 4
            flood += framing.encode(b"\x00" * 5000) * 200  # frames of no session, over and over
            for i in range(0, len(flood), 4096):
                raw.write(flood[i : i + 4096])
            raw.flush()
        finally:
            raw.close()
        client = Board(lambda: open_port(board.port), name=board.port)
        try:
            client.reconnect(30)
            hello, _ = client.call("hello")
            assert hello["board"] == "sim" and board.running()
        finally:
            client.close()
        # a message over the agent's size limit is refused by its link, not buffered
        from runtime.link.endpoint import Endpoint

        port = open_port(board.port)
        try:
            with Endpoint(port, max_message=1 << 21) as ep:
                ep.send(b"\x00\x02{}" + b"x" * 300_000)
                ep.flush(timeout=3)
        except OculaError:
            pass  # refused: the agent's side reset the link
        finally:
            port.close()
        client = Board(lambda: open_port(board.port), name=board.port)
        try:
            client.reconnect(30)
            assert client.call("hello")[0]["ok"] and board.running()
        finally:
            client.close()


def test_board_sim_command_prints_a_port_that_answers(tmp_path: Path) -> None:
    import signal

    from tests.conftest import BIN

    env = {**os.environ, "OCULA_SIM_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [str(BIN / "ocula"), "board", "sim", "--profile", "rpi5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        client = Board(lambda: open_port(port), name=port)
        try:
            client.reconnect(30)
            hello, _ = client.call("hello")
            assert hello["board"] == "rpi5" and hello["slot"] == "factory"
        finally:
            client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert (tmp_path / "rpi5" / "board.toml").is_file()

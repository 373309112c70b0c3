"""The simulated board: the real boot ROM and agent in a subprocess, on a pseudo-terminal.

A sim board has a name and a store (its flash) at `$OCULA_SIM_DIR/NAME` (default
`~/.cache/ocula/sim/NAME`), so a second command finds what the first one flashed. The store is
provisioned once, like a board at the factory: `board.toml` (its profile, by default the profile
of the same name) and, optionally, `trusted.pub` (the public key it accepts bundles from).

`SimBoard.start()` opens a pty, runs `python -m runtime.agent.boot --fd MASTER --parent-pid
HOST` in its own process group and gives the host the slave path (`.port`), which pyserial
opens like any serial device. The pty lives in this process, so the port survives the board's reboots and power cuts:
`power_cut()` is SIGKILL to the whole group (ROM and agent, mid-write), `boot()` starts the ROM
again, which boots the committed slot. The slave side is put in raw mode at once, so nothing
the board writes is ever echoed back to it before the host opens the port.

A board lives only as long as the process that started it: the ROM watches that process (a
pidfd) and powers off, agent and all, when it exits, even by kill -9. `start()` takes the
store's lock and shares it with the ROM (`hil.simlock`: busy, stale and orphaned holders).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tty
from pathlib import Path
from typing import Any

from board import profiles
from hil import simlock
from hil.errors import PortError
from runtime.agent import api
from runtime.agent.boot import choose_slot
from runtime.agent.health import InferenceCheck
from runtime.agent.serve import start_agent
from runtime.agent.service import Agent
from runtime.agent.store import Store

__all__ = ["SimBoard", "sim_root", "state_dir"]

log = logging.getLogger(__name__)


def state_dir() -> Path:
    env = os.environ.get("OCULA_SIM_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ocula" / "sim"


def sim_root(name: str, base: Path | None = None) -> Path:
    if not name.replace("-", "_").isidentifier():
        raise PortError(f"sim://{name}: a sim board name is letters, digits, '-' and '_'")
    return (base or state_dir()) / name


class SimBoard:
    """One simulated board; not started until `start()`."""

    def __init__(
        self,
        name: str,
        profile: str | None = None,
        base: Path | None = None,
        key: bytes | None = None,
        port: str | None = None,
    ) -> None:
        self.name = name
        self.root = sim_root(name, base)
        self.profile = profile or (name if name in profiles.names() else "sim")
        self.key = key
        self._device_port = port  # serve this tty path instead of our own pty (a virtual cable)
        self.proc: subprocess.Popen[bytes] | None = None
        self._master = -1
        self._slave = -1
        self._lock = -1  # the store's lock, held from start() to stop() (hil.simlock)
        self.port = port or ""
        self.log_path = self.root / "console.log"

    def provision(self) -> None:
        """Write the board's identity once; an existing store keeps its profile and key."""
        self.root.mkdir(parents=True, exist_ok=True)
        board = self.root / "board.toml"
        if not board.exists():
            board.write_bytes(profiles.path_of(self.profile).read_bytes())
        trusted = self.root / "trusted.pub"
        if self.key is not None:
            if trusted.exists() and trusted.read_bytes() != self.key:
                raise PortError(
                    f"sim board {self.name} ({self.root}) already trusts another key; "
                    "remove trusted.pub there to re-provision it"
                )
            trusted.write_bytes(self.key)

    def start(self) -> SimBoard:
        self.provision()
        if self._lock < 0:
            self._lock = simlock.take(self.root, self.name)
        if self._device_port is None and self._master < 0:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            self.port = os.ttyname(self._slave)
        self.boot()
        return self

    def boot(self) -> None:
        """Power on: start the boot ROM (which picks the committed slot)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        cmd = [sys.executable, "-m", "runtime.agent.boot", "--store", str(self.root)]
        cmd += ["--parent-pid", str(os.getpid())]  # the board powers off when this process dies
        cmd += ["--lock-fd", str(self._lock)]
        cmd += ["--port", self._device_port] if self._device_port else ["--fd", str(self._master)]
        fds = (self._lock,) if self._device_port else (self._lock, self._master)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 (owned by the child)
        with log_file:
            self.proc = subprocess.Popen(
                cmd,
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
                cwd=self.root,
            )
        log.debug("sim board %s booting (pid %d) on %s", self.name, self.proc.pid, self.port)

    def power_cut(self) -> None:
        """SIGKILL the ROM and the agent at once, wherever they are."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                self.power_cut()
            self.proc = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        if self._lock >= 0:
            simlock.release(self._lock)
            self._lock = -1

    def __enter__(self) -> SimBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class InProcessBoard:
    """A board whose agent runs in this process: the same store, ROM logic and requests as a
    sim board, without a port (for fast tests of the flash logic). `call` goes through the
    agent's message codec; a reboot request runs the ROM's slot choice again, and
    `power_on()` does what a power cycle does."""

    def __init__(
        self,
        root: Path,
        profile: str = "sim",
        key: bytes | None = None,
        inference: InferenceCheck | None = None,
    ) -> None:
        self.root = root
        self.inference = inference
        SimBoard(root.name, profile=profile, base=root.parent, key=key).provision()
        self.agent = self.power_on()
        self.cut_after: int | None = None  # raise LinkLost after this many more calls

    def power_on(self) -> Agent:
        store = Store(self.root)
        for _ in range(10):
            slot, trial = choose_slot(store)
            boot_id = store.state().boot_count
            agent = start_agent(self.root, slot, trial, boot_id, self.inference)
            if agent is not None:
                return agent
        raise PortError(f"{self.root}: no slot boots (ten boots in a row failed)")

    def call(
        self, op: str, fields: dict[str, Any] | None = None, blob: bytes = b""
    ) -> tuple[dict[str, Any], bytes]:
        from board.errors import LinkLost

        if self.cut_after is not None:
            if self.cut_after <= 0:
                self.cut_after = None
                raise LinkLost("line cut (test)")
            self.cut_after -= 1
        payload = api.encode({"op": op, "_id": 1, **(fields or {})}, blob)
        reply = api.decode(api.handle_payload(self.agent.handle, payload))
        if self.agent.reboot_requested:
            self.agent = self.power_on()
        return reply

    def reconnect(self, timeout: float) -> None:
        return None

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
pidfd) and powers off, agent and all, when it exits, even by kill -9. The ROM holds the store's
lock (a flock; the file names the ROM's pid). `start()` refuses a store whose board serves a live
command ("busy", naming that command); a board whose command is gone is given
ORPHAN_GRACE_S to power off, then killed; a lock left by a dead holder is taken over, said once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from board import profiles
from hil.errors import PortError
from runtime.agent import rpc
from runtime.agent.boot import choose_slot
from runtime.agent.health import InferenceCheck
from runtime.agent.serve import handle_payload, start_agent
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

    def _take_store(self) -> None:
        """Refuse a store that a live command holds; wait out (or end) a board process whose
        host is gone; say once when a lock left by a dead holder is taken over."""
        lock = self.root / ".lock"
        deadline = time.monotonic() + ORPHAN_GRACE_S
        ended: int | None = None
        while lock.exists():
            free, holder = _probe(lock)
            if free:
                if ended is not None:
                    log.warning(
                        "sim://%s: board process %d outlived the command that started it; "
                        "it is stopped and its store %s taken over",
                        self.name,
                        ended,
                        self.root,
                    )
                elif holder is not None and holder != os.getpid():
                    log.warning(
                        "sim://%s: process %d held its store %s and is gone without letting "
                        "go (killed or power cut); taking the store over",
                        self.name,
                        holder,
                        self.root,
                    )
                return
            rom = _board_process(holder, self.root)
            if rom is None or rom.host_alive:
                raise PortError(self._busy(holder, rom))
            ended = rom.pid
            if time.monotonic() < deadline:
                _wait_exit(rom.pid, deadline)  # a board whose host died powers itself off
                continue
            log.info("sim://%s: board process %d did not power off; killing it", self.name, rom.pid)
            _kill_group(rom.pid)
            if not _wait_exit(rom.pid, time.monotonic() + ORPHAN_GRACE_S):
                raise PortError(
                    f"sim://{self.name}: board process {rom.pid} holds its store {self.root} "
                    f"and does not stop; kill it ('kill -9 -- -{rom.pid}') and try again"
                )

    def _busy(self, holder: int | None, rom: _Rom | None) -> str:
        where = f"sim://{self.name} is busy: its store {self.root}"
        if rom is not None and rom.host is not None:
            return (
                f"{where} is held by process {rom.host} ({_describe(rom.host)}), through its "
                f"board process {rom.pid}; close that command or use another board name"
            )
        if rom is not None:
            return (
                f"{where} is held by process {rom.pid} (a boot ROM started without a host); "
                f"stop it ('kill -- -{rom.pid}') or use another board name"
            )
        who = f"{holder} ({_describe(holder)})" if holder is not None else "?"
        return f"{where} is held by process {who}; close that command or use another board name"

    def start(self) -> SimBoard:
        self.provision()
        self._take_store()
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
        cmd += ["--port", self._device_port] if self._device_port else ["--fd", str(self._master)]
        fds = () if self._device_port else (self._master,)
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

    def __enter__(self) -> SimBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


ORPHAN_GRACE_S = 10.0  # how long a board process whose host died may take to power off


@dataclass
class _Rom:
    """A boot ROM holding a store: its pid, the host it serves, and whether that host lives."""

    pid: int
    host: int | None
    host_alive: bool


def _probe(lock: Path) -> tuple[bool, int | None]:
    """(whether the store's lock is free, the pid written in it)."""
    fd = os.open(lock, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return free, int(text) if text.isdigit() else None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _describe(pid: int) -> str:
    cmd = " ".join(_cmdline(pid)).strip()
    return cmd[:80] if cmd else "gone, or not visible in /proc"


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, ppid


def _board_process(pid: int | None, root: Path) -> _Rom | None:
    """The boot ROM `pid` if it serves the store `root`; its host is alive while the ROM is
    still that host's child (a ROM whose host died is reparented)."""
    if pid is None:
        return None
    argv = _cmdline(pid)
    if "runtime.agent.boot" not in argv or "--store" not in argv:
        return None
    store = argv[argv.index("--store") + 1] if argv.index("--store") + 1 < len(argv) else ""
    if Path(store).resolve() != root.resolve():
        return None
    given = argv[argv.index("--parent-pid") + 1 :][:1] if "--parent-pid" in argv else []
    if not given or not given[0].isdigit():
        return _Rom(pid, None, True)
    host = int(given[0])
    return _Rom(pid, host, _ppid(pid) == host)


def _wait_exit(pid: int, deadline: float) -> bool:
    """Whether process `pid` (not our child) exited before `deadline`."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # a kernel without pidfds (< 5.3): look every 0.1 s
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return True
            select.select([], [], [], 0.1)
        return False
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([fd], [], [], left)[0]:
                return True
        return False
    finally:
        os.close(fd)


def _kill_group(pid: int) -> None:
    """SIGKILL a board process and its agent (the ROM leads its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


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
        from board.flash import LinkLost

        if self.cut_after is not None:
            if self.cut_after <= 0:
                self.cut_after = None
                raise LinkLost("line cut (test)")
            self.cut_after -= 1
        payload = rpc.encode({"op": op, "_id": 1, **(fields or {})}, blob)
        reply = rpc.decode(handle_payload(self.agent, payload))
        if self.agent.reboot_requested:
            self.agent = self.power_on()
        return reply

    def reconnect(self, timeout: float) -> None:
        return None

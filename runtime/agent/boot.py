"""The boot ROM: picks a slot, runs the agent from it, and restarts it when it exits.

`python -m runtime.agent.boot --store DIR (--port PATH | --fd N)` is what a board runs at power
on (the simulated board runs exactly this in a subprocess). It stays small and never changes
with a bundle: it runs from the factory install, while the agent it starts runs from the
booted slot's own `runtime/` code (PYTHONPATH), so a bundle with broken code is caught here.

Slot choice, from state.json, through the boot state machine (runtime.agent.bootstate):
- a slot on trial with boots left: decrement its boot count (saved before the boot), boot it;
- a slot on trial with no boots left: roll back (clear the trial, record why), boot the active;
- otherwise the active slot if it is complete, else the factory code (no slot);
- when the boot state cannot be saved (a full or read-only store), the last good slot (the
  active one) boots and nothing is written: no write on the boot path is fatal.
A slot is booted only when its slot.json exists, so a half-written slot never runs.

The agent exits with REBOOT (3) to ask for a restart; any other exit of a trial slot is a failed
boot that costs one of its boots. The store is locked (flock) while the ROM runs: a second ROM on
the same store fails with BUSY (4), saying which process holds it.

A simulated board's host passes `--parent-pid PID` and `--lock-fd N` (the store's lock, which it
holds too): the ROM powers off (kills its agent, lets go of the store) when that process exits,
however it died; the agent dies with the ROM
(`runtime.agent.lifeline`). A crashing agent is restarted after a delay that doubles up to a
bound, waited on a deadline that the host's death cuts short.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime.agent import bootstate
from runtime.agent.bootstate import BootMachine
from runtime.agent.errors import StoreError
from runtime.agent.lifeline import Backoff, HostWatch, die_with_parent, wait_agent, wait_until
from runtime.agent.store import Store

__all__ = ["BUSY", "REBOOT", "choose_slot", "main"]

REBOOT = 3
BUSY = 4
log = logging.getLogger(__name__)


def choose_slot(store: Store) -> tuple[str, bool]:
    """(slot to boot or "factory", whether it is a trial boot): the `boot` event of the boot
    state machine (runtime.agent.bootstate), saved before the boot. Nothing here is fatal: a
    boot state that cannot be read boots the factory code, one that cannot be saved (a full or
    read-only store) boots the last good slot; both are logged."""
    try:
        saved = store.state()
    except (OSError, StoreError) as exc:
        log.error("cannot read the boot state (%s); booting the factory code", exc)
        return "factory", False
    machine = BootMachine(saved)

    def complete(slot: str) -> bool:
        try:
            return store.slot_manifest(slot) is not None
        except OSError:
            return False

    decision = bootstate.boot(machine, complete, store.save_boot_state)
    if decision.degraded:
        log.error("boot state not saved: booting slot %s without a trial", decision.slot)
    return decision.slot, decision.trial


def lock_store(root: Path, inherited: int | None = None) -> int:
    """Hold the store's lock for the life of this process; exit BUSY if another holds it.

    `inherited` is the lock file already open and locked by the host that started this board
    (a sim board): the lock is then shared, held while either lives. The lock file names its
    latest holder's pid and is emptied when the ROM stops cleanly; a pid found in it (other
    than the host's) is a holder that died without letting go (a power cut, kill -9): the lock
    is taken over, and the console says so once."""
    with contextlib.suppress(OSError):  # a read-only store already exists
        root.mkdir(parents=True, exist_ok=True)
    if inherited is not None:
        fd = inherited
        os.set_inheritable(fd, False)  # the agent must not hold it
    else:
        try:
            fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only store: lock it all the same, write nothing
            log.error("store %s is not writable (%s); locking it read-only", root, exc.strerror)
            fd = os.open(root if not (root / ".lock").exists() else root / ".lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        sys.stderr.write(
            f"boot: store {root} is in use by process {holder or '?'}; "
            "stop that board first (a store serves one board at a time)\n"
        )
        sys.exit(BUSY)
    left = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if left and left not in (str(os.getpid()), str(os.getppid())):
        log.warning(
            "process %s held the store's lock and is gone without releasing it "
            "(a power cut or kill -9); taking it over",
            left,
        )
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except OSError as exc:  # read-only or full: the lock holds without the note of its holder
        log.error("cannot record the lock's holder (%s); booting all the same", exc.strerror)
    return fd


def release_store(fd: int) -> None:
    """Clean stop: empty the lock file (no stale pid for the next ROM) and let go."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)


def _boot_id(store: Store) -> str:
    try:
        return str(store.state().boot_count)
    except (OSError, StoreError):  # a damaged boot state: the boot goes on without its count
        return "0"


class Stopped(Exception):
    """SIGTERM: power off cleanly."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped


def _end(agent: subprocess.Popen[bytes] | None, graceful: bool) -> None:
    """The agent goes when the ROM goes: asked (SIGTERM) on a clean stop, killed otherwise."""
    if agent is None or agent.poll() is not None:
        return
    if graceful:
        agent.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.wait(timeout=5)
            return
    agent.kill()
    agent.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtime.agent.boot")
    parser.add_argument("--store", required=True, type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device path to serve")
    where.add_argument("--fd", type=int, help="an inherited file descriptor to serve")
    parser.add_argument(
        "--parent-pid",
        type=int,
        metavar="PID",
        help="power off when this process (the host that started the board) exits",
    )
    parser.add_argument(
        "--lock-fd", type=int, metavar="N", help="the store's lock, opened and held by the host"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="boot: %(message)s", stream=sys.stderr)
    host = HostWatch(args.parent_pid) if args.parent_pid else None
    if host is not None and host.gone():
        log.warning("host process %d is gone before the board started; powering off", host.pid)
        return 0
    lock = lock_store(args.store, args.lock_fd)
    rom = Rom(args, host)
    signal.signal(signal.SIGTERM, _stop)
    try:
        rom.run()
        log.warning("host process %d is gone; powering off", args.parent_pid)
    except Stopped:
        _end(rom.agent, graceful=True)
    finally:
        _end(rom.agent, graceful=False)
        release_store(lock)
    return 0


class Rom:
    """Boots, serves and restarts the agent until the host is gone (or SIGTERM)."""

    def __init__(self, args: argparse.Namespace, host: HostWatch | None) -> None:
        self.args, self.host = args, host
        self.agent: subprocess.Popen[bytes] | None = None

    def run(self) -> None:
        args, store = self.args, Store(self.args.store)
        factory = str(Path(__file__).resolve().parents[2])
        inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        backoff = Backoff()
        hook = die_with_parent()
        while True:
            slot, trial = choose_slot(store)
            code = str(store.slot_dir(slot)) if slot != "factory" else factory
            if slot != "factory" and not (Path(code) / "runtime").is_dir():
                code = factory
            # the slot's code first, then what the ROM itself was given (the device's
            # dependencies, e.g. /opt/ocula/site on an image) but the factory code
            paths = [code, *(p for p in inherited if p and Path(p).resolve() != Path(factory))]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OCULA_BOOT_SLOT": slot}
            env["OCULA_BOOT_TRIAL"] = "1" if trial else "0"
            env["OCULA_BOOT_ID"] = _boot_id(store)
            cmd = [sys.executable, "-m", "runtime.agent.serve", "--store", str(args.store)]
            cmd += ["--port", args.port] if args.port else ["--fd", str(args.fd)]
            fds = () if args.port else (args.fd,)
            log.info("booting slot %s%s from %s", slot, " (trial)" if trial else "", code)
            started = time.monotonic()
            self.agent = subprocess.Popen(cmd, env=env, cwd=code, pass_fds=fds, preexec_fn=hook)
            rc = wait_agent(self.agent, self.host)
            if rc is None:
                return
            delay = backoff.after(time.monotonic() - started, asked=rc == REBOOT)
            if rc == REBOOT:
                continue
            log.warning("agent in slot %s exited with %s; restarting in %.1f s", slot, rc, delay)
            if not wait_until(time.monotonic() + delay, self.host):
                return


if __name__ == "__main__":
    sys.exit(main())

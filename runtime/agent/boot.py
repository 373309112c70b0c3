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
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from runtime.agent import bootstate
from runtime.agent.bootstate import BootMachine
from runtime.agent.errors import StoreError
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


def lock_store(root: Path) -> int:
    """Hold the store's lock for the life of this process; exit BUSY if another holds it."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        sys.stderr.write(f"boot: store {root} is in use by process {holder or '?'}\n")
        sys.exit(BUSY)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtime.agent.boot")
    parser.add_argument("--store", required=True, type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device path to serve")
    where.add_argument("--fd", type=int, help="an inherited file descriptor to serve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="boot: %(message)s", stream=sys.stderr)
    lock_store(args.store)
    store = Store(args.store)
    factory = str(Path(__file__).resolve().parents[2])
    while True:
        slot, trial = choose_slot(store)
        code = str(store.slot_dir(slot)) if slot != "factory" else factory
        if slot != "factory" and not (Path(code) / "runtime").is_dir():
            code = factory
        env = {**os.environ, "PYTHONPATH": code, "OCULA_BOOT_SLOT": slot}
        env["OCULA_BOOT_TRIAL"] = "1" if trial else "0"
        env["OCULA_BOOT_ID"] = str(store.state().boot_count)
        cmd = [sys.executable, "-m", "runtime.agent.serve", "--store", str(args.store)]
        cmd += ["--port", args.port] if args.port else ["--fd", str(args.fd)]
        fds = () if args.port else (args.fd,)
        log.info("booting slot %s%s from %s", slot, " (trial)" if trial else "", code)
        rc = subprocess.call(cmd, env=env, cwd=code, pass_fds=fds)
        if rc == REBOOT:
            continue
        log.warning("agent in slot %s exited with %s; restarting", slot, rc)
        time.sleep(0.2)  # a crash loop must not spin the CPU


if __name__ == "__main__":
    sys.exit(main())

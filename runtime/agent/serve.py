"""The agent process: boot checks, then the link on a serial port, requests to `service`.

`python -m runtime.agent.serve --store DIR (--port PATH | --fd N)` is started by the boot ROM
with the booted slot's code on PYTHONPATH and the boot facts in the environment
(OCULA_BOOT_SLOT, OCULA_BOOT_TRIAL, OCULA_BOOT_ID). On a trial boot it runs the health check
first: a failure rolls back (state.json) and exits REBOOT, so the ROM boots the previous slot;
a pass serves the link until the host confirms, and rolls back when no confirm arrives before
the deadline. Exit codes: REBOOT (3) asks the ROM for a restart.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from runtime.agent import api
from runtime.agent.bootstate import Event
from runtime.agent.health import InferenceCheck, check_slot
from runtime.agent.service import Agent, BootInfo
from runtime.agent.store import Store
from runtime.profile import load_profile

__all__ = ["REBOOT", "main", "serve", "start_agent"]

REBOOT = 3
log = logging.getLogger(__name__)


def start_agent(
    root: Path,
    slot: str,
    trial: bool,
    boot_id: int = 0,
    inference: InferenceCheck | None = None,
) -> Agent | None:
    """The agent of one boot, or None when its trial slot failed the health check."""
    store = Store(root)
    profile = load_profile(root / "board.toml")
    key_path = root / "trusted.pub"
    key = key_path.read_bytes() if key_path.is_file() else None
    code = str(Path(__file__).resolve().parents[2])
    boot = BootInfo(slot=slot, trial=trial, boot_id=boot_id, code_path=code)
    agent = Agent(store, profile, key, boot)
    staged, state = store.staged(), store.state()
    active = store.slot_manifest(state.active) if state.active else None
    if staged and active and staged.digest == active.digest and state.trial is None:
        store.clear_staging()  # a confirm cut short before it cleaned up
    if trial:
        boot.health = check_slot(store, slot, inference)
        if not boot.health["ok"]:
            agent.rollback(f"health check failed: {boot.health['reason']}")
            return None
    return agent


def _open(port: str | None, fd: int | None) -> int:
    if fd is not None:
        return fd
    assert port is not None
    import termios
    import tty

    handle = os.open(port, os.O_RDWR | os.O_NOCTTY)
    with contextlib.suppress(termios.error):  # not a tty (a pipe or socket): nothing to set
        tty.setraw(handle)
    return handle


def serve(agent: Agent, fd: int) -> int:
    """Serve requests on `fd` until a reboot is asked for or the trial deadline passes."""
    endpoint = api.endpoint(fd)
    agent.link_stats = endpoint.stats
    state = agent.store.state()
    deadline = time.monotonic() + state.deadline_s if agent.boot.trial else None
    while True:
        payload = endpoint.recv(timeout=0.25)
        if payload is not None:
            endpoint.send(api.handle_payload(agent.handle, payload))
            if agent.reboot_requested:
                endpoint.flush(timeout=2.0)
                return REBOOT
        if deadline is not None and agent.boot.trial and time.monotonic() > deadline:
            reason = f"not confirmed by the host within {state.deadline_s:.0f} s"
            agent.rollback(reason, Event.DEADLINE)
            return REBOOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtime.agent.serve")
    parser.add_argument("--store", required=True, type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port")
    where.add_argument("--fd", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="agent: %(message)s", stream=sys.stderr)
    slot = os.environ.get("OCULA_BOOT_SLOT", "factory")
    trial = os.environ.get("OCULA_BOOT_TRIAL") == "1"
    boot_id = int(os.environ.get("OCULA_BOOT_ID", "0"))
    agent = start_agent(args.store, slot, trial, boot_id)
    if agent is None:
        return REBOOT
    log.info("serving board %s from slot %s%s", agent.profile.name, slot, " (trial)" * trial)
    return serve(agent, _open(args.port, args.fd))


if __name__ == "__main__":
    sys.exit(main())

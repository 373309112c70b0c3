"""Lifelines of the boot ROM: it dies with the host that started it, and takes its agent along.

A simulated board is a process tree on a host (host command -> boot ROM -> agent); a real board's
ROM has no host. The rules:
- The host watch is armed only when asked (`--parent-pid PID`). It holds a pidfd of the host
  (`os.pidfd_open`, Linux >= 5.3), which becomes readable when the host exits, whatever killed
  it; the ROM is the host's child, so a host that died before the pidfd was opened shows as
  `os.getppid() != PID`, checked once the pidfd is held. Without pidfds (an older kernel) the
  ROM checks its parent at every wake of a 0.5 s tick.
- The agent dies with the ROM: the hook `die_with_parent()` (run in the agent's child between
  fork and exec) arms PR_SET_PDEATHSIG(SIGKILL). That signal fires when the *thread* that forked the
  child exits; the ROM is single-threaded, so that thread is the ROM itself.
- Every wait is one `select` on pidfds with a deadline: an agent's exit, the host's death and
  the end of a restart delay all wake it at once; nothing sleeps blindly.
- `Backoff` spaces the restarts of an agent that keeps crashing: FIRST, doubling up to MOST,
  back to FIRST after a reboot the agent asked for or a run of at least STABLE_S.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "HostWatch", "die_with_parent", "wait_agent", "wait_until"]

PR_SET_PDEATHSIG = 1
TICK_S = 0.5  # how often a ROM without pidfds looks at its parent and its agent


def _pidfd(pid: int) -> int | None:
    """A pidfd of `pid`, or None where the kernel has none (or the process is gone)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


class HostWatch:
    """The host process this ROM must not outlive; `fd` is readable once it is gone."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = _pidfd(pid)

    def gone(self) -> bool:
        if os.getppid() != self.pid:  # reparented: the host has exited
            return True
        if self.fd is None:
            return False
        ready, _, _ = select.select([self.fd], [], [], 0)
        return bool(ready)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def die_with_parent() -> Callable[[], None]:
    """A hook for `Popen(preexec_fn=...)`: between fork and exec it arms PR_SET_PDEATHSIG
    (SIGKILL) in the child, and exits the child if its parent died before that. libc is looked
    up here, in the parent, so the child only makes the call."""
    parent = os.getpid()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the ROM's own exit path still ends it
        prctl = None

    def hook() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _select(fds: list[int], deadline: float | None, tick: bool) -> list[int]:
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    if tick:
        timeout = TICK_S if timeout is None else min(timeout, TICK_S)
    ready, _, _ = select.select(fds, [], [], timeout)
    return list(ready)


def wait_until(deadline: float, host: HostWatch | None) -> bool:
    """Wait for `deadline`; False at once if the host dies first."""
    fds = [host.fd] if host is not None and host.fd is not None else []
    tick = host is not None and host.fd is None
    while True:
        if host is not None and host.gone():
            return False
        if time.monotonic() >= deadline:
            return True
        _select(fds, deadline, tick)


def wait_agent(agent: subprocess.Popen[bytes], host: HostWatch | None) -> int | None:
    """The agent's exit code, or None when the host died first (the agent still runs then)."""
    agent_fd = _pidfd(agent.pid)  # our unreaped child: its pid cannot be reused meanwhile
    fds = [fd for fd in (agent_fd, host.fd if host else None) if fd is not None]
    tick = agent_fd is None or (host is not None and host.fd is None)
    try:
        while True:
            if host is not None and host.gone():
                return None
            code = agent.poll()
            if code is not None:
                return code
            _select(fds, None, tick)
    finally:
        if agent_fd is not None:
            os.close(agent_fd)


@dataclass
class Backoff:
    """Delays between restarts of a crashing agent: bounded, and reset by a healthy run."""

    FIRST = 0.2
    MOST = 10.0
    STABLE_S = 60.0
    delay: float = FIRST

    def after(self, ran_s: float, asked: bool) -> float:
        """The delay before the next start, given how long the last run lasted and whether
        the agent asked for the restart itself."""
        if asked:
            self.delay = self.FIRST
            return 0.0
        if ran_s >= self.STABLE_S:
            self.delay = self.FIRST
        now = self.delay
        self.delay = min(self.MOST, self.delay * 2)
        return now

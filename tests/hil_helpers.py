"""Shared set-up for the HIL tests: another process that holds a port or a board."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def held_elsewhere(take: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Runs `take` (Python that takes hold of something, then prints one line) in another
    process, which holds on until its stdin closes or it is killed. Yields the process once
    it has printed, and the line; kills it on the way out if it still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{take}\nimport sys; sys.stdin.read()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

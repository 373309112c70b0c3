"""Shared test helpers: run the real `ocula` command as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_ocula(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> Result:
    """Run the installed `ocula` console script and capture what a user would see."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [str(BIN / "ocula"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def ocula():
    return run_ocula


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    """A raw pseudo-terminal pair (host end, device end): the serial line of a test."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    yield master, slave
    os.close(master)
    os.close(slave)

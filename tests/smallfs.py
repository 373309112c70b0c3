"""A small filesystem for full-disk tests: a tmpfs of a given size, mounted in a test's tmp dir.

Mounting needs root (CAP_SYS_ADMIN); without it the test fails and says so. `fill` takes all the
free space but `leave` bytes with one file, so a test can make a disk full at a chosen moment.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_fs(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes at where/smallfs, unmounted when the block ends."""
    if os.geteuid() != 0:
        pytest.fail(
            "full-disk tests mount a small tmpfs and need root: run the tests as root "
            "(or in a container with CAP_SYS_ADMIN)"
        )
    mnt = where / "smallfs"
    mnt.mkdir(parents=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        pytest.fail(f"cannot mount a tmpfs at {mnt}: {proc.stderr.strip()} (needs root)")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(mnt: Path, leave: int = 0, name: str = "filler") -> Path:
    """Take the free space of the filesystem at `mnt` but `leave` bytes, with one file."""
    path = mnt / name
    block = b"\xa5" * 65536
    # unbuffered: a buffered file keeps the last partial block and its close() raises ENOSPC again
    with open(path, "ab", buffering=0) as fh:
        try:
            while fh.write(block):
                pass
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    size = path.stat().st_size
    if leave:
        os.truncate(path, max(0, size - leave))
    return path


def remount(mnt: Path, mode: str) -> None:
    """Remount `mnt` with `mode`: "ro", "rw" or "size=N" (a tmpfs grows or shrinks)."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True, capture_output=True)

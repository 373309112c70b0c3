"""Atomic output folders: build into a temporary folder beside DIR, rename at the end.

An interrupted or failed export leaves DIR as it was. An existing DIR is replaced only when it
is an Ocula artifact (has manifest.json), an Ocula random model (has .ocula-random), is empty,
or `force` is given; anything else is refused, so a typo cannot wipe a folder of photos.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from export.errors import ExportError
from runtime.manifest import MANIFEST_NAME

MARKERS = (MANIFEST_NAME, ".ocula-random")


def check_target(out: Path, force: bool) -> None:
    """Refuse early (before minutes of work) if `out` cannot be replaced."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is a file; choose a folder path")
    ours = any((out / m).exists() for m in MARKERS)
    if out.is_dir() and not force and not ours and any(out.iterdir()):
        raise ExportError(
            f"--out {out}: folder exists and is not an Ocula artifact; choose another "
            "path or pass --force to replace it"
        )
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"--out {out}: cannot create {parent}: {e.strerror}") from e
    if not os.access(parent, os.W_OK):
        raise ExportError(f"--out {out}: cannot write in {parent}")


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`."""
    check_target(out, force)
    parent = out.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        os.replace(out, old / "x")
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old / "x", out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

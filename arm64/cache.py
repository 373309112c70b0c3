"""Cached build folders: named by a hash of their inputs, built aside, renamed into place.

A folder `NAME-KEY` under the cache exists only if its build finished: `build_once` builds into
`.tmp-NAME-KEY-XXXX` and renames it at the end. Leftover temporary folders of a run that died
are removed on the next run and never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def key_of(inputs: object) -> str:
    """A short stable hash of JSON-serialisable build inputs."""
    text = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_once(
    cache: Path, name: str, key: str, build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """Return (folder, reused): the cached `NAME-KEY` folder, built by `build(tmp)` if absent."""
    final = cache / f"{name}-{key}"
    if final.is_dir():
        return final, True
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f".tmp-{name}-*"):
        log.info("removing the unfinished build %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-{key}-", dir=cache))
    try:
        build(tmp)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in cache.glob(f"{name}-*"):
        if old != final and old.is_dir():
            log.info("removing the outdated %s", old)
            shutil.rmtree(old, ignore_errors=True)
    return final, False

"""Output files written whole or not at all.

`write_bytes(path, data)` writes a temporary beside `path` (same folder, so the rename is atomic),
flushes it to disk and renames it onto `path`. On any failure, Ctrl-C included, the temporary is
removed and `path` keeps what it held; an OSError comes back as an OculaError naming `path`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from runtime.errors import OculaError


def write_bytes(path: Path, data: bytes, what: str = "file") -> Path:
    """Write `data` to `path` atomically; make its folder if needed. Returns `path`."""
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = ""
    except OSError as exc:
        raise OculaError(f"{path}: cannot write the {what}: {exc.strerror or exc}") from exc
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path

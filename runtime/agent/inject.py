"""Clips a host injects as the board's microphone or camera for one `run` (HIL rigs, `ocula run
--audio WAV` / `--camera IMAGE` with a board port).

A rig cannot speak into a board's microphone or hold a sign before its camera repeatably, so it
sends a WAV clip or an image in parts (`inject` requests: sha256 of the whole clip, its size,
the part's offset) and then names the clip by its sha256 in the `run` request (`audio`,
`camera`). Parts land in `inject/<sha256>.part` in order; a part at the wrong offset is not
written and the reply says where to resume; the finished file is renamed to
`inject/<sha256>.clip` only when its hash matches, so a half-sent or corrupted clip is never
used. Clips are kept (a re-run of the same clip sends nothing: the first request says it is
complete); only the newest `KEEP` are kept. What a clip holds is checked by the device that
reads it (the WAV reader, the image decoder), which names what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from runtime.agent.errors import RequestError

__all__ = ["MAX_CLIP_BYTES", "Clips"]

MAX_CLIP_BYTES = 32 * 1024 * 1024  # 17 minutes of 16 kHz mono 16-bit audio
KEEP = 8
_HEX = re.compile(r"[0-9a-f]{64}")


class Clips:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, digest: str, size: int, offset: int, data: bytes) -> int:
        """Store one part; returns the bytes of the clip held so far (== size when complete)."""
        _check_digest(digest)
        if not 0 < size <= MAX_CLIP_BYTES:
            raise RequestError(f"clip size must be from 1 to {MAX_CLIP_BYTES} bytes")
        if self.path(digest) is not None:
            return size
        self.root.mkdir(parents=True, exist_ok=True)
        part = self.root / f"{digest}.part"
        held = part.stat().st_size if part.is_file() else 0
        if offset != held or (not data and offset < size):
            return held  # the caller resumes from here
        if offset + len(data) > size:
            part.unlink(missing_ok=True)
            raise RequestError(f"clip {digest[:12]}: more than its {size} bytes; send it again")
        with open(part, "ab") as fh:
            fh.write(data)
        held += len(data)
        if held == size:
            self._finish(digest, part)
        return held

    def path(self, digest: str) -> Path | None:
        """The complete clip with this sha256, or None."""
        _check_digest(digest)
        path = self.root / f"{digest}.clip"
        return path if path.is_file() else None

    def _finish(self, digest: str, part: Path) -> None:
        h = hashlib.sha256()
        with open(part, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != digest:
            part.unlink(missing_ok=True)
            raise RequestError(
                f"clip {digest[:12]}: its bytes hash to {h.hexdigest()[:12]}; send it again"
            )
        os.replace(part, self.root / f"{digest}.clip")
        clips = sorted(self.root.glob("*.clip"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in clips[KEEP:]:
            old.unlink(missing_ok=True)


def _check_digest(digest: str) -> None:
    if not _HEX.fullmatch(digest):
        raise RequestError("field 'sha256' must be 64 lowercase hex digits")

"""Send a WAV clip to a board's agent (`inject` requests), which plays it as its microphone in
the next `run` (see runtime.agent.inject): how rigs and `ocula run --audio` give a board real,
repeatable speech."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from runtime.agent.service import PART
from runtime.errors import OculaError, UsageError

__all__ = ["inject_clip"]


def inject_clip(client: Any, wav: Path, where: str) -> str:
    """Send `wav` in parts over `client` (a board.flash.LinkClient); returns its sha256, which
    the `run` request names as `audio`. A clip the board already holds is not sent again."""
    try:
        data = wav.read_bytes()
    except OSError as exc:
        raise UsageError(f"audio clip {wav}: cannot read it ({exc.strerror})") from exc
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise UsageError(f"audio clip {wav}: not a WAV file (a board takes a WAV clip to play)")
    digest = hashlib.sha256(data).hexdigest()
    offset = 0
    while True:
        r, _ = client.call(
            "inject",
            {"sha256": digest, "size": len(data), "offset": offset},
            data[offset : offset + PART],
        )
        if not r.get("ok"):
            raise OculaError(f"{where} refused the audio clip {wav}: {r.get('error')}")
        if r["complete"]:
            return digest
        offset = int(r["held"])

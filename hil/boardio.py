"""Files to and from a board's agent around a `run`: a WAV clip or an image sent with `inject`
requests, which the board uses as its microphone or camera in the next `run` (see
runtime.agent.inject; how rigs and `ocula run --audio/--camera` give a board real, repeatable
speech and scenes), and the run's trace read back with `trace` requests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from runtime.agent.api import PART
from runtime.errors import OculaError, UsageError

__all__ = ["fetch_trace", "inject_clip"]


def inject_clip(client: Any, path: Path, where: str, device: str = "audio") -> str:
    """Send `path` (a WAV for the "audio" device, a PNG or PPM image for the "camera") in parts
    over `client` (a board.client.Board); returns its sha256, which the `run` request names
    as `audio` or `camera`. A clip the board already holds is not sent again."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{device} clip {path}: cannot read it ({exc.strerror})") from exc
    if device == "audio" and (data[:4] != b"RIFF" or data[8:12] != b"WAVE"):
        raise UsageError(f"audio clip {path}: not a WAV file (a board takes a WAV clip to play)")
    if device == "camera" and data[:8] != b"\x89PNG\r\n\x1a\n" and data[:2] not in (b"P5", b"P6"):
        raise UsageError(
            f"camera image {path}: not a PNG or PPM/PGM image (what a board's camera stand-in reads)"
        )
    digest = hashlib.sha256(data).hexdigest()
    offset = 0
    while True:
        r, _ = client.call(
            "inject",
            {"sha256": digest, "size": len(data), "offset": offset},
            data[offset : offset + PART],
        )
        if not r.get("ok"):
            raise OculaError(f"{where} refused the {device} clip {path}: {r.get('error')}")
        if r["complete"]:
            return digest
        offset = int(r["held"])


def fetch_trace(client: Any, name: str, where: str) -> bytes:
    """The board's trace file `name` (as a `run` reply names it), read in parts."""
    data, offset = bytearray(), 0
    while True:
        r, blob = client.call("trace", {"name": name, "offset": offset})
        if not r.get("ok"):
            raise OculaError(f"{where} has no trace {name!r}: {r.get('error')}")
        data += blob
        offset += len(blob)
        if not blob or offset >= r["size"]:
            return bytes(data)

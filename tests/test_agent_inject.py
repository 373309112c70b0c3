"""Injected audio clips on the board: parts in order, resumable, never played unless whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from runtime.agent.errors import RequestError
from runtime.agent.inject import Clips

CLIP = (Path(__file__).parent / "data" / "speech_short.wav").read_bytes()
DIGEST = hashlib.sha256(CLIP).hexdigest()


def test_parts_resume_and_the_clip_appears_only_when_whole(tmp_path: Path) -> None:
    clips = Clips(tmp_path)
    assert clips.put(DIGEST, len(CLIP), 0, CLIP[:1000]) == 1000
    assert clips.path(DIGEST) is None
    # a part at the wrong offset (a lost reply, a resend) is not written: the reply says where
    assert clips.put(DIGEST, len(CLIP), 5000, CLIP[5000:6000]) == 1000
    assert clips.put(DIGEST, len(CLIP), 0, CLIP[:1000]) == 1000
    assert clips.put(DIGEST, len(CLIP), 1000, CLIP[1000:]) == len(CLIP)
    path = clips.path(DIGEST)
    assert path is not None and path.read_bytes() == CLIP
    # the board holds it: a second send is answered as complete at once
    assert clips.put(DIGEST, len(CLIP), 0, b"") == len(CLIP)


def test_a_corrupted_clip_is_refused_and_forgotten(tmp_path: Path) -> None:
    clips = Clips(tmp_path)
    bad = bytearray(CLIP)
    bad[len(bad) // 2] ^= 0x40
    with pytest.raises(RequestError, match=r"hash to .*send it again"):
        clips.put(DIGEST, len(CLIP), 0, bytes(bad))
    assert clips.path(DIGEST) is None and not list(tmp_path.iterdir())
    with pytest.raises(RequestError, match="more than its 10 bytes"):
        clips.put(DIGEST, 10, 0, CLIP[:11])
    with pytest.raises(RequestError, match="64 lowercase hex"):
        clips.put("../../etc/passwd", 10, 0, b"x")
    with pytest.raises(RequestError, match="clip size"):
        clips.put(DIGEST, 0, 0, b"")

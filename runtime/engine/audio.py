"""Audio in: WAV files and sample buffers checked before they reach a model.

`read_wav` decodes RIFF/WAVE files with its own chunk parser (`parse_wav`): integer PCM of 8,
16, 24 and 32 bits and IEEE float of 32 and 64 bits, plain or WAVE_FORMAT_EXTENSIBLE; it mixes
channels down to mono and resamples to the rate the model wants, logging each conversion.
`check_audio` is the gate every engine calls on a buffer: one channel, float, finite, not empty,
at the model's rate; anything else is an `InputError` that says what was wrong and what to do.

A header is never trusted: the file's size, the channel count, the sample rate, the sample
format, the number of chunks and the duration are checked against the limits below before a
sample is decoded, and the samples read are the bytes the file really holds (a truncated file
plays what is there; a header that promises more is not allocated for). So a 64 kB file that
claims 8 GB of samples, zero channels or a rate of 0 Hz is an `InputError` naming the limit.

Resampling is band-limited (FFT-based, whole buffer): exact for offline files, not meant for
streaming; a live microphone is opened at the model's rate instead.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from runtime.engine.errors import InputError

__all__ = [
    "MAX_CHANNELS",
    "MAX_RATE",
    "MAX_SECONDS",
    "MAX_WAV_BYTES",
    "MIN_RATE",
    "WavHeader",
    "check_audio",
    "decode_wav",
    "parse_wav",
    "read_wav",
    "resample",
    "wav_samples",
]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

MAX_WAV_BYTES = 512 * 1024 * 1024  # the file
MIN_RATE, MAX_RATE = 4_000, 384_000  # Hz; resampling to 16 kHz grows a file at most 4x
MAX_CHANNELS = 32
MAX_SECONDS = 3 * 3600  # of audio, at the file's rate
MAX_CHUNKS = 1024  # RIFF chunks walked before the data chunk
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_BITS = {_PCM: (8, 16, 24, 32), _FLOAT: (32, 64)}


@dataclass(frozen=True)
class WavHeader:
    """What a WAV file's header says, checked against the limits; `present` is the bytes of
    sample data the file really holds (at most `declared`)."""

    fmt: int  # 1 integer PCM, 3 IEEE float
    channels: int
    rate: int
    bits: int
    offset: int  # of the first sample byte
    declared: int  # data bytes the header promises
    present: int  # data bytes the file holds

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8

    @property
    def frames(self) -> int:
        return self.present // self.frame_bytes

    @property
    def promised_frames(self) -> int:
        return self.declared // self.frame_bytes


def convert_hint(rate: int) -> str:
    return f"convert it with 'sox IN -r {rate} -c 1 -b 16 OUT.wav'"


def read_wav(path: str | Path, rate: int) -> F32:
    """Samples of `path` as mono float32 in [-1, 1] at `rate` Hz."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_WAV_BYTES:
            raise InputError(
                f"{path}: {size} bytes is more than a WAV file may hold here "
                f"(MAX_WAV_BYTES, {MAX_WAV_BYTES >> 20} MiB); split it, e.g. "
                f"'sox IN OUT.wav trim 0 600 : newfile : restart'"
            )
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: audio file not found") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read the audio file ({exc.strerror or exc})") from exc
    return wav_samples(data, str(path), rate)


def wav_samples(data: bytes, where: str, rate: int) -> F32:
    """`read_wav` on bytes already read: mono float32 at `rate` Hz."""
    samples, file_rate = decode_wav(data, where, rate)
    if samples.shape[1] > 1:
        log.info("%s: %d channels mixed down to mono", where, samples.shape[1])
    mono = samples.mean(axis=1, dtype=np.float32)
    del samples
    if file_rate != rate:
        log.info("%s: resampled from %d Hz to %d Hz", where, file_rate, rate)
        mono = resample(mono, file_rate, rate)
    return check_audio(mono, rate, rate, where=where)


def parse_wav(data: bytes, where: str = "<wav>", rate: int = 16000) -> WavHeader:
    """The checked header of WAV bytes; `InputError` naming the limit a file breaks (`rate` is
    the one the caller wants, for the conversion hint)."""
    fix = convert_hint(rate)
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InputError(f"{where}: not a readable PCM WAV file (no RIFF/WAVE header); {fix}")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    for _ in range(MAX_CHUNKS):
        if pos + 8 > len(data):
            break
        cid = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if cid == b"fmt ":
            fmt = _fmt(data[body : body + size], where, fix)
        elif cid == b"data":
            if fmt is None:
                raise InputError(
                    f"{where}: not a readable PCM WAV file (data before 'fmt '); {fix}"
                )
            tag, channels, file_rate, bits = fmt
            present = min(size, len(data) - body)
            head = WavHeader(tag, channels, file_rate, bits, body, size, present)
            seconds = head.frames / file_rate
            if seconds > MAX_SECONDS:
                raise InputError(
                    f"{where}: {seconds:.0f} s of audio is longer than the reader takes "
                    f"(MAX_SECONDS, {MAX_SECONDS} s); cut it, e.g. 'sox IN OUT.wav trim 0 3600'"
                )
            return head
        pos = body + size + (size & 1)
    else:
        raise InputError(
            f"{where}: not a readable PCM WAV file (more than MAX_CHUNKS, {MAX_CHUNKS}, chunks "
            f"before the data); {fix}"
        )
    raise InputError(f"{where}: not a readable PCM WAV file (no 'data' chunk); {fix}")


def _fmt(body: bytes, where: str, fix: str) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise InputError(f"{where}: not a readable PCM WAV file ('fmt ' chunk cut short); {fix}")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE:
        if len(body) < 26:
            raise InputError(f"{where}: not a readable PCM WAV file (extensible 'fmt ' cut); {fix}")
        (tag,) = struct.unpack_from("<H", body, 24)  # the sub-format GUID's first two bytes
    if tag not in _BITS or bits not in _BITS[tag]:
        kind = {_PCM: "integer PCM", _FLOAT: "float"}.get(tag, f"format tag {tag:#x}")
        raise InputError(
            f"{where}: {kind} with {bits}-bit samples is not supported (8/16/24/32-bit PCM or "
            f"32/64-bit float); {fix}"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise InputError(
            f"{where}: {channels} channels; a WAV file here has 1 to {MAX_CHANNELS} "
            f"(MAX_CHANNELS); {fix}"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(
            f"{where}: sample rate {rate} Hz is outside {MIN_RATE} to {MAX_RATE} Hz "
            f"(MIN_RATE, MAX_RATE); {fix}"
        )
    return tag, channels, rate, bits


def decode_wav(data: bytes, where: str = "<wav>", rate: int = 16000) -> tuple[F32, int]:
    """(frames, channels) float32 in [-1, 1] and the file's rate, from WAV bytes."""
    h = parse_wav(data, where, rate)
    n = h.frames * h.channels
    raw = memoryview(data)[h.offset : h.offset + n * h.bits // 8]
    if h.fmt == _FLOAT:
        v = np.frombuffer(raw, dtype="<f4" if h.bits == 32 else "<f8")
        if v.size and not (np.isfinite(v).all() and np.abs(v).max() < 1e30):
            raise InputError(f"{where}: float samples that are NaN, infinite or absurd; corrupt")
        x = v.astype(np.float32)
    elif h.bits == 8:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif h.bits == 24:
        b = np.zeros((n, 4), dtype=np.uint8)
        b[:, 1:] = np.frombuffer(raw, dtype=np.uint8).reshape(n, 3)
        x = (b.view("<i4").reshape(n) >> 8).astype(np.float32) / float(1 << 23)
    else:
        ints = np.frombuffer(raw, dtype="<i2" if h.bits == 16 else "<i4")
        x = ints.astype(np.float32) / float(1 << (h.bits - 1))
    return x.reshape(h.frames, h.channels), h.rate


def resample(x: F32, src: int, dst: int) -> F32:
    """Band-limited resampling of a whole buffer (FFT method)."""
    if src == dst or x.size == 0:
        return x.astype(np.float32)
    n_out = round(x.size * dst / src)
    if n_out == 0:  # a few samples at a much higher rate
        return np.zeros(0, dtype=np.float32)
    spec = np.fft.rfft(x.astype(np.float64))
    keep = min(spec.size, n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    out_spec[:keep] = spec[:keep]
    del spec
    y = np.fft.irfft(out_spec, n_out) * (n_out / x.size)
    return y.astype(np.float32)


def check_audio(audio: object, rate: int, expected_rate: int, where: str = "audio") -> F32:
    """Return `audio` as a contiguous float32 mono buffer, or say clearly why it cannot be used."""
    if rate != expected_rate:
        raise InputError(
            f"{where}: sample rate {rate} Hz, but the model takes {expected_rate} Hz; "
            f"resample it first (runtime.engine.audio.resample or "
            f"'sox IN -r {expected_rate} OUT.wav')"
        )
    arr = np.asarray(audio)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(
            f"{where}: expected one channel of samples (a 1-D array), got shape {arr.shape}; "
            "mix the channels down first"
        )
    if arr.size == 0:
        raise InputError(f"{where}: the audio is empty (0 samples)")
    if arr.dtype.kind == "i":
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
    elif arr.dtype.kind != "f":
        raise InputError(f"{where}: samples of type {arr.dtype}; expected float or int PCM")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{where}: {bad} samples are NaN or infinite; the audio is corrupt")
    return arr

"""Audio in: WAV files and sample buffers checked before they reach a model.

`read_wav` decodes PCM WAV with the stdlib `wave` module (8/16/24/32-bit integer PCM; 32-bit
float WAV is read by a small chunk parser), mixes channels down to mono and resamples to the
rate the model wants, logging each conversion. `check_audio` is the gate every engine calls
on a buffer: one channel, float, finite, not empty, at the model's rate; anything else is an
`InputError` that says what was wrong and what to do.

Resampling is band-limited (FFT-based, whole buffer): exact for offline files, not meant for
streaming; a live microphone is opened at the model's rate instead.
"""

from __future__ import annotations

import logging
import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from runtime.engine.errors import InputError

__all__ = ["check_audio", "read_wav", "resample"]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


def read_wav(path: str | Path, rate: int) -> F32:
    """Samples of `path` as mono float32 in [-1, 1] at `rate` Hz."""
    path = Path(path)
    try:
        samples, file_rate = _decode(path)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: audio file not found") from exc
    except (wave.Error, EOFError, struct.error, ValueError) as exc:
        raise InputError(
            f"{path}: not a readable PCM WAV file ({exc}); convert it with "
            f"'sox IN -r {rate} -c 1 -b 16 OUT.wav'"
        ) from exc
    if samples.shape[1] > 1:
        log.info("%s: %d channels mixed down to mono", path, samples.shape[1])
    mono = samples.mean(axis=1).astype(np.float32)
    if file_rate != rate:
        log.info("%s: resampled from %d Hz to %d Hz", path, file_rate, rate)
        mono = resample(mono, file_rate, rate)
    return check_audio(mono, rate, rate, where=str(path))


def _decode(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("no RIFF/WAVE header")
    fmt_tag = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"fmt ":
            fmt_tag, channels, rate = struct.unpack("<HHI", data[pos + 8 : pos + 16])
            bits = struct.unpack("<H", data[pos + 22 : pos + 24])[0]
        elif cid == b"data" and fmt_tag == 3 and bits == 32:
            raw = np.frombuffer(data[pos + 8 : pos + 8 + size], dtype="<f4")
            frames = raw[: raw.size - raw.size % channels].reshape(-1, channels)
            return frames.astype(np.float32), rate
        pos += 8 + size + (size & 1)
    with wave.open(str(path), "rb") as w:
        channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw_bytes = w.readframes(w.getnframes())
    if width == 1:
        ints = np.frombuffer(raw_bytes, dtype=np.uint8).astype(np.float32) - 128.0
        scale = 128.0
    elif width == 2:
        ints = np.frombuffer(raw_bytes, dtype="<i2").astype(np.float32)
        scale = 32768.0
    elif width == 3:
        b = np.frombuffer(raw_bytes, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float32)
        scale = float(1 << 23)
    elif width == 4:
        ints = np.frombuffer(raw_bytes, dtype="<i4").astype(np.float32)
        scale = float(1 << 31)
    else:
        raise ValueError(f"{8 * width}-bit samples")
    usable = ints.size - ints.size % channels
    return (ints[:usable] / scale).reshape(-1, channels).astype(np.float32), rate


def resample(x: F32, src: int, dst: int) -> F32:
    """Band-limited resampling of a whole buffer (FFT method)."""
    if src == dst or x.size == 0:
        return x.astype(np.float32)
    n_out = round(x.size * dst / src)
    spec = np.fft.rfft(x.astype(np.float64))
    keep = min(spec.size, n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    out_spec[:keep] = spec[:keep]
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

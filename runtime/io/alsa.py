"""ALSA capture and playback on Linux boards, through libasound.so.2 with ctypes (no vendor module).

Every Linux board with sound has libasound2; a Python binding for it does not exist everywhere
(Debian bookworm's python3-alsaaudio 0.8.4 lacks `rate=` and fails to read on Python 3.11, and
PyPI has no aarch64 wheel), so this module binds the handful of libasound calls it needs itself.

`AlsaSource` opens a PCM for capture, non-blocking, at the profile's rate and channel count,
16-bit little endian, through `snd_pcm_set_params` (ALSA resamples or converts when the hardware
cannot do it natively); `read` drains every frame the kernel has ready, at most one buffer per
call. An overrun (-EPIPE: the kernel buffer filled because the real-time loop did not run in
time, which the loop's own late-tick counter explains) is counted in `overruns` and recovered.

`LoopbackMicrophone` hears an injected clip through the real capture path: a thread plays the
clip into a loopback's playback side (snd-aloop's `hw:Loopback,0,0` on an emulated board, a
cable on a rig) with blocking writes, paced by ALSA itself, while an `AlsaSource` captures the
other side. Underruns (-EPIPE on write) are counted in `underruns` and recovered.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import threading

import numpy as np
import numpy.typing as npt

from runtime.io.errors import DeviceError, DeviceLost

__all__ = ["AlsaSource", "LoopbackMicrophone"]

log = logging.getLogger(__name__)

# From alsa/pcm.h.
_STREAM_PLAYBACK = 0
_STREAM_CAPTURE = 1
_NONBLOCK = 1
_FORMAT_S16_LE = 2
_ACCESS_RW_INTERLEAVED = 3
_SOFT_RESAMPLE = 1
# Errors that mean the device is gone (unplugged, driver unloaded, PCM in a state it cannot leave).
_LOST = (errno.ENODEV, errno.EIO, errno.EBADFD)
# snd_pcm_set_params makes the buffer four periods: the latency asked for is 4 x period_ms.
_PERIODS = 4
# Recoveries in a row (one read, one write) before a device that keeps failing counts as lost.
_MAX_XRUNS = 8

# void (*snd_lib_error_handler_t)(const char *file, int line, const char *function, int err,
# const char *fmt, ...): the variadic tail is ignored (its fixed arguments are passed alike).
_ERROR_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)


def _log_alsa(file: bytes, line: int, function: bytes, err: int, fmt: bytes) -> None:
    """libasound's own diagnostics go to the log, not stderr: the DeviceError says it in a line."""
    log.debug(
        "libasound %s: %s (%d)",
        (function or b"?").decode(errors="replace"),
        (fmt or b"").decode(errors="replace"),
        err,
    )


_QUIET = _ERROR_HANDLER(_log_alsa)  # kept here: libasound holds the pointer for good


@functools.cache
def _libasound() -> ctypes.CDLL:
    """libasound.so.2 with every function this module calls declared (argtypes and restype)."""
    try:
        lib = ctypes.CDLL("libasound.so.2")
    except OSError:
        name = ctypes.util.find_library("asound")  # another soname, or a path ld.so.cache knows
        try:
            lib = ctypes.CDLL(name or "libasound.so.2")
        except OSError as exc:
            raise DeviceError("ALSA needs libasound2 on the board: apt install libasound2") from exc
    pcm, pcm_p, c_int, c_uint = (
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_uint,
    )
    frames, uframes_p = ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong)
    signatures: dict[str, tuple[list[type], type | None]] = {
        "snd_pcm_open": ([pcm_p, ctypes.c_char_p, c_int, c_int], c_int),
        "snd_pcm_set_params": ([pcm, c_int, c_int, c_uint, c_uint, c_int, c_uint], c_int),
        "snd_pcm_get_params": ([pcm, uframes_p, uframes_p], c_int),
        "snd_pcm_readi": ([pcm, ctypes.c_void_p, frames], ctypes.c_long),
        "snd_pcm_writei": ([pcm, ctypes.c_void_p, frames], ctypes.c_long),
        "snd_pcm_recover": ([pcm, c_int, c_int], c_int),
        "snd_pcm_start": ([pcm], c_int),
        "snd_pcm_drain": ([pcm], c_int),
        "snd_pcm_close": ([pcm], c_int),
        "snd_strerror": ([c_int], ctypes.c_char_p),
        "snd_lib_error_set_handler": ([_ERROR_HANDLER], c_int),
    }
    for fn, (argtypes, restype) in signatures.items():
        f = getattr(lib, fn)
        f.argtypes = argtypes
        f.restype = restype
    lib.snd_lib_error_set_handler(_QUIET)
    return lib


def _strerror(lib: ctypes.CDLL, err: int) -> str:
    text: bytes | None = lib.snd_strerror(err)
    return text.decode(errors="replace") if text else f"error {err}"


class _Pcm:
    """One open PCM: S16_LE, interleaved, `channels` at `rate`; its buffer and period in frames."""

    def __init__(
        self, device: str, capture: bool, rate: int, channels: int, period_ms: int
    ) -> None:
        if rate <= 0 or channels <= 0 or period_ms <= 0:
            raise DeviceError(
                f"ALSA device {device!r}: rate {rate} Hz, {channels} ch, period {period_ms} ms: "
                "each must be positive (fix the board profile's audio section)"
            )
        lib = _libasound()
        self.lib = lib
        self.device = device
        self.channels = channels
        self._closed = False
        handle = ctypes.c_void_p()
        stream, mode = (_STREAM_CAPTURE, _NONBLOCK) if capture else (_STREAM_PLAYBACK, 0)
        err = lib.snd_pcm_open(ctypes.byref(handle), device.encode(), stream, mode)
        what, lister = ("capture", "arecord -L") if capture else ("playback", "aplay -L")
        if err < 0 or not handle.value:
            raise DeviceError(
                f"ALSA device {device!r}: cannot open for {what} ({_strerror(lib, err)}); "
                f"list devices with '{lister}'"
            )
        self.handle = handle
        latency_us = period_ms * _PERIODS * 1000
        err = lib.snd_pcm_set_params(
            handle,
            _FORMAT_S16_LE,
            _ACCESS_RW_INTERLEAVED,
            channels,
            rate,
            _SOFT_RESAMPLE,
            latency_us,
        )
        buffer, period = ctypes.c_ulong(), ctypes.c_ulong()
        if err >= 0:
            err = lib.snd_pcm_get_params(handle, ctypes.byref(buffer), ctypes.byref(period))
        if err < 0:
            self.close()
            raise DeviceError(
                f"ALSA device {device!r}: cannot set up {what} at {rate} Hz, {channels} ch, 16-bit "
                f"({_strerror(lib, err)}); list devices with '{lister}'"
            )
        self.buffer_frames = max(int(buffer.value), 1)
        self.period_frames = max(int(period.value), 1)

    def error(self, err: int) -> str:
        return _strerror(self.lib, err)

    def recover(self, err: int) -> None:
        """Back to running after an xrun or a suspend; anything else means the device is gone."""
        if err in [-e for e in _LOST] or self.lib.snd_pcm_recover(self.handle, err, 1) < 0:
            raise DeviceLost(f"ALSA device {self.device!r} went away ({self.error(err)})")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.lib.snd_pcm_close(self.handle)


class AlsaSource:
    """A microphone: `read(now)` returns every frame captured since the last read, int16 (n, ch)."""

    def __init__(self, device: str, rate: int, channels: int, period_ms: int = 10) -> None:
        self.rate = rate
        self.channels = channels
        self.device = device
        self.overruns = 0
        self._pcm = _Pcm(device, True, rate, channels, period_ms)
        # At most one buffer per read: what the kernel can hold, so a PCM that always has frames
        # (ALSA's `null`) cannot keep a read going forever.
        self._buf = np.zeros((self._pcm.buffer_frames, channels), dtype="<i2")
        try:
            self._start()
        except DeviceLost as exc:
            self._pcm.close()
            raise DeviceError(
                f"{exc}: cannot start capture; list devices with 'arecord -L'"
            ) from exc

    def _start(self) -> None:
        """Capture runs from now (a read shorter than the start threshold would not start it)."""
        err = self._pcm.lib.snd_pcm_start(self._pcm.handle)
        if err < 0 and err != -errno.EBADFD:  # -EBADFD: already running (resumed after suspend)
            raise DeviceLost(f"ALSA device {self.device!r} went away ({self._pcm.error(err)})")

    def read(self, now: float) -> npt.NDArray[np.int16]:
        pcm, buf = self._pcm, self._buf
        got = xruns = 0
        while got < len(buf):
            n = pcm.lib.snd_pcm_readi(pcm.handle, buf[got:].ctypes.data, len(buf) - got)
            if n == -errno.EAGAIN:
                break
            if n < 0:
                if n == -errno.EPIPE:
                    self.overruns += 1
                xruns += 1
                if xruns > _MAX_XRUNS:
                    raise DeviceLost(
                        f"ALSA device {self.device!r} keeps failing ({pcm.error(int(n))}) "
                        f"after {_MAX_XRUNS} recoveries in one read"
                    )
                pcm.recover(int(n))
                self._start()
                continue
            if n == 0:
                break
            got += int(n)
        return buf[:got].astype(np.int16)

    def close(self) -> None:
        self._pcm.close()


class LoopbackMicrophone:
    """A clip played into `playback` in real time and captured from `capture` (an `AlsaSource`):
    what the app hears went through the kernel's ALSA capture path, as a microphone's would."""

    def __init__(
        self,
        clip: npt.NDArray[np.int16],
        playback: str,
        capture: str,
        rate: int,
        period_ms: int = 10,
    ) -> None:
        self.rate = rate
        self.channels = 1
        self.underruns = 0
        self._clip = np.ascontiguousarray(clip.reshape(-1), dtype="<i2")
        try:
            self._out = _Pcm(playback, False, rate, 1, period_ms)
        except DeviceError as exc:
            raise DeviceError(f"{exc}; is the loopback loaded (modprobe snd-aloop)?") from exc
        try:
            self._in = AlsaSource(capture, rate, 1, period_ms)
        except BaseException:
            self._out.close()
            raise
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._play, name="loopback-play", daemon=True)
        self._thread.start()

    def _play(self) -> None:
        out = self._out
        step = out.period_frames
        xruns = 0
        try:
            for start in range(0, len(self._clip), step):
                chunk = self._clip[start : start + step]
                while len(chunk):
                    if self._stop.is_set():
                        return
                    n = out.lib.snd_pcm_writei(out.handle, chunk.ctypes.data, len(chunk))
                    if n < 0:
                        if n == -errno.EPIPE:
                            self.underruns += 1
                        xruns += 1
                        if xruns > _MAX_XRUNS:
                            raise DeviceLost(
                                f"ALSA device {out.device!r} keeps failing ({out.error(int(n))})"
                            )
                        out.recover(int(n))
                        continue
                    xruns = 0
                    chunk = chunk[int(n) :]
            out.lib.snd_pcm_drain(out.handle)  # the clip's tail is heard before `finished`
        except DeviceLost as exc:  # the device went away: the capture side reports it
            log.error("loopback playback stopped: %s", exc)
        finally:
            self._done.set()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def read(self, now: float) -> npt.NDArray[np.int16]:
        return self._in.read(now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._in.close()
        if (
            self._thread.is_alive()
        ):  # still inside a write: leak the PCM rather than free it under it
            log.warning("loopback playback did not stop within 1 s; its PCM is left open")
        else:
            self._out.close()

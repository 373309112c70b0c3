"""The ALSA backend through the host's real libasound.so.2, with no sound card: ALSA's user-space
PCMs stand in for one (`null`, and the `file` plugin, which records what is played into a file
and feeds capture from one). The snd-aloop loopback itself runs in the guest (`make qemu-test`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.io.alsa import AlsaSource, LoopbackMicrophone
from runtime.io.errors import DeviceError

ALSA_CONF = Path("/usr/share/alsa/alsa.conf")  # libasound2-data: the global config ALSA starts from


def _reads(src: AlsaSource, frames: int) -> np.ndarray:
    """Reads until `frames` have come (the user-space PCMs always have some ready)."""
    chunks, got = [], 0
    for _ in range(1000):
        chunk = src.read(0.0)
        assert chunk.dtype == np.int16 and chunk.ndim == 2 and chunk.shape[1] == src.channels
        # At most one buffer (four 10 ms periods) a read, even from a PCM that never runs dry.
        assert len(chunk) <= 4 * src.rate // 100
        chunks.append(chunk)
        got += len(chunk)
        if got >= frames:
            break
    return np.concatenate(chunks)


@pytest.fixture
def capture_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PCM `ocula_in` whose capture is the file `in.raw` (raw S16_LE), defined beside ALSA's own
    configuration for this test only."""
    assert ALSA_CONF.is_file(), f"{ALSA_CONF} missing: apt install libasound2-data"
    raw = tmp_path / "in.raw"
    conf = tmp_path / "ocula.conf"
    conf.write_text(
        'pcm.ocula_in {\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
        f'  infile "{raw}"\n  format "raw"\n}}\n'
    )
    monkeypatch.setenv("ALSA_CONFIG_PATH", f"{ALSA_CONF}:{conf}")
    return raw


def test_null_capture_returns_int16_frames_bounded_to_a_buffer() -> None:
    src = AlsaSource("null", 16000, 1)
    try:
        frames = _reads(src, 2000)
    finally:
        src.close()
    assert len(frames) >= 2000 and src.overruns == 0


@pytest.mark.parametrize("channels", [1, 2])
def test_capture_delivers_the_samples_in_order_across_reads(
    capture_file: Path, channels: int
) -> None:
    n = 6000
    ramp = (np.arange(n) * 13 % 20000 - 10000).astype("<i2")
    frames = np.stack([ramp, -ramp][:channels], axis=1)
    frames.tofile(capture_file)
    src = AlsaSource("ocula_in", 16000, channels)
    try:
        got = _reads(src, n)
    finally:
        src.close()
    np.testing.assert_array_equal(got[:n], frames)


def test_unknown_device_is_one_line_naming_it_and_how_to_list() -> None:
    with pytest.raises(DeviceError) as err:
        AlsaSource("ocula_no_such_pcm", 16000, 1)
    msg = str(err.value)
    assert "\n" not in msg and "'ocula_no_such_pcm'" in msg and "capture" in msg
    assert "arecord -L" in msg


def test_bad_rate_is_refused_before_alsa_sees_it() -> None:
    with pytest.raises(DeviceError, match=r"rate 0 Hz.*positive"):
        AlsaSource("null", 0, 1)


def test_loopback_plays_the_whole_clip_and_finishes(tmp_path: Path) -> None:
    out = tmp_path / "played.raw"
    clip = (np.arange(5003) * 7 % 3000 - 1500).astype(np.int16)  # not a whole number of periods
    mic = LoopbackMicrophone(clip, f"file:'{out}',raw", "null", 16000)
    try:
        assert mic._done.wait(10.0), "playback thread did not finish the clip"
        assert mic.finished and mic.underruns == 0
        heard = mic.read(0.0)
        assert heard.dtype == np.int16 and heard.shape[1] == 1
    finally:
        mic.close()
    np.testing.assert_array_equal(np.fromfile(out, dtype="<i2"), clip)


def test_loopback_with_a_missing_side_says_which(tmp_path: Path) -> None:
    clip = np.zeros(1600, np.int16)
    with pytest.raises(DeviceError) as err:
        LoopbackMicrophone(clip, "ocula_no_such_pcm", "null", 16000)
    msg = str(err.value)
    assert "\n" not in msg and "'ocula_no_such_pcm'" in msg and "playback" in msg
    assert "modprobe snd-aloop" in msg
    with pytest.raises(DeviceError, match=r"'ocula_no_capture'.*capture"):
        LoopbackMicrophone(clip, "null", "ocula_no_capture", 16000)

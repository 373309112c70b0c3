"""Device backends: PNG codec against Pillow, WAV pacing, file cameras, displays, framebuffer."""

from __future__ import annotations

import io
import json
import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.engine.audio import read_wav
from runtime.io import (
    DeviceError,
    DeviceLost,
    FileCamera,
    ImageError,
    PatternCamera,
    VirtualDisplay,
    WavSource,
    open_camera,
)
from runtime.io.fbdev import FramebufferDisplay
from runtime.io.image import read_image
from runtime.io.panel import tint
from runtime.io.png import decode_png, encode_apng, encode_png
from runtime.sched import VirtualClock

DATA = Path(__file__).parent / "data"


def _rng_image(h: int = 37, w: int = 53, ch: int = 3) -> np.ndarray:
    img = np.random.default_rng(1).integers(0, 256, (h, w, ch), dtype=np.uint8)
    img[:10] = 40  # a flat area, where Pillow picks other row filters
    return img


@pytest.mark.parametrize("mode,ch", [("L", 1), ("RGB", 3), ("RGBA", 4), ("LA", 2)])
def test_png_decoder_reads_what_pillow_writes(tmp_path: Path, mode: str, ch: int) -> None:
    img = _rng_image(ch=ch)
    pil = Image.fromarray(img[:, :, 0] if ch == 1 else img, mode)
    buf = io.BytesIO()
    pil.save(buf, "PNG", optimize=True)
    got = decode_png(buf.getvalue())
    np.testing.assert_array_equal(got.reshape(img.shape), img)


def test_png_encoder_and_apng_read_back_by_pillow() -> None:
    img = _rng_image()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(img)))), img)
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 100, 200)]
    anim = Image.open(io.BytesIO(encode_apng(frames, [0.1, 0.2, 0.3])))
    assert anim.n_frames == 3
    anim.seek(2)
    assert np.asarray(anim.convert("RGB"))[0, 0, 0] == 200


def test_wav_source_is_paced_by_the_clock() -> None:
    clock = VirtualClock()
    src = WavSource(DATA / "speech_short.wav", 16000, clock)
    ref = read_wav(DATA / "speech_short.wav", 16000)
    assert src.read(clock.now()).shape == (0, 1)
    clock.advance(0.5)
    first = src.read(clock.now())
    assert first.shape == (8000, 1)
    np.testing.assert_array_equal(first[:, 0] / 32768.0, ref[:8000])  # the same 16-bit samples
    clock.advance(1000.0)
    rest = src.read(clock.now())
    assert len(first) + len(rest) == len(ref) and src.finished


def _write_wav(path: Path, data: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())


def test_wav_at_another_rate_and_stereo_is_converted_and_said(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
    _write_wav(tmp_path / "s.wav", np.stack([tone, tone], axis=1), 44100)
    clock = VirtualClock()
    src = WavSource(tmp_path / "s.wav", 16000, clock)
    assert any("2 channels mixed down" in n for n in src.notes)
    assert any("resampled from 44100 Hz to 16000 Hz" in n for n in src.notes)
    assert src.duration_s == pytest.approx(1.0)
    clock.advance(1.0)
    out = src.read(clock.now())[:, 0].astype(np.float32)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) == pytest.approx(440, abs=2)  # the tone survived


def test_truncated_and_broken_wavs_get_clear_messages(tmp_path: Path) -> None:
    data = (DATA / "speech_short.wav").read_bytes()
    (tmp_path / "half.wav").write_bytes(data[: len(data) // 2])
    src = WavSource(tmp_path / "half.wav", 16000, VirtualClock())
    assert any("truncated" in n and "playing what is there" in n for n in src.notes)
    (tmp_path / "head.wav").write_bytes(data[:30])
    with pytest.raises(DeviceError, match=r"head\.wav: not a readable PCM WAV.*sox"):
        WavSource(tmp_path / "head.wav", 16000, VirtualClock())
    with pytest.raises(DeviceError, match="not found"):
        WavSource(tmp_path / "nope.wav", 16000, VirtualClock())


def test_file_camera_reads_png_and_ppm_and_skips_what_is_not_an_image(
    tmp_path: Path, caplog
) -> None:
    a = _rng_image(20, 30)
    Image.fromarray(a).save(tmp_path / "1.png")
    Image.fromarray(a[:, :, 0]).save(tmp_path / "2.pgm")
    (tmp_path / "3.png").write_text("this is not an image")
    Image.fromarray(a).save(tmp_path / "4.jpg")
    cam = FileCamera(tmp_path)
    np.testing.assert_array_equal(cam.capture(0.0), a)
    np.testing.assert_array_equal(cam.capture(0.0)[:, :, 1], a[:, :, 0])
    assert cam.capture(0.0) is not None  # the bad file and the JPEG skipped, loops to 1.png
    assert cam.bad_frames == 2
    assert "3.png: not an image" in caplog.text and "4.jpg: a JPEG" in caplog.text


def test_camera_that_disappears_mid_run_is_reported(tmp_path: Path) -> None:
    d = tmp_path / "cam"
    d.mkdir()
    Image.fromarray(_rng_image()).save(d / "a.png")
    cam = FileCamera(d)
    assert cam.capture(0.0) is not None
    shutil.rmtree(d)
    with pytest.raises(DeviceLost, match="disappeared"):
        cam.capture(0.1)


def test_camera_with_no_images_and_missing_v4l2_device_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_text("nope")
    with pytest.raises(DeviceError, match="none of its 1 file"):
        FileCamera(tmp_path).capture(0.0)
    with pytest.raises(DeviceError, match="no such file or folder"):
        open_camera(str(tmp_path / "missing"))
    with pytest.raises(DeviceError, match=r"/dev/video97"):
        open_camera("v4l2:/dev/video97")
    with pytest.raises(ImageError, match=r"x\.png: not an image.*8-bit PNG"):
        read_image(tmp_path / "x.png")


def test_pattern_camera_is_deterministic() -> None:
    a, b = PatternCamera(64, 48), PatternCamera(64, 48)
    for _ in range(3):
        np.testing.assert_array_equal(a.capture(0.0), b.capture(0.0))


def test_virtual_display_writes_changed_frames_and_a_preview(tmp_path: Path) -> None:
    d = VirtualDisplay(tmp_path / "out", 40, 30, "mono-green", bits=4)
    f = np.zeros((30, 40), np.uint8)
    d.show(f, None, 0.0)
    f2 = f.copy()
    f2[5:10, 5:10] = 255
    d.show(f2, (5, 5, 10, 10), 0.2)
    d.show(f2, None, 0.4)  # unchanged: no file
    d.close()
    index = json.loads((tmp_path / "out" / "frames.json").read_text())
    assert [x["file"] for x in index["frames"]] == ["frame_00001.png", "frame_00002.png"]
    assert index["shown"] == 3
    png = np.asarray(Image.open(tmp_path / "out" / "frame_00002.png"))
    np.testing.assert_array_equal(png, tint(f2, "mono-green"))
    preview = Image.open(tmp_path / "out" / "preview.png")
    assert preview.n_frames == 3  # the still (the last frame) and the two animation frames
    np.testing.assert_array_equal(
        np.asarray(preview.convert("RGB")), tint(f2[::2, ::2], "mono-green")
    )


def test_a_recorder_that_falls_behind_drops_frames_and_counts_them(tmp_path: Path) -> None:
    """`show` never waits for the recording: with the writer stuck (its first PNG is a FIFO
    nobody reads yet), frames past the bounded queue are dropped and counted."""
    out = tmp_path / "out"
    d = VirtualDisplay(out, 40, 30, queue_frames=2)
    os.mkfifo(out / "frame_00001.png")
    for i in range(10):
        f = np.full((30, 40), i * 20, np.uint8)
        d.show(f, (0, 0, 40, 30), i * 0.1)
    assert d.changed == 10 and d.dropped >= 7  # the stuck frame plus two queued at most
    with open(out / "frame_00001.png", "rb") as fifo:  # the writer goes on
        first = decode_png(fifo.read())
    d.close()
    np.testing.assert_array_equal(first, tint(np.zeros((30, 40), np.uint8), "mono-green"))
    index = json.loads((out / "frames.json").read_text())
    assert index["dropped"] == d.dropped
    assert len(index["frames"]) == d.changed - d.dropped
    written = [int(x["file"][6:11]) for x in index["frames"]]
    assert written[0] == 1 and written == sorted(written)
    # what was written is what was shown (frame 1, the FIFO, was read above)
    for x in index["frames"][1:]:
        n = int(x["file"][6:11])
        png = np.asarray(Image.open(out / x["file"]))
        assert png[0, 0, 1] == tint(np.full((1, 1), (n - 1) * 20, np.uint8), "mono-green")[0, 0, 1]


def test_display_that_cannot_be_opened_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DeviceError, match="cannot write"):
        VirtualDisplay(tmp_path / "file" / "sub", 10, 10)
    with pytest.raises(DeviceError, match=r"/dev/fb9.*framebuffer"):
        FramebufferDisplay("/dev/fb9")


@pytest.mark.parametrize("bpp", [16, 32])
def test_framebuffer_writes_only_the_dirty_rectangle(tmp_path: Path, bpp: int) -> None:
    w, h = 32, 16
    stride = w * bpp // 8
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    (sysfs / "virtual_size").write_text(f"{w},{h}\n")
    (sysfs / "bits_per_pixel").write_text(f"{bpp}\n")
    (sysfs / "stride").write_text(f"{stride}\n")
    dev = tmp_path / "fb"
    dev.write_bytes(b"\xaa" * stride * h)
    fb = FramebufferDisplay(str(dev), "mono-green", sysfs=sysfs)
    frame = np.zeros((h, w), np.uint8)
    frame[2:4, 3:6] = 255
    fb.show(frame, (3, 2, 6, 4), 0.0)
    fb.close()
    raw = np.frombuffer(dev.read_bytes(), np.uint8).reshape(h, stride)
    bytes_pp = bpp // 8
    assert (raw[:2] == 0xAA).all() and (raw[4:] == 0xAA).all()  # outside: untouched
    px = raw[2, 3 * bytes_pp : 4 * bytes_pp]
    if bpp == 16:
        v = int(px.view("<u2")[0])
        assert (v >> 5) & 0x3F == 63 and v >> 11 == 0  # full green, no red
    else:
        assert list(px[:3]) == [89, 255, 0]  # B, G, R of the glasses' green
    assert (raw[2, : 3 * bytes_pp] == 0xAA).all()


def test_apng_still_image_is_what_plain_viewers_show() -> None:
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 100, 200)]
    data = encode_apng(frames, [0.1, 0.1, 0.1], still=frames[-1])
    np.testing.assert_array_equal(decode_png(data), frames[-1])  # the default image
    anim = Image.open(io.BytesIO(data))
    # Pillow lists the still image as frame 0 (info "default_image"); browsers skip it
    assert anim.info.get("default_image") and anim.n_frames == 4
    anim.seek(1)
    assert np.asarray(anim.convert("RGB"))[0, 0, 0] == 0

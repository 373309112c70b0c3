"""Run an app on the board itself: what the device agent calls for a `run` request.

    reply = run_on_board(app, seconds, artifacts=slot / "artifacts", profile=profile,
                         traces=store / "traces", work=store / "apps")

Devices come from the board: the profile's display (a framebuffer when `display.interface` is
"fbdev", else the virtual display writing PNGs under `work/display`), an ALSA microphone when the
profile has audio and the board can open it through libasound2 (else a quiet synthetic microphone,
said in the notes) or a WAV clip the host injected (`inject` requests), a V4L2 camera at
/dev/video0 when present (else the synthetic pattern camera) or an image the host injected. The
glyph atlas is `glyphs.npz` in the artifacts folder, which the bundle carries (the board has no
font rasterizer: the host renders the glyphs); without it, or with a broken one, the display shows
boxes for every character (and says so). The trace is written to `traces/<app>.json` and the reply
names it, with the counters and latency percentiles.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from runtime.apps import AppOptions, Devices, Host, Models, make_app
from runtime.errors import OculaError
from runtime.io.audio import AudioSource, SilenceSource, WavSource, open_audio
from runtime.io.camera import Camera, PatternCamera, open_camera
from runtime.io.display import Display, VirtualDisplay, open_display
from runtime.io.glyphs import BUNDLE_NAME, GlyphAtlas
from runtime.profile import Profile
from runtime.sched.clock import MonotonicClock

__all__ = ["app_options", "board_atlas", "run_on_board"]

log = logging.getLogger(__name__)


def run_on_board(
    app: str,
    seconds: float,
    *,
    artifacts: Path,
    profile: Profile,
    traces: Path,
    work: Path,
    options: AppOptions | None = None,
    audio: Path | None = None,
    camera: Path | None = None,
) -> dict[str, Any]:
    """`audio`, `camera`: injected clips that stand in for the microphone (a WAV played in real
    time) and the camera (an image, every frame)."""
    clock = MonotonicClock()
    notes: list[str] = []
    if camera is not None:
        notes.append(f"camera: the injected image {camera.stem[:12]}")
    devices = Devices(
        audio=_audio(profile, clock, notes)
        if audio is None
        else _clip(audio, profile, clock, notes),
        camera=_camera(profile, notes) if camera is None else open_camera(str(camera)),
        display=_display(profile, work, notes),
    )
    atlas = board_atlas(artifacts, notes)
    host = Host(profile, clock, devices, atlas, Models.scan(artifacts), options or AppOptions())
    for n in notes:
        host.note(n)
    if not host.add(make_app(app)):
        host.close()
        raise host.errors[app]
    report = host.run(seconds)
    name = f"{app}.json"
    host.trace.write(traces / name, {"board": profile.name, "app": app})
    m = report.metrics
    return {
        "trace": name,
        "seconds": report.duration_s,
        "counters": m["counters"],
        "latency_s": {k: v for k, v in m["latency_s"].items() if not k.startswith("wait.")},
        "notes": report.notes,
        "energy_j": report.total_energy_j,
        "failures": report.failures,
        "summary": report.app_summaries.get(app, {}),
    }


def app_options(raw: dict[str, Any]) -> AppOptions:
    """AppOptions from a `run` request's `options`, which the board API has checked
    (runtime.agent.api.APP_OPTIONS: the names, types and limits)."""
    floats = {f.name for f in fields(AppOptions) if f.type in ("float", float)}
    values: dict[str, Any] = {k: float(v) if k in floats else v for k, v in raw.items()}
    return AppOptions(**values)


def board_atlas(artifacts: Path, notes: list[str]) -> GlyphAtlas:
    """The bundle's glyph atlas (`artifacts/glyphs.npz`), or boxes for every character, said."""
    path = artifacts / BUNDLE_NAME
    if path.is_file():
        try:
            return GlyphAtlas.load(path)
        except OculaError as exc:
            notes.append(f"{exc}; text shows as boxes")
            return GlyphAtlas.empty()
    notes.append(
        f"no {BUNDLE_NAME} in the bundle: text shows as boxes; build the bundle with a glyph "
        "atlas (board.bundle.build(..., glyphs=ocula.glyphatlas.cached_atlas()))"
    )
    return GlyphAtlas.empty()


def _audio(profile: Profile, clock: MonotonicClock, notes: list[str]) -> AudioSource:
    try:
        return open_audio(
            f"alsa:{profile.audio.capture}", profile.audio.rate, clock, profile.audio.channels
        )
    except OculaError as exc:
        notes.append(f"no microphone ({exc}); a quiet synthetic microphone stands in")
        return SilenceSource(profile.audio.rate, clock)


def _clip(audio: Path, profile: Profile, clock: MonotonicClock, notes: list[str]) -> AudioSource:
    """The injected clip as the microphone: played through the profile's ALSA loopback when it
    has one (the app hears it through the real capture path), else read as a file."""
    wav = WavSource(audio, profile.audio.rate, clock)
    if profile.audio.loopback:
        from runtime.io.alsa import LoopbackMicrophone

        mic = LoopbackMicrophone(
            wav.samples, profile.audio.loopback, profile.audio.capture, profile.audio.rate
        )
        notes.append(
            f"microphone: the injected clip {audio.stem[:12]}, played into "
            f"{profile.audio.loopback} and captured from {profile.audio.capture}"
        )
        return mic
    notes.append(f"microphone: the injected clip {audio.stem[:12]} (WAV, paced in real time)")
    return wav


def _camera(profile: Profile, notes: list[str]) -> Camera:
    if Path("/dev/video0").exists():
        try:
            return open_camera("v4l2:/dev/video0", profile.camera.width, profile.camera.height)
        except OculaError as exc:
            notes.append(f"camera: {exc}")
    notes.append("no camera: the synthetic pattern camera stands in")
    return PatternCamera(
        min(640, profile.camera.width or 640), min(480, profile.camera.height or 480)
    )


def _display(profile: Profile, work: Path, notes: list[str]) -> Display:
    d = profile.display
    if d.interface == "fbdev":
        try:
            return open_display("fb:/dev/fb0", d.width, d.height, d.colour, d.bits)
        except OculaError as exc:
            notes.append(f"display: {exc}; the virtual display stands in")
    return VirtualDisplay(
        work / "display", d.width or 480, d.height or 640, d.colour, d.bits, max_png=200
    )

"""The app host: one scheduler, one display, the governor, and the apps that share them.

`Host(profile, clock, devices, atlas, models)` builds the runtime around the apps:
- telemetry (trace, metrics, energy meter), the scheduler (real threads on a `MonotonicClock`,
  or the deterministic simulation on a `VirtualClock`), the core plan from the profile;
- the display task on the real-time loop at the panel's refresh rate: `screen.render(now)`,
  then `display.show(frame, dirty)`; frames finished after their refresh slot are counted in
  `late.display`;
- the governor (1 Hz) and the memory watch (1 Hz);
- `threads(role)`: the thread count apps give their sessions, so that onnxruntime's pool stays
  off the real-time loop's core (1 on a 2-core host: the loop keeps a core to itself); on a
  board whose ASR and LLM cores are disjoint (ar1-ref, rpi5) each has a worker of its own.
`add(app)` sets an app up; an app that cannot start (a model missing from the bundle, a device
that cannot be opened) is reported in `failures` and the trace, and the others keep running.
An app that started but whose work failed (every ASR job raising, say) says so through an
optional `failure()` method (None when all went well), which the report adds to `failures`.
`run(duration)` runs until `duration` or until every app is finished, then closes the devices
and returns a `Report`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.apps.models import Models
from runtime.errors import OculaError
from runtime.io.audio import AudioSource
from runtime.io.camera import Camera
from runtime.io.display import Display
from runtime.io.glyphs import GlyphAtlas
from runtime.io.screen import CaptionScreen
from runtime.profile import Profile
from runtime.sched.clock import Clock, VirtualClock
from runtime.sched.cores import core_plan
from runtime.sched.governor import Governor
from runtime.sched.memory import MemoryWatch
from runtime.sched.scheduler import Scheduler
from runtime.telemetry import Telemetry
from runtime.telemetry.energy import Meter

__all__ = ["App", "AppOptions", "Devices", "Host", "Report"]

log = logging.getLogger(__name__)


@dataclass
class Devices:
    audio: AudioSource | None = None
    camera: Camera | None = None
    display: Display | None = None


@dataclass
class AppOptions:
    source_lang: str = "en"
    target_lang: str = "zh"
    question: str | None = None
    max_tokens: int = 48
    partial_every_s: float = 1.0
    stable_updates: int = 2
    look_every_s: float = 3.0
    once: bool = False


class App(Protocol):
    name: str

    def setup(self, host: Host) -> None:
        """Load models, declare tasks; raise an OculaError if the app cannot run."""
        ...

    @property
    def finished(self) -> bool: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass
class Report:
    duration_s: float
    apps: list[str]
    failures: dict[str, str]
    notes: list[str]
    metrics: dict[str, Any]
    energy_j: dict[str, float]
    total_energy_j: float
    app_summaries: dict[str, dict[str, Any]] = field(default_factory=dict)


class Host:
    def __init__(
        self,
        profile: Profile,
        clock: Clock,
        devices: Devices,
        atlas: GlyphAtlas,
        models: Models,
        options: AppOptions | None = None,
        workers: int = 1,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.devices = devices
        self.models = models
        self.options = options or AppOptions()
        self.virtual = isinstance(clock, VirtualClock)
        self.telemetry = Telemetry(clock, profile)
        self.metrics = self.telemetry.metrics
        self.trace = self.telemetry.trace
        self.meter = Meter(self.telemetry.energy)
        plan = None if self.virtual else core_plan(profile)
        # inference threads stay off the real-time loop's core (where the board has another);
        # where ASR and LLM have cores of their own, each gets its own worker
        full = self.plan = core_plan(profile)
        free = set(full.asr + full.llm) - set(full.realtime)
        self.inference_threads = max(1, len(free) or len(full.llm))
        split = set(full.asr).isdisjoint(full.llm) and not set(full.asr + full.llm) & set(
            full.realtime
        )
        self.pools: tuple[str, ...] = ("asr", "llm") if split else ("any",) * workers
        self.sched = Scheduler(
            clock, self.telemetry, workers=self.pools, plan=plan, meter=self.meter
        )
        self.screen = CaptionScreen(
            profile.display.width or 480, profile.display.height or 640, atlas, self.metrics
        )
        self.governor = Governor(
            profile,
            self.meter,
            self.telemetry,
            camera_fps=profile.camera.fps or 10.0,
            max_tokens=self.options.max_tokens,
            small_tier=models.smaller("llm") is not None,
        )
        self.apps: list[App] = []
        self.failures: dict[str, str] = {}
        self.errors: dict[str, OculaError] = {}
        self.notes: list[str] = []
        self._memory = MemoryWatch(profile, self.telemetry)
        self._started = clock.now()
        if devices.display is not None:
            hz = profile.display.refresh_hz or 30.0
            self.sched.every("display", 1.0 / hz, self._refresh)
        self.sched.every("governor", 1.0, self._govern)
        self.sched.every("memory", 1.0, self._memory.check, realtime=False)

    def threads(self, role: str) -> int:
        """Session threads for a role: its own cores with worker pools, else the shared ones."""
        return len(self.plan.for_role(role)) if "any" not in self.pools else self.inference_threads

    def _govern(self, now: float) -> None:
        self.governor.update(now)

    def _refresh(self, now: float) -> None:
        frame, dirty = self.screen.render(now)
        assert self.devices.display is not None
        self.devices.display.show(frame, dirty, now)

    def add(self, app: App) -> bool:
        try:
            app.setup(self)
        except OculaError as exc:
            self.failures[app.name] = str(exc)
            self.errors[app.name] = exc
            self.trace.instant("app failed", "error", "apps", app=app.name, error=str(exc))
            log.error("%s cannot run: %s", app.name, exc)
            return False
        self.apps.append(app)
        self.trace.instant("app started", "app", "apps", app=app.name)
        return True

    def note(self, text: str) -> None:
        """Something the person running the apps should read (shown at the end)."""
        if text not in self.notes:
            self.notes.append(text)
            log.info("%s", text)

    @property
    def idle(self) -> bool:
        return bool(self.apps) and all(a.finished for a in self.apps) and self.sched.pending == 0

    def run(self, duration: float) -> Report:
        start = self.clock.now()
        try:
            if self.apps:
                if self.virtual:
                    end = start + duration
                    while self.clock.now() < end and not self.idle:
                        self.sched.run_for(min(0.5, end - self.clock.now()))
                else:
                    self.sched.run_realtime(duration, until=lambda: self.idle)
        finally:
            self.close()
        return self.report(self.clock.now() - start)

    def close(self) -> None:
        for dev in (self.devices.audio, self.devices.camera, self.devices.display):
            if dev is not None:
                try:
                    dev.close()
                except (OSError, OculaError) as exc:
                    log.warning("closing %s: %s", type(dev).__name__, exc)

    def report(self, duration: float) -> Report:
        spans = self.trace.spans()
        stages = self.telemetry.energy.by_stage(s for s in spans if s.cat == "inference")
        total = self.telemetry.energy.total_j(spans, duration, self.devices.display is not None)
        missing = self.screen.atlas.missing_by_script
        if missing:
            scripts = ", ".join(f"{k} ({v} chars)" for k, v in missing.items())
            self.note(f"the display had no glyphs for: {scripts}; they were shown as boxes")
        self.metrics.set_counter("display.missing_glyphs", self.screen.atlas.missing)
        unrecorded = getattr(self.devices.display, "dropped", None)
        if isinstance(unrecorded, int):
            self.metrics.set_counter("display.unrecorded_frames", unrecorded)
        failures = dict(self.failures)
        for a in self.apps:
            said = getattr(a, "failure", None)
            problem = said() if callable(said) else None
            if problem:
                failures[a.name] = str(problem)
        return Report(
            duration_s=duration,
            apps=[a.name for a in self.apps],
            failures=failures,
            notes=list(self.notes),
            metrics=self.metrics.summary(),
            energy_j={k: v.joules for k, v in stages.items()},
            total_energy_j=total,
            app_summaries={a.name: a.summary() for a in self.apps},
        )

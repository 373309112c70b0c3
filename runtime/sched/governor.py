"""The governor: keeps the glasses inside their power and thermal budget by shedding quality.

Inputs: the energy `Meter` (average watts over a long window against `power.average_budget_w`,
over a short window against `power.burst_budget_w`) and a temperature (a first-order thermal
model driven by the same watts, or a sensor read) against `thermal.limit_c`.

When over budget it moves one rung down the ladder, at most once per `hold_s`:

    0 normal -> 1 camera rate halved -> 2 LLM tokens capped -> 3 smaller model tier
             -> 4 translation paused

(rung 3 is skipped, and the trace says so, when no smaller tier is bundled). When comfortably
under budget (below `recover_ratio` of both budgets and `margin_c` under the limit) for
`recover_s`, it climbs back one rung. Audio capture and the display are never on the ladder:
the governor degrades models, never audio.

Every change is a trace instant on the "governor" track naming the action and the reason with
the figures, and `on_change` listeners get the new `Policy` (the app lowers its camera task's
rate, caps its generator, swaps a tier or pauses translation).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.profile import Profile
from runtime.telemetry import Telemetry
from runtime.telemetry.energy import Meter

__all__ = ["LADDER", "Governor", "Policy", "ThermalModel"]

log = logging.getLogger(__name__)

LADDER = (
    "normal",
    "camera rate lowered",
    "LLM tokens capped",
    "smaller model tier",
    "translation paused",
)


@dataclass(frozen=True)
class Policy:
    level: int
    camera_fps: float
    max_tokens: int
    tier: str
    translation_paused: bool


class ThermalModel:
    """T' = (ambient + R * P - T) / tau. R is set so the burst budget, held, reaches the limit.

    An estimate for boards without a sensor; give `sensor` (a sysfs thermal_zone temp file in
    millidegrees) to read a real one instead.
    """

    def __init__(
        self,
        profile: Profile,
        ambient_c: float = 25.0,
        tau_s: float = 60.0,
        sensor: Path | None = None,
    ) -> None:
        self.ambient_c = ambient_c
        self.tau_s = tau_s
        self.r = (profile.thermal.limit_c - ambient_c) / profile.power.burst_budget_w
        self.t_c = ambient_c
        self.sensor = sensor
        self._last: float | None = None

    def update(self, now: float, watts: float) -> float:
        if self.sensor is not None:
            try:
                self.t_c = int(self.sensor.read_text().strip()) / 1000.0
                return self.t_c
            except (OSError, ValueError):
                log.warning("%s: cannot read the temperature; using the model", self.sensor)
                self.sensor = None
        dt = 0.0 if self._last is None else now - self._last
        self._last = now
        target = self.ambient_c + self.r * watts
        self.t_c += (target - self.t_c) * min(1.0, dt / self.tau_s)
        return self.t_c


class Governor:
    def __init__(
        self,
        profile: Profile,
        meter: Meter,
        telemetry: Telemetry,
        *,
        camera_fps: float,
        max_tokens: int,
        small_tier: bool = False,
        thermal: ThermalModel | None = None,
        hold_s: float = 2.0,
        recover_s: float = 10.0,
        recover_ratio: float = 0.8,
        margin_c: float = 2.0,
        burst_window_s: float = 1.0,
    ) -> None:
        self.power = profile.power
        self.limit_c = profile.thermal.limit_c
        self.meter = meter
        self.telemetry = telemetry
        self.thermal = thermal or ThermalModel(profile)
        self.base = Policy(0, camera_fps, max_tokens, "default", False)
        self.policy = self.base
        self.small_tier = small_tier
        self.hold_s = hold_s
        self.recover_s = recover_s
        self.recover_ratio = recover_ratio
        self.margin_c = margin_c
        self.burst_window_s = burst_window_s
        self._changed_at = float("-inf")
        self._calm_since: float | None = None
        self.listeners: list[Callable[[Policy], None]] = []

    def on_change(self, fn: Callable[[Policy], None]) -> None:
        self.listeners.append(fn)

    def update(self, now: float) -> Policy:
        avg = self.meter.average_w(now)
        burst = self.meter.average_w(now, self.burst_window_s)
        temp = self.thermal.update(now, burst)
        self.telemetry.trace.counter("power", watts_avg=round(avg, 4), watts_1s=round(burst, 4))
        self.telemetry.trace.counter("temperature", celsius=round(temp, 2))
        self.telemetry.metrics.gauge("power.average_w", avg)
        self.telemetry.metrics.gauge("thermal.c", temp)
        reasons = []
        if avg > self.power.average_budget_w:
            reasons.append(f"average {avg:.2f} W > budget {self.power.average_budget_w:.2f} W")
        if burst > self.power.burst_budget_w:
            reasons.append(f"burst {burst:.2f} W > budget {self.power.burst_budget_w:.2f} W")
        if temp > self.limit_c - self.margin_c:
            reasons.append(f"temperature {temp:.1f} °C near limit {self.limit_c:.0f} °C")
        calm = (
            avg < self.recover_ratio * self.power.average_budget_w
            and burst < self.recover_ratio * self.power.burst_budget_w
            and temp < self.limit_c - 2 * self.margin_c
        )
        level = self.policy.level
        if reasons:
            self._calm_since = None
            if level < len(LADDER) - 1 and now - self._changed_at >= self.hold_s:
                self._set(level + 1, now, "; ".join(reasons), down=True)
        elif calm:
            if self._calm_since is None:
                self._calm_since = now
            if (
                level > 0
                and now - self._calm_since >= self.recover_s
                and now - self._changed_at >= self.hold_s
            ):
                self._set(
                    level - 1,
                    now,
                    f"under budget for {self.recover_s:.0f} s (average {avg:.2f} W)",
                    down=False,
                )
                self._calm_since = now
        else:
            self._calm_since = None
        return self.policy

    def _set(self, level: int, now: float, reason: str, down: bool) -> None:
        if level == 3 and not self.small_tier:
            self.telemetry.trace.instant(
                "governor",
                "governor",
                "governor",
                action="no smaller tier bundled; skipped",
                level=3,
            )
            level = 4 if down else 2
        self.policy = self._policy(level)
        self._changed_at = now
        action = LADDER[level] if down else f"restored: {LADDER[level + 1]} lifted"
        self.telemetry.metrics.inc("governor.changes")
        self.telemetry.metrics.gauge("governor.level", level)
        self.telemetry.trace.instant(
            "governor", "governor", "governor", action=action, level=level, reason=reason
        )
        log.info("governor: %s (%s)", action, reason)
        for fn in self.listeners:
            fn(self.policy)

    def _policy(self, level: int) -> Policy:
        b = self.base
        return dataclasses.replace(
            b,
            level=level,
            camera_fps=b.camera_fps / 2 if level >= 1 else b.camera_fps,
            max_tokens=max(8, b.max_tokens // 2) if level >= 2 else b.max_tokens,
            tier="small" if level >= 3 and self.small_tier else "default",
            translation_paused=level >= 4,
        )

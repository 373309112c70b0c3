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

A second ladder watches the work waiting, not the watts: an app that queues work (translate's
sentences) registers a `backlog` source, and when more than `max_pending` items wait or the
oldest has waited more than `max_age_s` (the CPU is shared with something else, or the model
is too slow for the speaker), the governor moves down

    0 normal -> 1 LLM tokens capped -> 2 skip to the newest sentence -> 3 smaller model tier
             -> 4 translation paused

at most once per `hold_s`, and climbs back one rung after `backlog_recover_s` with nothing
waiting. The policy is the stronger of the two ladders on each knob.

Every change is a trace instant on the "governor" track naming the ladder, the action and the
reason with the figures, and `on_change` listeners get the new `Policy` (the app lowers its
camera task's rate, caps its generator, skips stale sentences, swaps a tier or pauses
translation).
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

__all__ = ["BACKLOG_LADDER", "LADDER", "Backlog", "Governor", "Policy", "ThermalModel"]

log = logging.getLogger(__name__)

LADDER = (
    "normal",
    "camera rate lowered",
    "LLM tokens capped",
    "smaller model tier",
    "translation paused",
)
BACKLOG_LADDER = (
    "normal",
    "LLM tokens capped",
    "skipping to the newest sentence",
    "smaller model tier",
    "translation paused",
)
SMALL_TIER_RUNG = 3


@dataclass(frozen=True)
class Policy:
    #: rung on the power/thermal ladder
    level: int
    camera_fps: float
    max_tokens: int
    tier: str
    translation_paused: bool
    #: rung on the backlog ladder
    backlog_level: int = 0
    #: translate only the newest waiting sentence; drop the older ones
    latest_only: bool = False


@dataclass(frozen=True)
class Backlog:
    """Work waiting for the LLM: how many items, and how long the oldest has waited (s)."""

    pending: int
    oldest_s: float


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


class _Ladder:
    """When one ladder moves: one rung down while over budget, one up after `recover_s` calm,
    at most once per `hold_s`. The rung it is on lives in the `Policy`."""

    def __init__(self, name: str, rungs: tuple[str, ...], hold_s: float, recover_s: float) -> None:
        self.name = name
        self.rungs = rungs
        self.hold_s = hold_s
        self.recover_s = recover_s
        self.changed_at = float("-inf")
        self.calm_since: float | None = None

    def step(self, level: int, now: float, over: bool, calm: bool) -> int | None:
        """The rung to move to from `level`, or None to stay."""
        if over:
            self.calm_since = None
            if level < len(self.rungs) - 1 and now - self.changed_at >= self.hold_s:
                return level + 1
        elif calm:
            if self.calm_since is None:
                self.calm_since = now
            if (
                level > 0
                and now - self.calm_since >= self.recover_s
                and now - self.changed_at >= self.hold_s
            ):
                self.calm_since = now
                return level - 1
        else:
            self.calm_since = None
        return None


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
        max_pending: int = 2,
        max_age_s: float = 8.0,
        backlog_recover_s: float = 5.0,
    ) -> None:
        self.power = profile.power
        self.limit_c = profile.thermal.limit_c
        self.meter = meter
        self.telemetry = telemetry
        self.thermal = thermal or ThermalModel(profile)
        self.base = Policy(0, camera_fps, max_tokens, "default", False)
        self.policy = self.base
        self.small_tier = small_tier
        self.recover_ratio = recover_ratio
        self.margin_c = margin_c
        self.burst_window_s = burst_window_s
        self.max_pending = max_pending
        self.max_age_s = max_age_s
        self._power = _Ladder("power", LADDER, hold_s, recover_s)
        self._backlog = _Ladder("backlog", BACKLOG_LADDER, hold_s, backlog_recover_s)
        self._backlog_sources: list[Callable[[float], Backlog]] = []
        self.listeners: list[Callable[[Policy], None]] = []

    def on_change(self, fn: Callable[[Policy], None]) -> None:
        self.listeners.append(fn)

    def watch_backlog(self, source: Callable[[float], Backlog]) -> None:
        """Also govern by `source(now)`: the work an app has waiting."""
        self._backlog_sources.append(source)

    def update(self, now: float) -> Policy:
        self._update_power(now)
        if self._backlog_sources:
            self._update_backlog(now)
        return self.policy

    def _update_power(self, now: float) -> None:
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
        to = self._power.step(level, now, bool(reasons), calm)
        if to is not None:
            why = "; ".join(reasons) or (
                f"under budget for {self._power.recover_s:.0f} s (average {avg:.2f} W)"
            )
            self._set(to, now, why, down=to > level)

    def _update_backlog(self, now: float) -> None:
        items = [source(now) for source in self._backlog_sources]
        pending = sum(b.pending for b in items)
        oldest = max((b.oldest_s for b in items), default=0.0)
        self.telemetry.trace.counter("backlog", pending=pending, oldest_s=round(oldest, 3))
        self.telemetry.metrics.gauge("backlog.pending", pending)
        reasons = []
        if pending > self.max_pending:
            reasons.append(f"{pending} waiting > {self.max_pending}")
        if oldest > self.max_age_s:
            reasons.append(f"oldest waited {oldest:.1f} s > {self.max_age_s:.1f} s")
        level = self.policy.backlog_level
        to = self._backlog.step(level, now, bool(reasons), pending == 0)
        if to is not None:
            why = "; ".join(reasons)
            why = (
                f"backlog: {why}" if why else f"nothing waiting for {self._backlog.recover_s:.0f} s"
            )
            self._set_backlog(to, now, why, down=to > level)

    def _set(self, level: int, now: float, reason: str, down: bool) -> None:
        """Move the power/thermal ladder to `level`."""
        was = self.policy.level
        level = self._skip_tier(level, down, self._power)
        self._power.changed_at = now
        self._announce(self._power, was, level, reason)
        self._apply(level, self.policy.backlog_level)

    def _set_backlog(self, level: int, now: float, reason: str, down: bool) -> None:
        """Move the backlog ladder to `level`."""
        was = self.policy.backlog_level
        level = self._skip_tier(level, down, self._backlog)
        self._backlog.changed_at = now
        self._announce(self._backlog, was, level, reason)
        self._apply(self.policy.level, level)

    def _skip_tier(self, level: int, down: bool, ladder: _Ladder) -> int:
        if level != SMALL_TIER_RUNG or self.small_tier:
            return level
        if not down:
            return level - 1
        self.telemetry.trace.instant(
            "governor",
            "governor",
            "governor",
            action="no smaller tier bundled; skipped",
            level=SMALL_TIER_RUNG,
            ladder=ladder.name,
        )
        return level + 1

    def _announce(self, ladder: _Ladder, was: int, level: int, reason: str) -> None:
        names = ladder.rungs
        action = names[level] if level > was else f"restored: {names[was]} lifted"
        self.telemetry.metrics.inc("governor.changes")
        self.telemetry.metrics.gauge(f"governor.{ladder.name}_level", level)
        self.telemetry.trace.instant(
            "governor",
            "governor",
            "governor",
            action=action,
            level=level,
            ladder=ladder.name,
            reason=reason,
        )
        log.info("governor (%s): %s (%s)", ladder.name, action, reason)

    def _apply(self, level: int, backlog_level: int) -> None:
        self.policy = self._policy(level, backlog_level)
        for fn in self.listeners:
            fn(self.policy)

    def _policy(self, level: int, backlog_level: int = 0) -> Policy:
        b = self.base
        tier_rung = level >= SMALL_TIER_RUNG or backlog_level >= SMALL_TIER_RUNG
        return dataclasses.replace(
            b,
            level=level,
            backlog_level=backlog_level,
            camera_fps=b.camera_fps / 2 if level >= 1 else b.camera_fps,
            max_tokens=(
                max(8, b.max_tokens // 2) if level >= 2 or backlog_level >= 1 else b.max_tokens
            ),
            tier="small" if tier_rung and self.small_tier else "default",
            translation_paused=level >= 4 or backlog_level >= 4,
            latest_only=backlog_level >= 2,
        )

"""The slot and boot state as one state machine: a transition table, events in, a record out.

The record (`BootState`, saved as state.json) has two phases:

    STABLE   no slot on trial: the active slot boots (the factory code when there is none)
    TRIAL    a committed slot awaits its health check; each power-on costs it one boot

Every change to the record is an event fed to `BootMachine.handle`; the table `TRANSITIONS`
says which events a phase accepts and the phase that follows. An event the table does not
allow raises `BootStateError` and changes nothing (as h11's `_state.py` refuses an event its
connection state does not allow). The machine is sans-IO: it never touches a file. The boot ROM
and the agent drive it through `drive`, which feeds the event, saves the record, and when the
save fails (a full or read-only disk: any OSError) puts the record back to what is on disk and
feeds `disk_full` instead of failing. That event marks the machine degraded: this power-on
boots the last good slot (the active one) and writes nothing. A trial boot whose boot count
cannot be saved never runs, so a slot on trial cannot boot forever without being counted.

Events:
    commit(slot, bundle, deadline_s)   a slot holding a new bundle goes on trial (MAX_BOOTS)
    boot                               a power-on: counts it; a trial costs one of its boots
    boots_exhausted(reason)            a trial with no boots left (or incomplete): roll back
    health_fail(reason)                the trial slot failed its health check: roll back
    deadline(reason)                   the host did not confirm the trial in time: roll back
    confirm(slot)                      the trial slot is good: it becomes the active slot
    disk_full(reason)                  a save failed: the record is the one on disk; boot the last
                                       good slot and write nothing more
"""

from __future__ import annotations

import copy
import enum
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_BOOTS",
    "TRANSITIONS",
    "BootDecision",
    "BootMachine",
    "BootState",
    "BootStateError",
    "Event",
    "Phase",
    "boot",
    "drive",
    "parse_state",
]

log = logging.getLogger(__name__)

MAX_BOOTS = 3
SLOT_NAMES = ("a", "b")


class BootStateError(Exception):
    """An event the boot state's current phase does not allow (a bug in the caller, or a
    request in the wrong state); the record is unchanged."""


class Phase(enum.Enum):
    STABLE = "stable"
    TRIAL = "trial"


class Event(enum.Enum):
    COMMIT = "commit"
    BOOT = "boot"
    HEALTH_FAIL = "health_fail"
    DEADLINE = "deadline"
    CONFIRM = "confirm"
    BOOTS_EXHAUSTED = "boots_exhausted"
    DISK_FULL = "disk_full"


TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.STABLE, Event.COMMIT): Phase.TRIAL,
    (Phase.STABLE, Event.BOOT): Phase.STABLE,
    (Phase.STABLE, Event.DISK_FULL): Phase.STABLE,
    (Phase.TRIAL, Event.COMMIT): Phase.TRIAL,  # a resumed flash commits again: renews the boots
    (Phase.TRIAL, Event.BOOT): Phase.TRIAL,
    (Phase.TRIAL, Event.BOOTS_EXHAUSTED): Phase.STABLE,
    (Phase.TRIAL, Event.HEALTH_FAIL): Phase.STABLE,
    (Phase.TRIAL, Event.DEADLINE): Phase.STABLE,
    (Phase.TRIAL, Event.CONFIRM): Phase.STABLE,
    (Phase.TRIAL, Event.DISK_FULL): Phase.TRIAL,
}


@dataclass
class BootState:
    """The saved record (state.json); its phase follows from `trial`."""

    active: str | None = None
    trial: str | None = None
    boots_left: int = 0
    deadline_s: float = 60.0
    last: dict[str, Any] | None = None
    boot_count: int = 0

    @property
    def phase(self) -> Phase:
        return Phase.STABLE if self.trial is None else Phase.TRIAL

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()


def parse_state(raw: bytes) -> BootState:
    """A record from state.json's bytes; ValueError when it is not one (wrong type of field)."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("boot state is not a JSON object")
    state = BootState()
    slot_or_none = (lambda v: v is None or v in SLOT_NAMES, "a slot name or null")
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "active": slot_or_none,
        "trial": slot_or_none,
        "boots_left": (lambda v: type(v) is int and 0 <= v <= MAX_BOOTS, "0..MAX_BOOTS"),
        "deadline_s": (lambda v: type(v) in (int, float) and 0 < v <= 86400, "seconds"),
        "last": (lambda v: v is None or isinstance(v, dict), "an object or null"),
        "boot_count": (lambda v: type(v) is int and v >= 0, "a count"),
    }
    for key, (ok, what) in checks.items():
        if key in doc:
            if not ok(doc[key]):
                raise ValueError(f"boot state field {key!r} must be {what}, not {doc[key]!r}")
            setattr(state, key, doc[key])
    return state


@dataclass
class BootDecision:
    """What one power-on runs: a slot ("a", "b") or "factory", and whether it is a trial."""

    slot: str
    trial: bool
    boot_id: int
    degraded: bool  # a write failed: the last good slot boots and nothing was saved


class BootMachine:
    """The boot state of one store: `saved` is what state.json holds, `record` what follows
    from the events fed since; `degraded` once a save failed (see `disk_full`)."""

    def __init__(self, saved: BootState) -> None:
        self.saved = copy.deepcopy(saved)
        self.record = copy.deepcopy(saved)
        self.degraded = False

    @property
    def phase(self) -> Phase:
        return self.record.phase

    def handle(self, event: Event, **args: Any) -> BootState:
        """Apply one event to `record` (not saved); BootStateError when the table forbids it."""
        after = TRANSITIONS.get((self.phase, event))
        if after is None:
            raise BootStateError(
                f"boot state: event {event.value!r} is not allowed in phase {self.phase.value!r}"
                f" (active {self.record.active}, trial {self.record.trial})"
            )
        new = copy.deepcopy(self.record)
        _EFFECTS[event](self, new, args)
        assert new.phase is after, (event, new)
        self.record = new
        return new

    def saved_ok(self) -> None:
        """The record is now on disk."""
        self.saved = copy.deepcopy(self.record)

    def decide(self, complete: Callable[[str], bool]) -> BootDecision:
        """The slot this power-on boots, from the record (after a `boot` event)."""
        r = self.record
        if not self.degraded and r.trial is not None:
            return BootDecision(r.trial, True, r.boot_count, False)
        if r.active is not None and complete(r.active):
            return BootDecision(r.active, False, r.boot_count, self.degraded)
        return BootDecision("factory", False, r.boot_count, self.degraded)


def _commit(m: BootMachine, s: BootState, a: dict[str, Any]) -> None:
    slot = a["slot"]
    if slot not in SLOT_NAMES or slot == s.active:
        raise BootStateError(f"boot state: cannot put slot {slot!r} on trial (active {s.active})")
    if s.trial is not None and s.trial != slot:
        raise BootStateError(f"boot state: slot {s.trial} is on trial; confirm it first")
    s.trial, s.boots_left = slot, MAX_BOOTS
    s.deadline_s = float(a.get("deadline_s", 60.0))
    s.last = {"event": "commit", "slot": slot, "bundle": a.get("bundle")}


def _boot(m: BootMachine, s: BootState, a: dict[str, Any]) -> None:
    if s.trial is not None:
        if s.boots_left <= 0:
            raise BootStateError(f"boot state: slot {s.trial} has no boots left; roll back")
        s.boots_left -= 1
    s.boot_count += 1


def _rollback(m: BootMachine, s: BootState, a: dict[str, Any]) -> None:
    s.last = {"event": "rollback", "slot": s.trial, "reason": str(a.get("reason", ""))[:400]}
    s.trial, s.boots_left = None, 0


def _confirm(m: BootMachine, s: BootState, a: dict[str, Any]) -> None:
    if a.get("slot") != s.trial:
        raise BootStateError(f"nothing to confirm: slot {a.get('slot')} is not on trial")
    s.active, s.trial, s.boots_left = s.trial, None, 0
    s.last = {"event": "confirmed", "slot": s.active}


def _disk_full(m: BootMachine, s: BootState, a: dict[str, Any]) -> None:
    m.degraded = True  # `drive` has put the record back to the saved one


_EFFECTS: dict[Event, Callable[[BootMachine, BootState, dict[str, Any]], None]] = {
    Event.COMMIT: _commit,
    Event.BOOT: _boot,
    Event.BOOTS_EXHAUSTED: _rollback,
    Event.HEALTH_FAIL: _rollback,
    Event.DEADLINE: _rollback,
    Event.CONFIRM: _confirm,
    Event.DISK_FULL: _disk_full,
}


Save = Callable[[bytes], None]


def drive(
    machine: BootMachine, events: list[tuple[Event, dict[str, Any]]], save: Save
) -> OSError | None:
    """Feed `events` (all or none: a refused one restores the record and raises), then save
    the record once. A save that fails (OSError: full, read-only, I/O error) is logged and
    becomes `disk_full`, never fatal: the error is returned (None when saved)."""
    before = machine.record
    try:
        for event, args in events:
            machine.handle(event, **args)
    except BootStateError:
        machine.record = before
        raise
    try:
        save(machine.record.to_json())
    except OSError as exc:
        log.error("cannot save the boot state (%s); the last good slot boots", exc)
        machine.record = copy.deepcopy(machine.saved)  # the events never reached the disk
        machine.handle(Event.DISK_FULL, reason=str(exc))
        return exc
    machine.saved_ok()
    return None


def boot(machine: BootMachine, complete: Callable[[str], bool], save: Save) -> BootDecision:
    """One power-on, as the boot ROM does it: roll back a trial that has no boots left or is
    incomplete, count the boot, save; a failed save boots the last good slot."""
    events: list[tuple[Event, dict[str, Any]]] = []
    r = machine.record
    if r.trial is not None and (r.boots_left <= 0 or not complete(r.trial)):
        reason = (
            f"slot {r.trial} did not pass its health check within its boots"
            if r.boots_left <= 0
            else f"slot {r.trial} is incomplete"
        )
        events.append((Event.BOOTS_EXHAUSTED, {"reason": reason}))
    events.append((Event.BOOT, {}))
    drive(machine, events, save)
    return machine.decide(complete)

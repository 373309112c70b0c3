"""The boot state machine fed event sequences (hypothesis), with any write failing.

A simulated flash (bytes of state.json) sits under the machine; the boot ROM's power-on
(`bootstate.boot`) and the agent's events (`drive`) run as they do on a board, and each save
fails when the drawn sequence says so. Checked after every step: the machine agrees with what is
on the flash, a refused event changes nothing, the boot never runs an incomplete slot, a trial
slot never boots more than MAX_BOOTS times per commit, the active slot is only ever a slot that
passed a confirm, and a failed write boots the last good slot.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.agent import bootstate
from runtime.agent.bootstate import (
    MAX_BOOTS,
    TRANSITIONS,
    BootMachine,
    BootState,
    BootStateError,
    Event,
    Phase,
    drive,
    parse_state,
)


@dataclass
class Flash:
    """state.json on a flash whose writes fail on demand."""

    raw: bytes = BootState(active="a").to_json()
    fail: bool = False
    writes: int = 0

    def save(self, raw: bytes) -> None:
        if self.fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.raw, self.writes = raw, self.writes + 1

    def state(self) -> BootState:
        return parse_state(self.raw)


@dataclass
class Board:
    flash: Flash = field(default_factory=Flash)
    complete: dict[str, bool] = field(default_factory=lambda: {"a": True, "b": False})
    confirmed: set[str | None] = field(default_factory=lambda: {"a"})
    running: bootstate.BootDecision | None = None
    trial_boots: int = 0  # trial boots of the slot on trial since its last saved commit

    def power_on(self) -> bootstate.BootDecision:
        before = self.flash.state()
        decision = bootstate.boot(BootMachine(before), lambda s: self.complete[s], self.flash.save)
        after = self.flash.state()
        assert decision.slot == "factory" or self.complete[decision.slot], decision
        if self.flash.fail:
            assert after == before and decision.degraded and not decision.trial
            good = before.active if before.active and self.complete[before.active] else "factory"
            assert decision.slot == good
        if decision.trial:
            assert after.trial == decision.slot and after.boots_left == before.boots_left - 1
            self.trial_boots += 1
            assert self.trial_boots <= MAX_BOOTS
        if before.trial is not None and not self.flash.fail and not decision.trial:
            assert after.trial is None and after.last and after.last["event"] == "rollback"
        self.running = decision
        return decision

    def agent(self, event: Event, **args: object) -> None:
        """What the agent does: a machine from the flash, one event, one save."""
        before = self.flash.raw
        machine = BootMachine(self.flash.state())
        phase = machine.phase
        if (phase, event) not in TRANSITIONS:
            with pytest.raises(BootStateError):
                drive(machine, [(event, args)], self.flash.save)
            assert self.flash.raw == before and machine.record == self.flash.state()
            return
        try:
            error = drive(machine, [(event, args)], self.flash.save)
        except BootStateError:  # allowed in this phase, refused by its arguments
            assert self.flash.raw == before and machine.record == self.flash.state()
            return
        if error is not None:
            assert self.flash.fail and self.flash.raw == before and machine.degraded
            assert machine.record == self.flash.state()
            return
        after = self.flash.state()
        assert after.phase is TRANSITIONS[(phase, event)] and machine.record == after
        if event is Event.COMMIT:
            self.trial_boots = 0
        if event is Event.CONFIRM:
            self.confirmed.add(after.active)


steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["power_on", "commit", "confirm", "health_fail", "deadline", "install", "damage"]
            + [e.value for e in Event]
        ),
        st.sampled_from(["a", "b"]),
        st.booleans(),  # this step's writes fail
    ),
    max_size=40,
)


def _run(board: Board, plan: list[tuple[str, str, bool]]) -> None:
    for name, slot, fail in plan:
        board.flash.fail = fail
        if name == "power_on":
            board.power_on()
        elif name == "install":  # a new bundle lands in a slot that is neither active nor on trial
            state = board.flash.state()
            if slot not in (state.active, state.trial):
                board.complete[slot] = True
        elif name == "damage":  # a half-written slot: its slot.json is gone
            if slot != board.flash.state().active:
                board.complete[slot] = False
        elif name == "commit":
            board.agent(Event.COMMIT, slot=slot, bundle="x" * 64, deadline_s=30)
        elif name == "confirm":
            board.agent(Event.CONFIRM, slot=board.running.slot if board.running else slot)
        elif name in ("health_fail", "deadline", "boots_exhausted"):
            board.agent(Event(name), reason=f"{name} in a test")
        elif name == "disk_full":
            board.agent(Event.DISK_FULL, reason="test")
        else:
            board.agent(Event(name))
        state = board.flash.state()
        assert state.active in board.confirmed, (state, board.confirmed)
        assert 0 <= state.boots_left <= MAX_BOOTS
        assert (state.trial is None) == (state.phase is Phase.STABLE)


@settings(max_examples=400, deadline=None)
@given(steps)
def test_event_sequences_keep_a_bootable_board(plan: list[tuple[str, str, bool]]) -> None:
    _run(Board(), plan)
    board = Board()
    _run(board, plan)
    board.flash.fail = False
    decision = board.power_on()  # whatever happened, the next power-on boots a good slot
    assert decision.slot in ("a", "b", "factory")


@settings(max_examples=200, deadline=None)
@given(steps)
def test_every_write_failing_boots_the_last_good_slot(plan: list[tuple[str, str, bool]]) -> None:
    board = Board()
    board.flash.save(BootState(active="a", trial="b", boots_left=2).to_json())
    board.complete["b"] = True
    start = board.flash.raw
    _run(board, [(name, slot, True) for name, slot, _ in plan])
    assert board.flash.raw == start
    board.flash.fail = True
    assert board.power_on().slot == "a"


def test_the_table_names_every_event_and_phase() -> None:
    assert {e for _, e in TRANSITIONS} == set(Event)
    assert {p for p, _ in TRANSITIONS} == set(Phase)
    for phase in Phase:  # a write failure is always allowed and never changes the phase
        assert TRANSITIONS[(phase, Event.DISK_FULL)] is phase


def test_a_trial_boots_three_times_then_rolls_back() -> None:
    board = Board()
    board.complete["b"] = True
    board.agent(Event.COMMIT, slot="b", bundle="x" * 64, deadline_s=30)
    assert [board.power_on().slot for _ in range(5)] == ["b", "b", "b", "a", "a"]
    last = board.flash.state().last
    assert last and "did not pass its health check within its boots" in last["reason"]


def test_a_damaged_state_file_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="boots_left"):
        parse_state(b'{"active": "a", "boots_left": "3"}')
    with pytest.raises(ValueError, match="active"):
        parse_state(b'{"active": "../etc"}')

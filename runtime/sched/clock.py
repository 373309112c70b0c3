"""Clocks: the scheduler reads time through one of these, so tests run in virtual time.

`MonotonicClock` is the real one (`time.perf_counter`); its `sleep_until` waits on an event so
`wake()` can cut a wait short (the way pyserial's `cancel_read` does). `VirtualClock` only moves
when the scheduler's virtual driver (or a test) moves it: deterministic, and no test sleeps.
Times are seconds as floats from an arbitrary origin; only differences mean anything.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "VirtualClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def sleep_until(self, t: float) -> bool:
        """Block until `t` or until `wake()`; True if `t` was reached."""
        ...

    def wake(self) -> None:
        """Cut every current `sleep_until` short."""
        ...


class MonotonicClock:
    def __init__(self) -> None:
        self._event = threading.Event()

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, t: float) -> bool:
        delay = t - time.perf_counter()
        if delay <= 0:
            return True
        woken = self._event.wait(delay)
        if woken:
            self._event.clear()
        return not woken

    def wake(self) -> None:
        self._event.set()

    def to_monotonic(self, t: float) -> float:
        """`t` on this clock as `time.monotonic()` seconds, the clock other processes on the
        machine read (the HIL power capture aligns traces with it)."""
        return t - time.perf_counter() + time.monotonic()


class VirtualClock:
    """Time that moves only when told. `sleep_until` jumps there (single-threaded use)."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def advance(self, dt: float) -> None:
        if dt < 0:
            raise ValueError(f"a clock cannot go back (advance by {dt})")
        self._t += dt

    def set(self, t: float) -> None:
        self._t = max(self._t, t)

    def sleep_until(self, t: float) -> bool:
        self.set(t)
        return True

    def wake(self) -> None:
        pass

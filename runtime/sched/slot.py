"""The latest-frame slot: the camera puts, vision takes; a frame nobody took is dropped.

One slot, never a queue: `put` replaces what is there and counts the replaced frame as stale
if no one took it; `take` empties the slot. Memory is bounded by one frame whatever the rates.
A lock guards the swap (two statements), held for nanoseconds; the camera never waits on vision.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["LatestSlot", "Stamped"]

T = TypeVar("T")


@dataclass(frozen=True)
class Stamped(Generic[T]):
    value: T
    t: float
    seq: int


class LatestSlot(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: Stamped[T] | None = None
        self._seq = 0
        self.stale = 0
        self.taken = 0

    def put(self, value: T, t: float) -> None:
        with self._lock:
            if self._item is not None:
                self.stale += 1
            self._seq += 1
            self._item = Stamped(value, t, self._seq)

    def take(self) -> Stamped[T] | None:
        with self._lock:
            item, self._item = self._item, None
        if item is not None:
            self.taken += 1
        return item

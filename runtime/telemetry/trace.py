"""Spans, instants and counter tracks in Chrome trace-event JSON (opens in Perfetto).

How it works: every event is appended to one list (a list append is atomic in CPython, so
threads need no lock) with timestamps in microseconds from the trace's start, read from the
injected clock. A span is a complete event (`ph: "X"`) with a duration; a track is a thread id
in the file, named once with a metadata event, so capture, inference workers and the display
each get their own row. `counter(name, values)` adds a counter track (`ph: "C"`), e.g. power.

The file format is the "JSON object" form: {"traceEvents": [...], "displayTimeUnit": "ms",
"otherData": {...}}. With a real clock, `otherData.origin_monotonic_s` is the machine's
`time.monotonic()` at trace zero, so a tool that recorded something else on that clock (the
HIL power capture) puts both on one timeline; a virtual clock's trace has none. Each span's `args` carry what the stage did (tokens, frame number, ...).
`max_events` bounds memory on a long run; events past it are counted in `dropped`, not stored.

Readers (reports, power profiling) use `spans()`, which returns `Span` records in seconds.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.sched.clock import Clock

__all__ = ["Span", "Trace"]

PID = 1


@dataclass(frozen=True)
class Span:
    """One finished stage: name, category, track, start and duration in seconds, its args."""

    name: str
    cat: str
    track: str
    start: float
    dur: float
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.start + self.dur


class Trace:
    def __init__(self, clock: Clock, max_events: int = 200_000) -> None:
        self.clock = clock
        self.origin = clock.now()
        to_monotonic = getattr(clock, "to_monotonic", None)
        self.origin_monotonic: float | None = (
            float(to_monotonic(self.origin)) if callable(to_monotonic) else None
        )
        self.max_events = max_events
        self.dropped = 0
        self._events: list[dict[str, Any]] = []
        self._tracks: dict[str, int] = {}
        self._lock = threading.Lock()

    def _us(self, t: float) -> float:
        return round((t - self.origin) * 1e6, 3)

    def _tid(self, track: str) -> int:
        tid = self._tracks.get(track)
        if tid is None:
            with self._lock:
                tid = self._tracks.setdefault(track, len(self._tracks) + 1)
        return tid

    def _add(self, event: dict[str, Any]) -> None:
        if len(self._events) >= self.max_events:
            self.dropped += 1
            return
        self._events.append(event)

    def complete(
        self,
        name: str,
        start: float,
        end: float,
        cat: str = "stage",
        track: str = "main",
        **args: Any,
    ) -> None:
        """A span that already happened, from `start` to `end` (clock seconds)."""
        event = {
            "name": name,
            "cat": cat,
            "ph": "X",
            "ts": self._us(start),
            "dur": round(max(0.0, end - start) * 1e6, 3),
            "pid": PID,
            "tid": self._tid(track),
        }
        if args:
            event["args"] = args
        self._add(event)

    @contextmanager
    def span(
        self, name: str, cat: str = "stage", track: str = "main", **args: Any
    ) -> Iterator[dict[str, Any]]:
        """Time the body as a span; the yielded dict's items are added to its args."""
        start = self.clock.now()
        extra: dict[str, Any] = {}
        try:
            yield extra
        finally:
            self.complete(name, start, self.clock.now(), cat, track, **args, **extra)

    def instant(self, name: str, cat: str = "event", track: str = "main", **args: Any) -> None:
        event = {
            "name": name,
            "cat": cat,
            "ph": "i",
            "s": "g",
            "ts": self._us(self.clock.now()),
            "pid": PID,
            "tid": self._tid(track),
        }
        if args:
            event["args"] = args
        self._add(event)

    def counter(self, name: str, t: float | None = None, **values: float) -> None:
        ts = self._us(self.clock.now() if t is None else t)
        self._add({"name": name, "ph": "C", "ts": ts, "pid": PID, "args": values})

    def events(self) -> list[dict[str, Any]]:
        """The trace events with the track names, sorted by time (metadata first)."""
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": PID, "args": {"name": "ocula runtime"}}
        ]
        for track, tid in sorted(self._tracks.items(), key=lambda kv: kv[1]):
            meta.append(
                {"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": track}}
            )
            meta.append(
                {
                    "name": "thread_sort_index",
                    "ph": "M",
                    "pid": PID,
                    "tid": tid,
                    "args": {"sort_index": tid},
                }
            )
        return meta + sorted(list(self._events), key=lambda e: float(e["ts"]))

    def spans(self, cat: str | None = None) -> list[Span]:
        names = {tid: track for track, tid in self._tracks.items()}
        out = []
        for e in list(self._events):
            if e["ph"] != "X" or (cat is not None and e["cat"] != cat):
                continue
            out.append(
                Span(
                    e["name"],
                    e["cat"],
                    names.get(e["tid"], "?"),
                    e["ts"] / 1e6,
                    e["dur"] / 1e6,
                    dict(e.get("args", {})),
                )
            )
        return out

    def instants(self, name: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in list(self._events) if e["ph"] == "i" and (name is None or e["name"] == name)
        ]

    def to_json(self, other: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"traceEvents": self.events(), "displayTimeUnit": "ms"}
        data["otherData"] = {"dropped_events": self.dropped, **(other or {})}
        if self.origin_monotonic is not None:
            data["otherData"]["origin_monotonic_s"] = round(self.origin_monotonic, 6)
        return data

    def write(self, path: str | Path, other: dict[str, Any] | None = None) -> Path:
        """Write the trace atomically (temp file + rename); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(other)))
        os.replace(tmp, path)
        return path

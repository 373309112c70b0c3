"""Named, timed steps of a long export, reported to whoever shows progress.

Libraries never print: the pipeline calls `steps.run(name)` around each long step and
`steps.note(text)` for a fact worth showing; a reporter (the CLI's, on stderr) decides how it
looks. Without a reporter the steps are logged.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Steps:
    # reporter(event, name, seconds): event is "start", "done" or "note"
    reporter: Callable[[str, str, float], None] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def run(self, name: str) -> Iterator[None]:
        self._emit("start", name, 0.0)
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.timings[name] = self.timings.get(name, 0.0) + dt
        self._emit("done", name, dt)

    def note(self, text: str) -> None:
        self._emit("note", text, 0.0)

    def _emit(self, event: str, name: str, seconds: float) -> None:
        if self.reporter is not None:
            self.reporter(event, name, seconds)
        elif event == "done":
            log.info("%s: %.1f s", name, seconds)
        elif event == "note":
            log.info("%s", name)

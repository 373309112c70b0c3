"""The small interfaces a HIL test reaches a board through, as labgrid's protocol classes.

A target (`hil.targets.BoardUnderTest`) holds drivers bound to its resources (`hil.drivers`: a
sim board, a fixture MCU's pins, a labgrid place, a plain serial line); tests, suites and the
pytest plugin ask a target for a protocol (`board.power`, `board.reset`, `board.serial`) and
never ask what kind of board it is. A protocol a target lacks is None: the caller says which
resource would provide it.
"""

from __future__ import annotations

from typing import Any, Protocol


class PowerProtocol(Protocol):
    """The board's power switch: a sim board's own, or the fixture MCU's power pin."""

    def on(self) -> None: ...

    def off(self) -> None: ...

    def cycle(self) -> None:
        """Off, held off long enough for the board to lose power, then on."""


class ResetProtocol(Protocol):
    """The board's reset line: asserted, then released (the board boots again)."""

    def reset(self) -> None: ...


class ConsoleProtocol(Protocol):
    """The board's serial line: `open()` gives a fresh open port (the link client opens it
    again after every reset); `name` is the PORT it was opened from, for messages."""

    name: str

    def open(self) -> Any: ...

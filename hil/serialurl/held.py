"""What the registry's URL handlers share: opening a port holds what its URL names."""

from __future__ import annotations

from typing import Any

from hil.drivers import Held
from hil.ports import hold


class HeldPort:
    """A pyserial port whose opening holds its URL's resource through the port registry
    (`hil.ports.hold`: a sim board started, a labgrid place acquired) and opens the port that
    resource gives (`Held.port`) with the pyserial class it is mixed into; closing the port
    releases the resource. `_held_changed` tells a subclass what it holds now (or None)."""

    _held: Held | None = None
    _port: Any
    portstr: Any

    def _held_changed(self, held: Held | None) -> None:
        pass

    def open(self) -> None:
        url = self._port
        self._held = hold(url)
        self._held_changed(self._held)
        self.portstr = self._held.port
        try:
            super().open()  # type: ignore[misc]
        except BaseException:
            self._release()
            raise
        finally:
            self.portstr = url

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        self._release()

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None
            self._held_changed(None)

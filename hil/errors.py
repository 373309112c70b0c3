"""Errors of the HIL tools; all derive from runtime.errors.OculaError via `HilError`.

The split follows failure triage: an error's class says which part of the rig failed, so a
report can tell "the board is broken" (flash, boot hang, assertion) from "the rig is broken"
(link, power), and only the latter may be retried. The category is set once on the four
triage classes; the specific errors below them inherit it.
"""

from __future__ import annotations

from runtime.errors import OculaError

__all__ = [
    "BootHang",
    "FixtureError",
    "FlashFailure",
    "HilError",
    "InventoryError",
    "LinkFailure",
    "PortError",
    "PowerFailure",
]


class HilError(OculaError):
    """A rig, a fixture or a board under test did not do what was asked."""

    category = "hil"


# -- the rig (infrastructure: may be retried when asked) ---------------------------------------
class LinkFailure(HilError):
    """The line to a board or fixture broke, timed out or carried garbage."""

    category = "link"


class PortError(LinkFailure):
    """A serial port does not exist, is busy, or cannot be opened."""


class InventoryError(LinkFailure):
    """A board inventory file is unreadable or names no free board."""


class PowerFailure(HilError):
    """Power samples are missing, have gaps, or cannot be synchronised with the board."""

    category = "power"


class FixtureError(PowerFailure):
    """The rig fixture is missing, runs other firmware, or has no sensor."""


# -- the board under test ----------------------------------------------------------------------
class FlashFailure(HilError):
    """A bundle did not flash, verify or boot into the expected slot."""

    category = "flash"


class BootHang(HilError):
    """A board did not answer hello within the deadline after power-up or reset."""

    category = "boot"

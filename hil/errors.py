"""Errors of the HIL tools; all derive from runtime.errors.OculaError via `HilError`.

The split follows failure triage: an error's class says which part of the rig failed, so a
report can tell "the board is broken" (flash, boot hang, assertion) from "the rig is broken"
(link, power), and only the latter may be retried.
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


class PortError(HilError):
    """A serial port does not exist, is busy, or cannot be opened."""

    category = "link"


class LinkFailure(HilError):
    """The line to a board or fixture broke, timed out or carried garbage."""

    category = "link"


class FixtureError(HilError):
    """The rig fixture is missing, runs other firmware, or has no sensor."""

    category = "power"


class PowerFailure(HilError):
    """Power samples are missing, have gaps, or cannot be synchronised with the board."""

    category = "power"


class FlashFailure(HilError):
    """A bundle did not flash, verify or boot into the expected slot."""

    category = "flash"


class BootHang(HilError):
    """A board did not answer hello within the deadline after power-up or reset."""

    category = "boot"


class InventoryError(HilError):
    """A board inventory file is unreadable or names no free board."""

    category = "link"

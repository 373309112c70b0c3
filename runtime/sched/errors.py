"""Errors of the scheduler: a budget that cannot be met, or the API used the wrong way."""

from __future__ import annotations

from runtime.errors import OculaError, UsageError

__all__ = ["BudgetError", "SchedError", "SchedUsageError"]


class SchedError(OculaError):
    """Root of the scheduler's deliberate errors."""


class BudgetError(SchedError):
    """A model or buffer does not fit the board profile's memory or power budget."""


class SchedUsageError(SchedError, UsageError):
    """A task declared the wrong way (a period <= 0, a duplicate name, a run after stop)."""

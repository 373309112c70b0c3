"""Errors of the scheduler: the API used the wrong way."""

from __future__ import annotations

from runtime.errors import OculaError, UsageError

__all__ = ["SchedError", "SchedUsageError"]


class SchedError(OculaError):
    """Root of the scheduler's deliberate errors."""


class SchedUsageError(SchedError, UsageError):
    """A task declared the wrong way (a period <= 0, a duplicate name, a run after stop)."""

"""Errors of the exporter. `ExportError` is the root; the message names the input and the fix."""

from __future__ import annotations

from runtime.errors import OculaError, UsageError


class ExportError(OculaError):
    """A source model, option or output folder the exporter cannot use."""


class ValidationFailed(ExportError):
    """The artifact does not compute what its PyTorch source computes, within the thresholds."""


class BudgetError(ExportError):
    """The artifact would not fit the board's budget."""


class ExportUsageError(ExportError, UsageError):
    """An option value that is not allowed (unknown quant, block size...)."""

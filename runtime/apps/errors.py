"""Errors of the apps: a model an app needs is missing, or the app was asked the wrong way."""

from __future__ import annotations

from runtime.errors import OculaError, UsageError

__all__ = ["AppError", "AppUsageError", "MissingModel"]


class AppError(OculaError):
    """Root of the apps' deliberate errors."""


class MissingModel(AppError):
    """The bundle (or artifacts folder) has no model of a kind the app needs."""


class AppUsageError(AppError, UsageError):
    """An unknown app, a missing device, or an option out of range."""

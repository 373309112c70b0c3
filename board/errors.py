"""Errors of the board tools; all derive from runtime.errors.OculaError."""

from __future__ import annotations

from runtime.errors import OculaError, ProfileError

__all__ = ["BoardError", "ProfileError"]


class BoardError(OculaError):
    """A bundle, a flash or a board did not do what was asked."""

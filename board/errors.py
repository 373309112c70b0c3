"""Errors of the board tools; all derive from runtime.errors.OculaError."""

from __future__ import annotations

from runtime.errors import OculaError, ProfileError

__all__ = ["BadReply", "BoardError", "BoardRefused", "LinkLost", "PortUnavailable", "ProfileError"]


class BoardError(OculaError):
    """A bundle, a flash or a board did not do what was asked."""


class LinkLost(BoardError):
    """The line to the board was cut or the board stopped answering; the flash can resume."""


class PortUnavailable(LinkLost):
    """The port could not be opened at all (missing, busy, no permission) before the board
    ever answered: a wrong PORT, so it is reported at once, not retried."""


class BoardRefused(BoardError):
    """The board answered a request with an error (a refused bundle, a bad state); `op` is the
    request and `kind` the class of the board's error (runtime.agent.api lists them)."""

    def __init__(self, message: str, op: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.op = op
        self.kind = kind


class BadReply(BoardError):
    """The board answered with a reply its request does not declare (runtime.agent.api): an
    agent of another version, or a bug in one."""

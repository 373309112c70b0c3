"""Errors of the device agent: a refused bundle, a bad request, a broken store."""

from __future__ import annotations

from runtime.errors import OculaError

__all__ = ["AgentError", "BundleRejected", "RequestError", "StoreError"]


class AgentError(OculaError):
    """Root of the agent's deliberate errors."""


class RequestError(AgentError):
    """A request from the link was malformed, too large or not allowed in this state."""


class BundleRejected(AgentError):
    """A bundle manifest failed a check: signature, board, budget, paths or limits."""


class StoreError(AgentError):
    """The chunk or slot store could not do what was asked (missing chunk, full disk)."""

"""Errors of the link.

`LinkError` is the root. The split follows what the caller does next: `LinkTimeout` (no answer
in time: the line may be cut; retry or resume), `LinkClosed` (the peer reset the link, refused
the hello or broke the protocol: reconnect), and `LinkUsage` (the API was called the wrong way:
a bug in the caller, like h11's LocalProtocolError).
"""

from __future__ import annotations

from runtime.errors import OculaError, UsageError

__all__ = ["LinkClosed", "LinkError", "LinkTimeout", "LinkUsage"]


class LinkError(OculaError):
    """The link to the peer failed; the message names the port and what to do."""


class LinkTimeout(LinkError):
    """The peer did not answer before the deadline (a cut line, a hung or busy peer)."""


class LinkClosed(LinkError):
    """The link is down: the peer reset it (it restarted), refused the hello, or misbehaved."""


class LinkUsage(LinkError, UsageError):
    """The link's API was misused: a message over the size limit, a send on a closed endpoint."""

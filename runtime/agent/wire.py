"""The agent's view of the link: `endpoint(io)` is the link's blocking `Endpoint` on `io`.

One place that builds it, so the agent on the device and the flasher on the host use the same
settings. `io` is a file descriptor or a pyserial-like port.
"""

from __future__ import annotations

from typing import Any

from runtime.link.endpoint import Endpoint

__all__ = ["endpoint"]


# the largest request or reply: an rpc header, a blob, the length prefix; a bigger message from
# the peer is refused by the connection before it is buffered
MAX_MESSAGE = 2 + 8192 + 64 * 1024


def endpoint(io: Any) -> Endpoint:
    return Endpoint(io, max_message=MAX_MESSAGE)

"""The error the fused graph builder raises for models or options it cannot build."""

from __future__ import annotations

from runtime.errors import OculaError


class FusedError(OculaError):
    """The model or an option cannot be built as a fused graph; the message says why and what to do."""

"""The error the fused graph builder raises for models or options it cannot build."""

from __future__ import annotations

from export.errors import ExportError


class FusedError(ExportError):
    """The model or an option cannot be built as a fused graph; the message says why and what to do."""

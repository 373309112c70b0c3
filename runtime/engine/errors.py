"""Errors of the engines: bad artifacts, bad inputs, bad parameters.

`EngineError` is the root. `ArtifactError` means the files on flash are not what the manifest
promises (missing, corrupt, newer schema, unknown graph); `InputError` means the caller handed
over something the model cannot take (too long a prompt, audio at the wrong rate, NaNs);
`EngineUsageError` is misuse of the API (out-of-range sampling parameters, a step after close).
"""

from __future__ import annotations

from runtime.errors import OculaError, UsageError

__all__ = ["ArtifactError", "EngineError", "EngineUsageError", "InputError"]


class EngineError(OculaError):
    """Root of the engines' deliberate errors."""


class ArtifactError(EngineError):
    """An artifact folder or model file is missing, corrupt, or not one this runtime can run."""


class InputError(EngineError):
    """A prompt or an audio buffer that the model cannot take, with what to do about it."""


class EngineUsageError(EngineError, UsageError):
    """A parameter out of range, or a call in the wrong state."""

"""Errors of the device interfaces: a device that cannot be opened, is gone, or gives bad data."""

from __future__ import annotations

from runtime.errors import OculaError

__all__ = ["DeviceError", "DeviceLost", "ImageError", "IoError"]


class IoError(OculaError):
    """Root of the device interfaces' deliberate errors."""


class DeviceError(IoError):
    """A device cannot be opened or configured (the message names it and the fix)."""


class DeviceLost(IoError):
    """A device that was working went away mid-run (unplugged, folder deleted)."""


class ImageError(IoError):
    """A file that should be an image is not one this runtime can decode."""

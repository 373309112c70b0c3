"""Errors of the aarch64 emulation tooling: each names the step that failed and the fix."""

from __future__ import annotations

from runtime.errors import OculaError


class Arm64Error(OculaError):
    """A step of the aarch64 device test failed; the message names the step and what to do."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step '{step}': {message}")
        self.step = step

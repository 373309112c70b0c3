"""The root of every error Ocula raises on purpose.

Each package has its own root (ExportError, BoardError, HilError, ...) derived from
`OculaError`, so the CLI can turn any of them into one line and a non-zero exit. Anything
else that escapes is a bug in Ocula and keeps its traceback.

`UsageError` is misuse of the API by the caller (a programming mistake, like h11's
LocalProtocolError); the other subclasses are bad input or a misbehaving device.
"""

from __future__ import annotations


class OculaError(Exception):
    """Bad input, a bad file or a misbehaving device: the message says what and what to do."""

    exit_code = 1


class UsageError(OculaError):
    """The command or API was called the wrong way."""

    exit_code = 2


class ProfileError(OculaError):
    """A board profile is missing, unreadable, or fails its schema."""

"""Ed25519 signing keys for bundles (host side, with the `cryptography` package).

A key pair is two files: the private key in PEM (PKCS#8, readable only by its owner) and the
public key in PEM beside it (`NAME.pub`). Boards hold the 32 raw bytes of the public key
(`raw_public`) and verify with the runtime's pure-Python verifier, so the device needs no
native crypto library.
"""

from __future__ import annotations

import os
from pathlib import Path

from board.errors import BoardError

__all__ = ["generate", "load_private", "load_public_raw", "sign"]


def generate(path: Path, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair at `path` and `path.pub`; refuse to overwrite unless `force`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = path.with_name(path.name + ".pub")
    for p in (path, pub):
        if p.exists() and not force:
            raise BoardError(f"{p} already exists; choose another name or pass --force")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path, pub


def load_private(path: Path):  # -> Ed25519PrivateKey (cryptography is imported lazily)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise BoardError(f"{path}: no such key file; make one with 'ocula keygen'") from exc
    except (ValueError, TypeError) as exc:
        raise BoardError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BoardError(f"{path}: not an Ed25519 key; make one with 'ocula keygen'")
    return key


def sign(path: Path, message: bytes) -> bytes:
    return bytes(load_private(path).sign(message))


def load_public_raw(path: Path) -> bytes:
    """The 32 raw bytes of a public key file (PEM, or a private key whose public half is used)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise BoardError(f"{path}: no such key file") from exc
    if len(data) == 32:
        return data
    try:
        if b"PRIVATE" in data:
            key = serialization.load_pem_private_key(data, password=None)
            if isinstance(key, Ed25519PrivateKey):
                key = key.public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise BoardError(f"{path}: not a PEM Ed25519 key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BoardError(f"{path}: not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

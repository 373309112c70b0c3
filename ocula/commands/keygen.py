"""`ocula keygen KEY`: an Ed25519 key pair for signing bundles (KEY and KEY.pub)."""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from ocula.argtypes import out_file


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "keygen",
        parents=[common],
        help="make a key pair for signing bundles",
        description="Write an Ed25519 private key to KEY (mode 0600) and its public key to "
        "KEY.pub. Sign bundles with 'ocula bundle --key KEY'; give boards KEY.pub.",
    )
    p.add_argument("key", metavar="KEY", type=out_file, help="where to write the private key")
    p.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    p.set_defaults(func=_keygen)


def _keygen(args: argparse.Namespace) -> int:
    from board import keys
    from ocula.argtypes import Bad
    from runtime.errors import UsageError

    try:  # KEY.pub too, so a failure cannot leave a private key without its public half
        out_file(f"{args.key}.pub")
    except Bad as exc:
        raise UsageError(f"{args.key}: its public key {exc}") from None
    priv, pub = keys.generate(args.key, force=args.force)
    fingerprint = hashlib.sha256(keys.load_public_raw(pub)).hexdigest()[:16]
    print(f"private key: {priv}  (keep it secret)")
    print(f"public key:  {pub}  (fingerprint {fingerprint})")
    return 0

"""The device's pure-Python Ed25519 verifier against `cryptography` and RFC 8032 vectors."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.agent import ed25519

RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)

# RFC 8032 section 7.1, TEST 1 and TEST 2 (secret key, public key, message, signature).
RFC_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC_VECTORS)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert key.public_key().public_bytes(*RAW).hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    assert ed25519.verify(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature))


KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in range(1, 4)]


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 2), st.integers(0, 2))
def test_agrees_with_cryptography(message: bytes, signer: int, checker: int) -> None:
    sig = KEYS[signer].sign(message)
    pub = KEYS[checker].public_key().public_bytes(*RAW)
    assert ed25519.verify(pub, message, sig) == (signer == checker)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 64 * 8 - 1))
def test_any_flipped_signature_bit_fails(message: bytes, bit: int) -> None:
    sig = bytearray(KEYS[0].sign(message))
    sig[bit // 8] ^= 1 << (bit % 8)
    assert not ed25519.verify(KEYS[0].public_key().public_bytes(*RAW), message, bytes(sig))


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64), st.binary())
def test_garbage_never_raises(pub: bytes, sig: bytes, message: bytes) -> None:
    assert ed25519.verify(pub, message, sig) in (True, False)


def test_non_canonical_s_is_refused() -> None:
    message = b"bundle"
    sig = KEYS[0].sign(message)
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(sig[32:], "little") + order
    forged = sig[:32] + s.to_bytes(32, "little")
    assert not ed25519.verify(KEYS[0].public_key().public_bytes(*RAW), message, forged)


def test_wrong_lengths_are_refused() -> None:
    pub = KEYS[0].public_key().public_bytes(*RAW)
    sig = KEYS[0].sign(b"x")
    assert not ed25519.verify(pub[:31], b"x", sig)
    assert not ed25519.verify(pub, b"x", sig[:63])

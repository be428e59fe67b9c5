"""Ed25519 keys as the contracts see them: the one set of key helpers.

A private key is given as a ``cryptography`` key object, a 32-byte seed or pytoniq's 64-byte key
(seed followed by the public key). A public key is stored on chain as a 256-bit unsigned integer
(the raw 32 bytes, big-endian) and may be given as that integer, the 32 raw bytes or a key object.
Signatures are Ed25519 over a 32-byte hash (what CHKSIGNU checks).
"""
from __future__ import annotations

import functools
from typing import Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import CryptoError

KeyLike = Union[Ed25519PrivateKey, bytes]                  # a private key
PublicLike = Union[int, bytes, Ed25519PublicKey]           # a public key


def signing_key(key: KeyLike) -> Ed25519PrivateKey:
    """The private key object from a key object, a 32-byte seed or pytoniq's 64-byte key."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    if len(key) == 64:
        key = key[:32]
    if len(key) != 32:
        raise ValueError("an Ed25519 private key is a 32-byte seed")
    return Ed25519PrivateKey.from_private_bytes(bytes(key))


def wallet_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, pytoniq's 64-byte private key: the seed followed by the public key) of a 32-byte
    seed, the pair wallets sign with."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    public = signing_key(seed).public_key().public_bytes_raw()
    return public, bytes(seed) + public


def public_key(key: PublicLike) -> Ed25519PublicKey:
    """The public key object from a key object, its 32 raw bytes or its 256-bit integer."""
    if isinstance(key, Ed25519PublicKey):
        return key
    return Ed25519PublicKey.from_public_bytes(key_int(key).to_bytes(32, "big"))


def key_int(key: PublicLike) -> int:
    """A PUBLIC key as the contracts store it (uint256); bytes are the 32 raw public-key bytes."""
    if isinstance(key, Ed25519PublicKey):
        return int.from_bytes(key.public_bytes_raw(), "big")
    if isinstance(key, (bytes, bytearray)):
        if len(key) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return int.from_bytes(key, "big")
    if not 0 <= key < 2**256:
        raise ValueError("an Ed25519 public key is a 256-bit unsigned integer")
    return key


def public_key_int(key: Union[KeyLike, Ed25519PublicKey, int]) -> int:
    """The public key (uint256, as the contracts store it) of a PRIVATE key (object, seed or 64-byte
    key); a public key object or an integer is taken as it is."""
    if isinstance(key, int):
        return key_int(key)
    if isinstance(key, (bytes, bytearray, Ed25519PrivateKey)):
        key = signing_key(key).public_key()
    return key_int(key)


def sign(key: KeyLike, digest: bytes) -> bytes:
    """A 64-byte Ed25519 signature of ``digest`` (a cell's representation hash). Made by libsodium
    (as :func:`verify` checks): Ed25519 signatures are deterministic, so the bytes are OpenSSL's,
    in two thirds of its time and without holding the interpreter lock."""
    seed = key.private_bytes_raw() if isinstance(key, Ed25519PrivateKey) else bytes(key)[:32]
    if len(seed) != 32:
        raise ValueError("an Ed25519 private key is a 32-byte seed")
    return crypto_sign(bytes(digest), _secret(seed))[:64]


@functools.lru_cache(maxsize=64)
def _secret(seed: bytes) -> bytes:
    """libsodium's 64-byte secret key (seed ‖ public key) of a seed, derived once per key."""
    return crypto_sign_seed_keypair(seed)[1]


def raw_public(key: PublicLike) -> bytes:
    """The 32 raw bytes of a public key given in any of its forms."""
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes_raw()
    return key_int(key).to_bytes(32, "big")


def verify(key: PublicLike, signature: bytes, digest: bytes) -> bool:
    """Whether ``signature`` is ``key``'s over ``digest``; a malformed key or signature is False.

    Checked by libsodium (PyNaCl, which pytoniq-core installs): on the services' hot paths (a
    receipt per job, vouchers) it verifies in half the time of OpenSSL's Ed25519 here, and it is
    stricter, refusing besides a small-order key or signature point, which no real key makes
    (tests/test_keys.py checks it agrees with ``cryptography`` on real keys and tampered signatures)."""
    if len(signature) != 64:
        return False
    try:
        crypto_sign_open(bytes(signature) + bytes(digest), raw_public(key))
        return True
    except (CryptoError, ValueError, TypeError):
        return False

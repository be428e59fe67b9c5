"""wrappers/keys.py, the one set of Ed25519 helpers: every form of a key gives the same uint256 the
contracts store, signatures verify only with the right key and digest, and a wallet key pair is
what libsodium (pytoniq's signer) derives from the seed."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from nacl.bindings import crypto_sign_seed_keypair

from wrappers import keys as K

seeds = st.binary(min_size=32, max_size=32)


@settings(max_examples=50, deadline=None)
@given(seeds)
def test_every_form_of_a_key_names_the_same_public_key(seed):
    public, private64 = crypto_sign_seed_keypair(seed)
    want = int.from_bytes(public, "big")
    obj = K.signing_key(seed)
    assert K.public_key_int(seed) == K.public_key_int(private64) == K.public_key_int(obj) == want
    assert K.public_key_int(obj.public_key()) == K.key_int(public) == K.key_int(want) == want
    assert K.wallet_keypair(seed) == (public, private64)


@settings(max_examples=50, deadline=None)
@given(seeds, seeds, st.binary(min_size=32, max_size=32))
def test_a_signature_verifies_with_its_key_and_digest_only(a, b, digest):
    sig = K.sign(a, digest)
    assert K.verify(K.public_key_int(a), sig, digest) and K.verify(crypto_sign_seed_keypair(a)[0], sig, digest)
    assert K.verify(K.public_key_int(b), sig, digest) == (a == b)
    assert not K.verify(K.public_key_int(a), sig, bytes(x ^ 1 for x in digest))
    assert not K.verify(K.public_key_int(a), sig[:-1], digest)          # malformed: False, not an exception


@settings(max_examples=100, deadline=None)
@given(seeds, st.binary(min_size=32, max_size=32), st.integers(0, 63), st.integers(1, 255))
def test_verify_agrees_with_openssl_on_real_keys_and_tampered_signatures(seed, digest, at, flip):
    """verify() checks with libsodium; on every real key, signature and tampering it says what
    OpenSSL's check (``cryptography``) says. A signature is exactly 64 bytes: one with a byte more
    is refused even though libsodium's combined form would read the extra byte as the message's."""
    from cryptography.exceptions import InvalidSignature

    def openssl(sig: bytes) -> bool:
        try:
            K.public_key(K.public_key_int(seed)).verify(sig, digest)
            return True
        except InvalidSignature:
            return False

    sig = K.sign(seed, digest)
    bad = sig[:at] + bytes((sig[at] ^ flip,)) + sig[at + 1:]
    for s_ in (sig, bad):
        assert K.verify(K.public_key_int(seed), s_, digest) == openssl(s_)
    assert K.verify(seed_public(seed), sig, digest)
    assert not K.verify(K.public_key_int(seed), sig + digest[:1], digest[1:])


@settings(max_examples=50, deadline=None)
@given(seeds, st.binary(min_size=0, max_size=64))
def test_a_signature_is_openssls_byte_for_byte_from_every_form_of_the_key(seed, digest):
    """sign() signs with libsodium; Ed25519 is deterministic, so the bytes are those OpenSSL's
    signer (``cryptography``) makes, whichever form the private key is given in."""
    want = K.signing_key(seed).sign(digest)
    _public, private64 = crypto_sign_seed_keypair(seed)
    assert K.sign(seed, digest) == K.sign(private64, digest) == K.sign(K.signing_key(seed), digest) == want
    with pytest.raises(ValueError):
        K.sign(seed[:31], digest)


def seed_public(seed: bytes):
    return K.signing_key(seed).public_key()          # the key object form, as the services cache it


def test_a_small_order_key_verifies_nothing():
    """The identity point as a public key: with S = 0 and R = the identity, OpenSSL accepts the
    signature for any message; libsodium refuses small-order keys and points, and so does verify()."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    identity = (1).to_bytes(32, "little")
    sig = identity + bytes(32)
    for digest in (b"\x07" * 32, bytes(32)):
        Ed25519PublicKey.from_public_bytes(identity).verify(sig, digest)     # OpenSSL: no exception
        assert not K.verify(identity, sig, digest)


def test_bad_keys_are_refused():
    with pytest.raises(ValueError):
        K.signing_key(b"\x01" * 31)
    with pytest.raises(ValueError):
        K.key_int(b"\x01" * 33)
    with pytest.raises(ValueError):
        K.key_int(2**256)
    with pytest.raises(ValueError):
        K.wallet_keypair(b"\x01" * 64)

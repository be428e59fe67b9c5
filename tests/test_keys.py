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


def test_bad_keys_are_refused():
    with pytest.raises(ValueError):
        K.signing_key(b"\x01" * 31)
    with pytest.raises(ValueError):
        K.key_int(b"\x01" * 33)
    with pytest.raises(ValueError):
        K.key_int(2**256)
    with pytest.raises(ValueError):
        K.wallet_keypair(b"\x01" * 64)

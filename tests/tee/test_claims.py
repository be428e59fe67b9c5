"""Claims encoding: version 0 is COCOON's raw key; version 1 is strict TLV."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, strategies as st

from node.tee.claims import Claims, ClaimsError, decode, encode, report_data

KEY = bytes(range(32))


def test_v0_is_the_raw_key_like_cocoon():
    c = Claims(KEY)
    assert c.version == 0 and encode(c) == KEY
    assert report_data(encode(c)) == hashlib.sha512(KEY).digest()
    assert decode(KEY) == c


def test_v1_round_trip():
    c = Claims(KEY, role="worker", model_hash=b"\x01" * 32, operator="EQabc")
    enc = encode(c)
    assert enc[0] == 1 and decode(enc) == c and c.report_data() == hashlib.sha512(enc).digest()


@given(
    role=st.sampled_from([None, "worker", "proxy", "client"]),
    model=st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
    op=st.one_of(st.none(), st.text(max_size=40)),
)
def test_round_trip_property(role, model, op):
    c = Claims(KEY, role, model, op)
    assert decode(encode(c)) == c


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02" + KEY,  # unknown version
        b"\x01",  # no key
        b"\x01\x01\x00\x20" + KEY[:10],  # truncated value
        b"\x01\x01\x00",  # truncated header
        b"\x01\x02\x00\x06worker\x01\x00\x20" + KEY,  # out of order
        b"\x01\x01\x00\x20" + KEY + b"\x09\x00\x00",  # unknown tag
        b"\x01\x01\x00\x20" + KEY,  # v1 with key only must be v0
        b"\x01\x01\x00\x20" + KEY + b"\x02\x00\x05admin",  # unknown role
        b"\x01\x01\x00\x10" + KEY[:16],  # short key
        bytes(33),
    ],
)
def test_malformed_claims_are_refused(data):
    with pytest.raises(ClaimsError):
        decode(data)


def test_constructor_validates():
    with pytest.raises(ClaimsError):
        Claims(b"short")
    with pytest.raises(ClaimsError):
        Claims(KEY, model_hash=b"x")

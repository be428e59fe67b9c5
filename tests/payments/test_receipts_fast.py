"""A receipt signed and checked without pytoniq cells (node/payments/receipts.py) is byte for byte the
one built with cells, and the check refuses every change to it."""
from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pytoniq_core import Address, Cell

from node.payments.pricing import Usage
from node.payments.receipts import SIGNATURE_AT, Receipt
from wrappers import stake as S

u32 = st.integers(min_value=0, max_value=2**32 - 1)
receipts = st.builds(
    lambda wc, h, job, req, resp, p, cached, comp, reas, coef, seqno: Receipt(
        Address((wc, h)), job, req, resp, Usage(max(p, cached), max(comp, reas), cached, reas), coef, seqno),
    st.sampled_from([0, -1]), st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=2**256 - 1),
    st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), u32, u32, u32, u32,
    st.integers(min_value=0, max_value=2**16 - 1), st.integers(min_value=0, max_value=2**64 - 1))
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(32))


@settings(max_examples=200, deadline=None)
@given(receipts)
def test_fast_receipt_is_the_cell_receipt(r):
    slow = r.sign(KEY)
    assert r.statement_hash() == slow.statement.hash == slow.statement.to_cell().hash
    boc = r.signed_boc(KEY)
    assert boc == slow.to_cell().to_boc()
    assert boc[SIGNATURE_AT:SIGNATURE_AT + 64] == slow.signature
    back = S.SignedStatement.from_cell(Cell.one_from_boc(boc))
    assert back.verify(KEY.public_key().public_bytes_raw()) and Receipt.from_statement(back.statement) == r
    assert r.signs(boc, KEY.public_key())


@settings(max_examples=100, deadline=None)
@given(receipts, st.data())
def test_the_check_refuses_any_other_bytes_or_key(r, data):
    boc = r.signed_boc(KEY)
    assert not r.signs(boc, OTHER.public_key())
    i = data.draw(st.integers(min_value=0, max_value=len(boc) - 1))
    flipped = boc[:i] + bytes([boc[i] ^ (1 << data.draw(st.integers(0, 7)))]) + boc[i + 1:]
    assert not r.signs(flipped, KEY.public_key())
    assert not r.signs(boc[:-1], KEY.public_key()) and not r.signs(boc + b"\0", KEY.public_key())
    other = Receipt(r.worker_stake, r.job_id ^ 1, r.request_hash, r.response_hash, r.usage, r.coefficient, r.seqno)
    assert not other.signs(boc, KEY.public_key())
    # the same receipt in another valid BoC form is not this form (the caller parses it instead)
    assert not r.signs(S.SignedStatement.from_cell(Cell.one_from_boc(boc)).to_cell().to_boc(has_idx=True),
                       KEY.public_key())

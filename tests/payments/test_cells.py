"""The bit-level cell hash (wrappers/cells.py) equals pytoniq's representation hash, and the escrow
statement hashed from its bits equals the cell the contract checks, built with pytoniq's builder."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pytoniq_core import Address, begin_cell

from wrappers import cells as C
from wrappers import escrow as E

addresses = st.builds(lambda wc, h: Address((wc, h)), st.sampled_from([0, -1]), st.binary(min_size=32, max_size=32))
coins = st.integers(min_value=0, max_value=2**120 - 1)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=1023).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=(1 << n) - 1))),
    st.lists(st.integers(min_value=0, max_value=40), max_size=4))
def test_ordinary_hash_is_the_cell_hash(bits, ref_sizes):
    n, value = bits
    refs = [(begin_cell().store_uint((1 << k) - 1, k) if k else begin_cell()).end_cell() for k in ref_sizes]
    if ref_sizes:   # one deeper reference, so depths other than 0 are covered
        refs[0] = begin_cell().store_ref(refs[0]).end_cell()
    b = begin_cell().store_uint(value, n) if n else begin_cell()
    for r in refs:
        b = b.store_ref(r)
    cell = b.end_cell()
    assert C.ordinary_hash(value, n, tuple((r.get_depth(), r.hash) for r in refs)) == cell.hash
    assert C.depth(tuple((r.get_depth(), r.hash) for r in refs)) == cell.get_depth()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([E.TAG_VOUCHER, E.TAG_COOP_CLOSE, 0, 2**32 - 1]), addresses, coins)
def test_statement_hash_is_the_contracts_cell(tag, channel, amount):
    ref = begin_cell().store_uint(tag, 32).store_address(channel).store_coins(amount).end_cell()
    assert E.statement_hash(tag, channel, amount) == ref.hash
    assert E.statement_cell(tag, channel, amount).hash == ref.hash

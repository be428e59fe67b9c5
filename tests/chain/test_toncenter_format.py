"""The toncenter JSON forms of get-method stacks (wrappers/chain/toncenter.py): what the server
writes reads back as the same pytoniq values, and a toncenter answer that writes a slice as a cell
still reads like a slice."""
from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings, strategies as st
from pytoniq_core import Address, Cell, Slice, begin_cell

from wrappers.chain import toncenter as T

ADDR = Address("0:" + "ab" * 32)


def _norm(v):
    if isinstance(v, Slice):
        return ("slice", begin_cell().store_slice(v).end_cell().hash)
    if isinstance(v, Cell):
        return ("cell", v.hash)
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


values = st.recursive(
    st.one_of(st.integers(-2**256, 2**256 - 1), st.none(),
              st.integers(0, 2**32 - 1).map(lambda n: begin_cell().store_uint(n, 32).end_cell()),
              st.integers(0, 2**16 - 1).map(lambda n: begin_cell().store_uint(n, 16).end_cell().begin_parse())),
    lambda inner: st.lists(inner, max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(values, max_size=5))
def test_result_stacks_round_trip(stack):
    assert _norm(T.result_stack_from_json(T.result_stack_to_json(stack))) == _norm(stack)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(-2**256, 2**256 - 1),
                          st.integers(0, 2**32 - 1).map(lambda n: begin_cell().store_uint(n, 32).end_cell())),
                max_size=5))
def test_request_stacks_round_trip(stack):
    assert _norm(T.request_stack_from_json(T.request_stack_to_json(stack))) == _norm(stack)


def test_numbers_are_hex_as_toncenter_writes_them():
    assert T.result_stack_to_json([255, -1]) == [["num", "0xff"], ["num", "-0x1"]]
    assert T.request_stack_from_json([["num", "0x10"], ["num", "-7"], ["num", 3]]) == [16, -7, 3]


def test_a_slice_written_as_a_cell_reads_as_both():
    boc = base64.b64encode(begin_cell().store_address(ADDR).end_cell().to_boc()).decode()
    [v] = T.result_stack_from_json([["cell", {"bytes": boc, "object": {}}]])
    assert isinstance(v, Cell) and v.begin_parse().load_address() == ADDR
    assert v.load_address() == ADDR  # as a slice, the way readers use getter results


@pytest.mark.parametrize("bad", [[["num", "zz"]], [["tvm.Cell", "%%"]], [["what", 1]], "notalist", [[1]]])
def test_bad_request_stacks_are_format_errors(bad):
    with pytest.raises(T.FormatError):
        T.request_stack_from_json(bad)

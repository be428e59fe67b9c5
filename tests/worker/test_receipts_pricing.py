"""node.payments.receipts.response_hash (docs/PROTOCOL.md §5) and node.payments.pricing.request_max_cost (§4)."""
import hashlib
import json

import pytest
from hypothesis import given, strategies as st

from node.payments.pricing import Usage, charge, max_cost, prompt_token_bound, request_max_cost
from node.payments.receipts import response_content, response_hash
from wrappers.registry import Economics


def test_response_hash_is_sha256_of_canonical_json():
    want = b'{"content":"Hi \xc3\xa9","tool_calls":[{"arguments":"{\\"x\\": 1}","name":"f"}]}'
    assert response_content("Hi é", [{"name": "f", "arguments": '{"x": 1}'}]) == want
    assert response_hash("Hi é", [("f", '{"x": 1}')]) == hashlib.sha256(want).digest()
    assert response_hash("") == hashlib.sha256(b'{"content":"","tool_calls":[]}').digest()


def test_response_hash_depends_on_order_and_each_byte():
    a = response_hash("x", [("f", "1"), ("g", "2")])
    assert a != response_hash("x", [("g", "2"), ("f", "1")])
    assert a != response_hash("x ", [("f", "1"), ("g", "2")])
    with pytest.raises(TypeError):
        response_hash("x", [("f", {"a": 1})])


@given(st.text(), st.lists(st.tuples(st.text(), st.text()), max_size=3))
def test_response_content_reads_back(text, calls):
    d = json.loads(response_content(text, calls))
    assert d == {"content": text, "tool_calls": [{"name": n, "arguments": a} for n, a in calls]}


E = Economics()


def test_request_max_cost_matches_the_protocol_formula():
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "héllo"}] * 2,
                       "max_tokens": 50}).encode()
    bound = len(body) + 2 * 16 + 64
    assert prompt_token_bound(body) == bound
    assert request_max_cost(body, 1500, E) == max_cost(bound, 50, 1500, E)
    comp = json.dumps({"model": "m", "prompt": "abc", "max_tokens": 7})
    assert request_max_cost(comp, 1000, E) == max_cost(len(comp) + 64, 7, 1000, E)


@pytest.mark.parametrize("body", [b"", b"[]", b'{"max_tokens": 0}', b'{"max_tokens": true}',
                                  b'{"max_tokens": 1.5}', b'{"model": "m"}'])
def test_request_max_cost_refuses(body):
    with pytest.raises(ValueError):
        request_max_cost(body, 1000, E)


@given(st.text(max_size=200), st.integers(1, 4096), st.integers(1, 3000))
def test_max_cost_covers_any_real_charge(prompt, max_tokens, coef):
    """Any usage the bound allows (prompt tokens <= bytes, completion <= max_tokens) costs at most
    the maximum, at any coefficient up to the client's maximum."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens})
    cap = request_max_cost(body, coef, E)
    worst = Usage(len(prompt.encode()) + 16 + 64, max_tokens, 0, max_tokens)
    assert charge(worst, coef, E).client_cost <= cap

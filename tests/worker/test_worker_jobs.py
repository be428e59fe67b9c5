"""The worker as a real process serving SmolLM2 over the link (tests/worker/peer.py on the other end)."""
from __future__ import annotations

import json

import pytest
from pytoniq_core import Cell

from node.link import frames as F
from node.openai import protocol as P
from wrappers import stake as S
from wrappers.receipts import Receipt, response_hash



def chat_body(content="Say hello in one short sentence.", **kw) -> bytes:
    d = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": content}], "max_tokens": 24,
         "temperature": 0}
    d.update(kw)
    return json.dumps(d).encode()


def check_receipt(served, job_id: str, body: bytes, rf: F.ReceiptFrame, content: str, calls=()):
    signed = S.SignedStatement.from_cell(Cell.one_from_boc(rf.receipt))
    assert signed.verify(S.public_key_int(served.world.worker.key))
    r = Receipt.from_statement(signed.statement)
    assert r.job_id == int(job_id, 16)
    import hashlib
    assert r.request_hash == hashlib.sha256(body).digest()
    assert r.response_hash == response_hash(content, list(calls))
    assert r.usage == rf.usage and r.coefficient == rf.coefficient == 1000
    assert r.worker_stake == served.world.worker.stake.address
    return r


def test_hello_names_model_and_capacity(served):
    h = served.hello
    assert h.model == "SmolLM2-135M-Instruct" and h.model_hash == served.world.model_hash.hex()
    assert h.owner == served.world.worker.wallet.address.to_str(is_user_friendly=False)
    assert h.max_jobs == 9 and h.coefficient == 1000


def test_chat_answer_usage_and_receipt(served):
    body = chat_body()
    jid = served.peer.submit("chat", body)
    out = served.peer.collect(jid)
    assert out.result.status == 200, out.result
    ans = out.result.body
    text = ans["choices"][0]["message"]["content"]
    assert text.strip()
    u = ans["usage"]
    assert u["completion_tokens"] > 0 and u["prompt_tokens"] > 10
    r = check_receipt(served, jid, body, out.receipt, text)
    assert r.usage.prompt_tokens == u["prompt_tokens"] and r.usage.completion_tokens == u["completion_tokens"]


def test_streaming_completion(served):
    body = json.dumps({"model": "SmolLM2-135M-Instruct", "prompt": "The sky is", "max_tokens": 12, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    jid = served.peer.submit("completion", body, stream=True)
    out = served.peer.collect(jid)
    assert out.result is None
    chunks = out.chunks
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    text, calls = P.delivered("completion", chunks)
    assert text and calls == []
    check_receipt(served, jid, body, out.receipt, text)

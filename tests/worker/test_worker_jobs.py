"""The worker as a real process serving SmolLM2 over the link (tests/worker/peer.py on the other end)."""
from __future__ import annotations

import json
import time

import pytest
from pytoniq_core import Cell

from node.link import frames as F
from node.openai import protocol as P
from wrappers import keys as K
from wrappers import stake as S
from node.payments.receipts import Receipt, response_hash



def chat_body(content="Say hello in one short sentence.", **kw) -> bytes:
    d = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": content}], "max_tokens": 10,
         "temperature": 0}
    d.update(kw)
    return json.dumps(d).encode()


def check_receipt(served, job_id: str, body: bytes, rf: F.ReceiptFrame, content: str, calls=()):
    signed = S.SignedStatement.from_cell(Cell.one_from_boc(rf.receipt))
    assert signed.verify(K.public_key_int(served.world.worker.key))
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
    body = json.dumps({"model": "SmolLM2-135M-Instruct", "prompt": "The sky is", "max_tokens": 6, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    jid = served.peer.submit("completion", body, stream=True)
    out = served.peer.collect(jid)
    assert out.result is None
    chunks = out.chunks
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    text, calls = P.delivered("completion", chunks)
    assert text and calls == []
    check_receipt(served, jid, body, out.receipt, text)


REFERENCE = """
import json, sys
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
model, messages, max_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_threads=1, verbose=False)
eos, bos = llm.token_eos(), llm.token_bos()
fmt = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], llm._model.token_get_text(eos),
                          llm._model.token_get_text(bos))
prompt = llm.tokenize(fmt(messages=messages).prompt.encode(), add_bos=False, special=True)
toks = []
for t in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, min_p=0.0):
    if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t) or len(toks) == max_tokens:
        break
    toks.append(t)
print(json.dumps({"prompt_tokens": len(prompt), "completion_tokens": len(toks),
                  "text": llm.detokenize(toks).decode()}))
"""


def reference(model_path: str, messages: list, max_tokens: int) -> dict:
    """The model's own counts and greedy text, computed by llama-cpp-python in a clean process (one
    that has not loaded tonpy: see node.worker.engines.warm_up)."""
    import subprocess

    from tests.procs import PYTHON

    r = subprocess.run([PYTHON, "-c", REFERENCE, model_path, json.dumps(messages), str(max_tokens)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_usage_is_the_model_tokenizers_count(served, model_path):
    """Prompt tokens are the chat template's rendering tokenized by the model; completion tokens are
    exactly the tokens a greedy run of the same model produces for the same prompt."""
    messages = [{"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": "Name three colours."}]
    body = json.dumps({"model": "SmolLM2-135M-Instruct", "messages": messages, "max_tokens": 16,
                       "temperature": 0}).encode()
    jid = served.peer.submit("chat", body)
    out = served.peer.collect(jid)
    ans = out.result.body
    ref = reference(model_path, messages, 16)
    assert ans["usage"]["prompt_tokens"] == ref["prompt_tokens"]
    assert ans["usage"]["completion_tokens"] == ref["completion_tokens"]
    assert ans["choices"][0]["message"]["content"] == ref["text"]
    assert ans["choices"][0]["finish_reason"] == ("length" if ref["completion_tokens"] == 16 else "stop")
    check_receipt(served, jid, body, out.receipt, ans["choices"][0]["message"]["content"])


BAD = [
    ("unknown field", chat_body(logprobs=True), 400, "logprobs"),
    ("n above 1", chat_body(n=2), 400, "n"),
    ("bad role", json.dumps({"model": "SmolLM2-135M-Instruct", "messages": [{"role": "robot", "content": "x"}]}).encode(),
     400, "messages[0].role"),
    ("bad type", chat_body(max_tokens="ten"), 400, "max_tokens"),
    ("bad temperature", chat_body(temperature=9), 400, "temperature"),
    ("not JSON", b"{nope", 400, None),
    ("over-long prompt", chat_body(content="word " * 4000), 400, "messages"),
    ("another model", chat_body(model="gpt-4"), 404, "model"),
]


@pytest.mark.parametrize("name,body,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_are_4xx_with_an_openai_error_and_no_receipt(served, name, body, status, param):
    jid = served.peer.submit("chat", body)
    out = served.peer.collect(jid, timeout=60)
    assert out.result.status == status
    err = out.result.body["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param
    if name == "over-long prompt":
        assert err["code"] == "context_length_exceeded"
    assert out.receipt is None


def test_a_job_id_refused_before_it_ran_may_be_served_later(served):
    """The job id's start mark is begun as the job arrives, before its request is checked; a job
    refused then (here: a model this worker does not serve) drops the mark again, so the id is not
    burnt: sent again with a good request, it is served and carries a receipt."""
    jid = served.peer.submit("chat", chat_body(model="gpt-4"))
    out = served.peer.collect(jid, timeout=60)
    assert out.result.status == 404 and out.receipt is None
    body = chat_body()
    served.peer.submit("chat", body, job_id=jid)
    out = served.peer.collect(jid, timeout=120)
    assert out.result.status == 200, out.result
    check_receipt(served, jid, body, out.receipt, out.result.body["choices"][0]["message"]["content"])


def test_cancel_mid_stream_bills_delivered_tokens_only(served):
    import time

    body = chat_body(content="Write a long story about a dragon.", max_tokens=300, stream=True,
                     stream_options={"include_usage": True}, temperature=0.7, seed=1)
    jid = served.peer.submit("chat", body, stream=True)
    got = []
    while sum(1 for c in got if c.get("choices") and c["choices"][0]["delta"].get("content")) < 5:
        f = served.peer.next_frame(jid)
        assert isinstance(f, F.Chunk), f
        got.append(f.data)
    served.peer.send(F.Cancel(jid))
    t0 = time.monotonic()
    out = served.peer.collect(jid, timeout=30)
    assert time.monotonic() - t0 < 5, "generation did not stop at once"
    chunks = got + out.chunks
    assert all("usage" not in c for c in chunks), "a cancelled job sends no usage chunk"
    text, _ = P.delivered("chat", chunks)
    content_chunks = sum(1 for c in chunks if c.get("choices") and c["choices"][0]["delta"].get("content"))
    r = check_receipt(served, jid, body, out.receipt, text)
    assert 5 <= r.usage.completion_tokens < 300
    assert r.usage.completion_tokens == content_chunks
    assert r.usage.prompt_tokens > 0


def test_stop_sequences_and_seed(served):
    body = json.dumps({"model": "SmolLM2-135M-Instruct", "prompt": "1, 2, 3, 4,", "max_tokens": 40, "stop": [" 7"],
                       "temperature": 0.8, "seed": 42}).encode()
    a = served.peer.collect(served.peer.submit("completion", body))
    b = served.peer.collect(served.peer.submit("completion", body))
    ta, tb = a.result.body["choices"][0]["text"], b.result.body["choices"][0]["text"]
    assert ta == tb, "the same seed gives the same text"
    assert " 7" not in ta
    check_receipt(served, a.receipt.job_id, body, a.receipt, ta)


def test_metrics_and_status(served):
    import subprocess
    import urllib.request

    from tests.procs import COCOON

    def status() -> dict:
        st = subprocess.run([COCOON, "worker", "status", "--state-dir", str(served.state_dir), "--json"],
                            capture_output=True, text=True, timeout=60)
        assert st.returncode == 0, st.stderr
        return json.loads(st.stdout)

    # its own job: the module's other tests may run in another process (pytest -n)
    before = status()["jobs"]
    out = served.peer.collect(served.peer.submit("chat", chat_body(max_tokens=4)))
    assert out.result.status == 200 and out.receipt is not None
    text = urllib.request.urlopen(served.metrics_url, timeout=10).read().decode()
    for name in ("cocoon_worker_jobs_total", "cocoon_worker_tokens_total", "cocoon_worker_tokens_per_second",
                 "cocoon_worker_queue_length", "cocoon_worker_job_seconds_bucket", "cocoon_worker_earned_nanoton"):
        assert name in text, name
    ok = [l for l in text.splitlines() if l.startswith('cocoon_worker_jobs_total{outcome="ok"}')]
    assert ok and float(ok[0].split()[-1]) >= 1
    d = status()
    assert d["jobs"] == before + 1 and d["completion_tokens"] > 0 and d["earned"] > 0
    assert d["debt"] == d["earned"] - d["paid"]
    human = subprocess.run([COCOON, "worker", "status", "--state-dir", str(served.state_dir)], capture_output=True,
                           text=True, timeout=60)
    assert "earned" in human.stdout and "proxy debt" in human.stdout


WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_pass_through_and_the_receipt_covers_them(served, stream):
    body = chat_body(content="What is the weather in Paris?", max_tokens=40, tools=WEATHER, stream=stream,
                     tool_choice={"type": "function", "function": {"name": "get_weather"}})
    jid = served.peer.submit("chat", body, stream=stream)
    out = served.peer.collect(jid)
    if stream:
        content, calls = P.delivered("chat", out.chunks)
        assert out.chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    else:
        msg = out.result.body["choices"][0]
        assert msg["finish_reason"] == "tool_calls"
        content, calls = P.delivered("chat", out.result.body)
    assert len(calls) == 1 and calls[0][0] == "get_weather"
    assert isinstance(json.loads(calls[0][1])["city"], str)
    check_receipt(served, jid, body, out.receipt, content, calls)


def test_a_job_past_its_timeout_ends_with_an_error_event(served):
    # one second is a few dozen tokens at most on this model: the story cannot end by itself first
    body = chat_body(content="Tell me a very long story.", max_tokens=400, stream=True, temperature=0.7, seed=7)
    jid = served.peer.submit("chat", body, stream=True, timeout=1)
    out = served.peer.collect(jid, timeout=60)
    last = out.chunks[-1]
    assert last["error"]["code"] == "timeout"
    text, _ = P.delivered("chat", out.chunks[:-1])
    r = check_receipt(served, jid, body, out.receipt, text)
    assert r.usage.completion_tokens < 400


def test_cancel_of_an_answer_not_yet_sent_bills_no_completion(served):
    import time

    body = chat_body(content="Write a long story about a castle.", max_tokens=300, temperature=0.7)
    jid = served.peer.submit("chat", body)
    time.sleep(1.5)
    served.peer.send(F.Cancel(jid))
    out = served.peer.collect(jid, timeout=30)
    assert out.result is None
    r = check_receipt(served, jid, body, out.receipt, "")
    assert r.usage.completion_tokens == 0 and r.usage.prompt_tokens > 0


def test_many_jobs_at_once_on_one_link(served):
    """Jobs queue for the one slot, and the worker reports its occupancy: the first change after a
    quiet second at once, then at most once a second (the proxy counts jobs in flight itself)."""
    from node.worker.link import LOAD_EVERY

    time.sleep(LOAD_EVERY + 0.1)
    n0, t0 = len(served.peer.loads), time.monotonic()
    bodies = [chat_body(content=f"Say the number {i}.", max_tokens=6) for i in range(3)]
    ids = [served.peer.submit("chat", b) for b in bodies]
    outs = [served.peer.collect(j) for j in ids]
    for jid, body, out in zip(ids, bodies, outs):
        assert out.result.status == 200 and out.receipt.job_id == jid
        check_receipt(served, jid, body, out.receipt, out.result.body["choices"][0]["message"]["content"])
    loads = served.peer.loads[n0:]
    assert any(l.queued > 0 for l in loads), "one slot: the others waited in the queue"
    assert len(loads) <= 1 + (time.monotonic() - t0) / LOAD_EVERY, [(l.active, l.queued) for l in loads]

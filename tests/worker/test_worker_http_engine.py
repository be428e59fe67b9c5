"""The HTTP-engine path: the worker forwards to a real OpenAI-compatible engine process
(llama-cpp-python's own ``llama_cpp.server``) and still reports the model's token counts and signs
receipts."""
from __future__ import annotations

import json
import urllib.request

import pytest

from node.openai import protocol as P
from tests.procs import PYTHON, free_port, http_ready

from .conftest import Served
from .test_worker_jobs import chat_body, check_receipt


@pytest.fixture(scope="module")
def engine(tmp_path_factory, model_path):
    from tests.procs import Procs

    procs = Procs(tmp_path_factory.mktemp("engine"))
    port = free_port()
    try:
        procs.start("llama-server", [PYTHON, "-m", "llama_cpp.server", "--model", model_path, "--host", "127.0.0.1",
                                     "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
                                     "--model_alias", "smollm2"],
                    ready=http_ready(f"http://127.0.0.1:{port}/v1/models"), timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def served_http(tmp_path_factory, model_path, engine):
    s = Served(tmp_path_factory.mktemp("served-http"), model_path, "--engine", "http", "--engine-url", engine,
               "--parallel", "2")
    try:
        s.start_worker()
        s.hello = s.peer.wait_connected(60)
        yield s
    finally:
        s.close()


def direct(engine: str, body: dict) -> dict:
    req = urllib.request.Request(engine + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=120).read())


def test_answers_through_the_http_engine_with_its_usage(served_http, engine):
    s = served_http
    assert s.hello.max_jobs == 2 + 8
    body = chat_body(content="What is two plus two?", max_tokens=12)
    jid = s.peer.submit("chat", body)
    out = s.peer.collect(jid)
    assert out.result.status == 200, out.result.body
    ans = out.result.body
    text = ans["choices"][0]["message"]["content"]
    assert text.strip() and ans["model"] == "SmolLM2-135M-Instruct"
    ref = direct(engine, dict(json.loads(body), model="smollm2"))
    assert ref["choices"][0]["message"]["content"] == text, "greedy: the same text as the engine alone"
    assert ans["usage"]["prompt_tokens"] == ref["usage"]["prompt_tokens"]
    assert ans["usage"]["completion_tokens"] == ref["usage"]["completion_tokens"]
    check_receipt(s, jid, body, out.receipt, text)


def test_streaming_and_validation_through_the_http_engine(served_http, engine):
    s = served_http
    body = chat_body(max_tokens=8, stream=True, stream_options={"include_usage": True})
    jid = s.peer.submit("chat", body, stream=True)
    out = s.peer.collect(jid)
    text, _ = P.delivered("chat", out.chunks)
    assert text and out.chunks[-1]["usage"]["completion_tokens"] == out.receipt.usage.completion_tokens > 0
    # this engine streams no usage: the worker counts the prompt itself, after the run, to the same figure
    ref = direct(engine, dict(json.loads(body), model="smollm2", stream=False))
    assert out.receipt.usage.prompt_tokens == ref["usage"]["prompt_tokens"]
    check_receipt(s, jid, body, out.receipt, text)
    bad = s.peer.collect(s.peer.submit("chat", chat_body(n=3)), timeout=30)
    assert bad.result.status == 400 and bad.receipt is None


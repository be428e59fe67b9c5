"""node/openai: strict validation, error bodies, SSE encoding and decoding."""
import json

import pytest

from node.openai import errors, headers, protocol as P, sse
from node.openai.errors import APIError
from node.payments.pricing import Usage, usage_from_openai, usage_to_openai

OK_CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def chat(**kw):
    d = dict(OK_CHAT)
    d.update(kw)
    return json.dumps(d).encode()


def test_valid_chat_request_parses():
    r = P.parse_chat(chat(max_tokens=5000, temperature=0, seed=3, stop="\n", stream=True,
                          stream_options={"include_usage": True},
                          tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
                          tool_choice="auto"), max_tokens_cap=256)
    assert r.sampling.max_tokens == 256 and r.sampling.stop == ("\n",) and r.include_usage and r.stream
    assert r.messages[0].content == "hi" and r.tools[0]["function"]["name"] == "f"


def test_content_parts_and_tool_messages():
    r = P.parse_chat(chat(messages=[
        {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]))
    assert [m.role for m in r.messages] == ["system", "user", "assistant", "tool"]
    assert r.messages[0].content == "ab"


@pytest.mark.parametrize("body,param", [
    (chat(foo=1), "foo"),
    (chat(n=2), "n"),
    (chat(n=True), "n"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": "x", "extra": 1}]), "messages[0].extra"),
    (chat(messages=[{"role": "user"}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]), "messages[0].content"),
    (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
    (chat(messages=[]), "messages"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens="5"), "max_tokens"),
    (chat(max_tokens=5, max_completion_tokens=5), "max_completion_tokens"),
    (chat(temperature=3), "temperature"),
    (chat(temperature="hot"), "temperature"),
    (chat(top_p=-0.1), "top_p"),
    (chat(stream="yes"), "stream"),
    (chat(stream_options={"include_usage": True}), "stream_options"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat(stop=5), "stop"),
    (chat(seed=1.5), "seed"),
    (chat(tools=[{"type": "retrieval"}]), "tools[0]"),
    (chat(tool_choice="required"), "tool_choice"),
    (chat(tool_choice={"type": "function", "function": {"name": "g"}},
          tools=[{"type": "function", "function": {"name": "f"}}]), "tool_choice"),
    (json.dumps({"messages": OK_CHAT["messages"]}).encode(), "model"),
    (json.dumps({"model": "m"}).encode(), "messages"),
])
def test_bad_chat_requests_are_400_naming_the_parameter(body, param):
    with pytest.raises(APIError) as e:
        P.parse_chat(body)
    assert e.value.status == 400 and e.value.param == param
    d = e.value.to_dict()["error"]
    assert set(d) == {"message", "type", "param", "code"} and d["type"] == "invalid_request_error"


@pytest.mark.parametrize("body", [b"", b"{", b"[1]", b"\xff\xfe", b"null"])
def test_bodies_that_are_not_json_objects(body):
    with pytest.raises(APIError) as e:
        P.parse_chat(body)
    assert e.value.status == 400 and e.value.code == "invalid_json"


def test_completion_requests():
    r = P.parse_completion(b'{"model":"m","prompt":["once"],"max_tokens":3,"echo":false}'
                           .replace(b',"echo":false', b""))
    assert r.prompt == "once" and r.sampling.max_tokens == 3
    for bad, param in [(b'{"model":"m","prompt":["a","b"]}', "prompt"), (b'{"model":"m","prompt":[1,2]}', "prompt"),
                       (b'{"model":"m"}', "prompt"), (b'{"model":"m","prompt":"a","echo":true}', "echo"),
                       (b'{"model":"m","prompt":"a","messages":[]}', "messages")]:
        with pytest.raises(APIError) as e:
            P.parse_completion(bad)
        assert e.value.status == 400 and e.value.param == param


def test_usage_roundtrip_and_refusals():
    u = Usage(10, 4, 3, 1)
    assert usage_from_openai(usage_to_openai(u)) == u
    assert usage_from_openai({"prompt_tokens": 1, "completion_tokens": 2}) == Usage(1, 2)
    for bad in [{"prompt_tokens": -1, "completion_tokens": 0}, {"prompt_tokens": 1}, [],
                {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 3},
                {"prompt_tokens": 1, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 2}}]:
        with pytest.raises(ValueError):
            usage_from_openai(bad)


def test_delivered_from_chunks_and_answer_agree():
    chunks = [P.chat_chunk("i", 1, "m", {"role": "assistant", "content": ""}),
              P.chat_chunk("i", 1, "m", {"content": "Hel"}),
              P.chat_chunk("i", 1, "m", {"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                                         "function": {"name": "f", "arguments": "{\"a\""}}]}),
              P.chat_chunk("i", 1, "m", {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
              P.chat_chunk("i", 1, "m", {"content": "lo"}, "tool_calls"),
              P.usage_chunk("i", 1, "m", Usage(1, 2))]
    answer = P.chat_response("i", 1, "m", "Hello", "tool_calls", Usage(1, 2),
                             [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}])
    assert P.delivered("chat", chunks) == P.delivered("chat", answer) == ("Hello", [("f", '{"a": 1}')])
    assert P.delivered("completion", [P.completion_chunk("i", 1, "m", "a"), P.completion_chunk("i", 1, "m", "b")]) \
        == ("ab", [])


def test_sse_encoding_and_decoding():
    e1, e2 = sse.event({"a": "é"}), sse.error_event(errors.timeout())
    assert e1 == 'data: {"a":"é"}\n\n'.encode()
    dec = sse.SSEDecoder()
    stream = b": comment\n" + e1 + e2 + sse.DONE_EVENT
    out = [p for i in range(len(stream)) for p in dec.feed(stream[i:i + 1])]
    assert [sse.parse_event(p) for p in out] == [{"a": "é"}, errors.timeout().to_dict(), sse.DONE]


def test_error_objects_and_statuses():
    e = errors.payment_required("pay more", 10, 3)
    assert e.status == 402 and e.to_dict()["error"]["cocoon"] == {"required": 10, "settled": 3}
    assert errors.overloaded(3).headers == {"Retry-After": "3"} and errors.overloaded().status == 429
    back = APIError.from_dict(402, e.to_dict())
    assert back.to_dict() == e.to_dict()
    assert APIError.from_dict(502, "junk").status == 502


def test_headers():
    assert headers.parse_voucher(headers.format_voucher(12, b"\x01" * 64)) == (12, b"\x01" * 64)
    for bad in ["", "12", "x:" + "00" * 64, "12:" + "00" * 63, "12:" + "zz" * 64]:
        with pytest.raises(ValueError):
            headers.parse_voucher(bad)
    assert headers.valid_request_id("a-B_9") and not headers.valid_request_id("a b") \
        and not headers.valid_request_id("x" * 65)

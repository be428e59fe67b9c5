"""The worker link's frames (node/link/frames.py) and the proxy endpoint format (node/link/endpoint.py)."""
import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, strategies as st
from pytoniq_core import Address

from node.link import endpoint as E
from node.link import frames as F
from node.payments.vouchers import Voucher
from node.payments.pricing import Usage

CH = Address("0:" + "11" * 32)
OWNER = "0:" + "22" * 32
JOB = "ab" * 32
KEY = Ed25519PrivateKey.generate()


def roundtrip(frame, sender=None):
    back = F.decode(F.encode(frame), sender=sender)
    assert back == frame
    return back


def test_every_frame_roundtrips():
    v = Voucher.sign(KEY, CH, 1234)
    roundtrip(F.Hello(1, OWNER, "smollm2", "cd" * 32, 1000, 4, 10**9), "worker")
    roundtrip(F.Welcome(OWNER, CH.to_str(is_user_friendly=False), 1234, v), "proxy")
    roundtrip(F.Welcome(OWNER, CH.to_str(is_user_friendly=False), 0, None), "proxy")
    roundtrip(F.Refused("model not allowed"), "proxy")
    roundtrip(F.Job(JOB, "chat", b'{"a":1}\xff', True, 30.5), "proxy")
    roundtrip(F.Chunk(JOB, {"choices": []}), "worker")
    roundtrip(F.Result(JOB, 400, {"error": {"message": "x"}}), "worker")
    roundtrip(F.ReceiptFrame(JOB, b"\xb5\xee\x9c\x72", Usage(10, 5, 2, 0), 1500), "worker")
    roundtrip(F.Cancel(JOB), "proxy")
    roundtrip(F.Pay(v), "proxy")
    roundtrip(F.Load(1, 2, 4), "worker")


def test_wire_form_is_the_documented_one():
    d = json.loads(F.encode(F.Job(JOB, "completion", b"hi", False, 10)))
    assert d == {"type": "job", "job_id": JOB, "endpoint": "completion", "body": base64.b64encode(b"hi").decode(),
                 "stream": False, "timeout": 10}
    d = json.loads(F.encode(F.ReceiptFrame(JOB, b"r", Usage(3, 4), 1000)))
    assert d["usage"]["total_tokens"] == 7 and d["receipt"] == "cg=="
    v = Voucher.sign(KEY, CH, 5)
    assert json.loads(F.encode(F.Pay(v)))["voucher"] == {"channel": CH.to_str(is_user_friendly=False), "amount": 5,
                                                         "signature": v.signature.hex()}


@pytest.mark.parametrize("text,why", [
    ('{"type":"nope"}', "unknown frame type"),
    ('[]', "JSON object"),
    ('not json', "JSON object"),
    ('{"type":"cancel"}', "lacks job_id"),
    ('{"type":"cancel","job_id":"%s","x":1}' % JOB, "unknown fields"),
    ('{"type":"cancel","job_id":"AB%s"}' % ("ab" * 31), "64 lowercase hex"),
    ('{"type":"job","job_id":"%s","endpoint":"embed","body":"","stream":true,"timeout":1}' % JOB, "endpoint"),
    ('{"type":"job","job_id":"%s","endpoint":"chat","body":"!!","stream":true,"timeout":1}' % JOB, "base64"),
    ('{"type":"job","job_id":"%s","endpoint":"chat","body":"","stream":1,"timeout":1}' % JOB, "stream"),
    ('{"type":"job","job_id":"%s","endpoint":"chat","body":"","stream":true,"timeout":0}' % JOB, "timeout"),
    ('{"type":"load","active":true,"queued":0,"max_jobs":1}', "integer"),
    ('{"type":"load","active":-1,"queued":0,"max_jobs":1}', "at least"),
    ('{"type":"pay","voucher":{"channel":"0:11","amount":1,"signature":"00"}}', "address"),
    ('{"type":"receipt","job_id":"%s","receipt":"cg==","usage":{"prompt_tokens":1,"completion_tokens":1,'
     '"total_tokens":3},"coefficient":1000}' % JOB, "total_tokens"),
    ('{"type":"hello","protocol":2,"owner":"%s","model":"m","model_hash":"%s","coefficient":1000,'
     '"max_jobs":1,"credit":0}' % (OWNER, "00" * 32), "protocol 2"),
])
def test_malformed_frames_raise_one_error(text, why):
    with pytest.raises(F.FrameError, match=why):
        F.decode(text)


def test_direction_is_checked():
    text = F.encode(F.Cancel(JOB))
    F.decode(text, sender="proxy")
    with pytest.raises(F.FrameError, match="comes from the proxy"):
        F.decode(text, sender="worker")


def test_welcome_paid_must_match_voucher():
    v = Voucher.sign(KEY, CH, 10)
    with pytest.raises(F.FrameError, match="paid"):
        F.encode(F.Welcome(OWNER, CH.to_str(is_user_friendly=False), 9, v))


@given(st.binary(max_size=200), st.booleans(), st.floats(min_value=0.001, max_value=86400))
def test_job_bodies_survive_byte_for_byte(body, stream, timeout):
    f = F.decode(F.encode(F.Job(JOB, "chat", body, stream, timeout)))
    assert f.body == body and f.stream is stream and f.timeout == timeout


@given(st.text(max_size=300))
def test_decode_never_raises_anything_but_frame_error(text):
    try:
        F.decode(text)
    except F.FrameError:
        pass


def test_endpoint_parse_and_format():
    ep = E.parse("proxy.example.com:8443 10.0.0.5:9443")
    assert (ep.clients_host, ep.clients_port, ep.workers_host, ep.workers_port) == \
        ("proxy.example.com", 8443, "10.0.0.5", 9443)
    assert ep.workers_url == "wss://10.0.0.5:9443/v1/link" and ep.clients_url == "https://proxy.example.com:8443"
    assert E.parse(ep.format()) == ep
    v6 = E.parse(E.format_endpoint("::1", 1, "127.0.0.1", 2))
    assert v6.clients_host == "[::1]" and v6.clients_address == ("::1", 1)


@pytest.mark.parametrize("bad", ["a:1", "a:1  b:2", "a:1 b", "a:0 b:2", "a:1 b:70000", "a b:2", ":1 b:2",
                                 "a:1 b:2 c:3", "a_b:1 c:2", "a:1\tb:2", "x" * 300 + ":1 b:2"])
def test_endpoint_refuses(bad):
    with pytest.raises(E.EndpointError):
        E.parse(bad)

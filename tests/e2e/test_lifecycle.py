"""Whole job lifecycles across all four contracts, for both builds: the demo's story as assertions,
and the unhappy lives (a proxy that vanishes, a client that stops signing, a worker revoked while a
request is in flight, a parameter change while channels are open)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from node.lifecycle import MODEL, PROXY_IMAGE, WORKER_IMAGE, Network, job_usage, ready, run_story
from wrappers import escrow as E
from wrappers import registry as R
from wrappers import reputation as P
from wrappers.chain.records import find_transactions
from node.payments.pricing import charge, max_cost
from wrappers import TON


@pytest.fixture(scope="module", params=["func", "tolk"])
def story(request):
    return run_story(request.param, jobs=12)


def test_the_balance_changes_add_up_to_the_fees(story):
    assert sum(story.changes.values()) == -story.fees
    assert story.fees > 0 and story.network.chain.money_leak() == 0


def test_everyone_is_paid_exactly_what_the_vouchers_say(story):
    n, led = story.network, story.network.ledger
    assert story.claimed["proxy"] == led.client_total > 0
    for name in n.workers:
        assert story.claimed[name] == led.worker_total(name) > 0
    # the proxy's margin is the difference of the two prices, job by job
    e = n.params.economics
    for j in led.jobs:
        c = charge(j.usage, n.workers[j.worker].coefficient, e)
        assert (j.client_cost, j.worker_fee) == (c.client_cost, c.worker_fee)
        assert j.client_cost <= max_cost(j.usage.prompt_tokens, 1024, n.workers[j.worker].coefficient, e)
    # the client got back its deposit minus what it paid
    up = n.channels[("client", "proxy")].escrow
    refunds = find_transactions(n.txs, from_=up.address, to=n.client.wallet.address, op=E.OP["refund"])
    assert sum(t.value for t in refunds) == 5 * TON - led.client_total
    assert up.read.channel().state == E.State.CLOSED


def test_governance_and_registration(story):
    rd = story.network.reg.read
    assert rd.is_allowed("worker_image", WORKER_IMAGE) and rd.is_allowed("proxy_image", PROXY_IMAGE)
    assert rd.is_allowed("model", MODEL)
    p = rd.proxy(story.network.proxy.wallet.address)
    assert p is not None and p.active and p.stake == 60 * TON


def test_unbonding_slashing_and_reputation(story):
    n = story.network
    wa, wb = n.workers["worker-a"], n.workers["worker-b"]
    a, b = wa.stake.read.state(), wb.stake.read.state()
    assert a.jailed and not a.is_active and story.slashed == 10 * TON  # 50% of 20 TON
    assert b.active == 0 and b.unbonding == 0 and not b.is_active       # withdrew everything
    # the watcher got the reporter share minus what it attached to pay for the report's messages;
    # the treasury got the rest of the slash
    from wrappers import stake as S
    assert story.reporter_reward - S.REPORT_VALUE < story.changes["watcher"] < story.reporter_reward
    paid = find_transactions(n.txs, from_=wa.stake.address, to=n.dao.wallet.address)
    assert sum(t.value for t in paid) == story.slashed - story.reporter_reward
    assert 0 < story.slashed - story.reporter_reward - story.changes["treasury"] < TON // 1000  # its receiving gas
    for name, w in n.workers.items():
        rep = P.ReputationReader(n.chain.get_method, P.reputation_address(n.codes.reputation, n.reg.address,
                                                                         w.wallet.address))
        jobs = [j for j in n.ledger.jobs if j.worker == name]
        assert rep.totals().succeeded == len(jobs)
        assert rep.slashes().count == (1 if name == "worker-a" else 0)
    score = {name: P.ReputationReader(n.chain.get_method, P.reputation_address(
        n.codes.reputation, n.reg.address, w.wallet.address)).score() for name, w in n.workers.items()}
    assert score["worker-a"] < score["worker-b"]


# ------------------------------------------------------------------------------------ unhappy lives
def _ready(lang: str, jobs: int = 0) -> Network:
    return ready(lang, jobs)


@pytest.mark.parametrize("lang", ["func", "tolk"])
def test_client_recovers_its_funds_when_the_proxy_disappears(lang):
    n = _ready(lang, jobs=3)
    up = n.channels[("client", "proxy")].escrow
    owed = n.ledger.client_total
    # the proxy never claims and goes away; the client asks to close
    n._run(up.request_close(n.client.wallet), up.address, "close")
    n.chain.advance(n.params.economics.close_delay - 10)
    n._run(up.finish(n.client.wallet), up.address, "finish too early", expect_ok=False, code=E.Err.TOO_EARLY)
    n.chain.advance(10)
    before = n.client.wallet.balance
    txs = n._run(up.finish(n.client.wallet), up.address, "finish")
    refund = find_transactions(txs, from_=up.address, to=n.client.wallet.address, op=E.OP["refund"])
    # nothing was claimed, so the whole deposit returns (with the rest of the finish fee)
    assert refund and refund[0].value >= 5 * TON and n.client.wallet.balance - before > 5 * TON - TON // 100
    assert owed > 0 and up.read.channel().state == E.State.CLOSED
    assert n.chain.money_leak() == 0


@pytest.mark.parametrize("lang", ["func", "tolk"])
def test_proxy_claims_during_the_notice_period(lang):
    n = _ready(lang, jobs=2)
    up = n.channels[("client", "proxy")].escrow
    n._run(up.request_close(n.client.wallet), up.address, "close")
    n.chain.advance(60)
    assert n.claim("client", "proxy") == n.ledger.client_total  # honoured while closing
    n.chain.advance(n.params.economics.close_delay)
    txs = n._run(up.finish(n.watcher.wallet), up.address, "finish")
    refund = find_transactions(txs, from_=up.address, to=n.client.wallet.address, op=E.OP["refund"])
    assert refund[0].value == 5 * TON - n.ledger.client_total


@pytest.mark.parametrize("lang", ["func", "tolk"])
def test_a_client_that_stops_signing_pays_the_authorized_cap(lang):
    n = _ready(lang, jobs=2)
    paid_before = n.ledger.client_total
    last = n.run_job("worker-b", job_usage(7), max_tokens=512, client_signs_final=False)
    e = n.params.economics
    cap = max_cost(job_usage(7).prompt_tokens, 512, n.workers["worker-b"].coefficient, e)
    assert last.client_cost == cap > charge(job_usage(7), n.workers["worker-b"].coefficient, e).client_cost
    assert n.claim("client", "proxy") == paid_before + cap
    # the worker is still paid its exact fee by the proxy
    assert n.claim("proxy", "worker-b") == n.ledger.worker_total("worker-b")


@pytest.mark.parametrize("lang", ["func", "tolk"])
def test_a_worker_revoked_mid_request_costs_nobody_anything(lang):
    n = _ready(lang, jobs=2)
    before_client, before_worker = n.ledger.client_total, n.ledger.worker_total("worker-a")
    n.revoke("worker_image", WORKER_IMAGE)                      # takes effect at once
    job = n.run_job("worker-a", job_usage(5))                   # authorized, then not routed
    assert job.authorized > before_client and job.client_cost == 0 and job.worker_fee == 0
    assert n.ledger.client_total == before_client
    assert n.claim("client", "proxy") == before_client          # the proxy holds the exact total
    assert n.claim("proxy", "worker-a") == before_worker


@pytest.mark.parametrize("lang", ["func", "tolk"])
def test_parameter_change_through_the_timelock_while_channels_are_open(lang):
    n = _ready(lang)
    up = n.channels[("client", "proxy")].escrow
    delay_before = up.read.config()[0]
    new = replace(n.params, economics=replace(n.params.economics, price_per_token=80_000, worker_fee_per_token=60_000,
                                              close_delay=7200))
    pid = n.propose_params(new)
    old_job = n.run_job("worker-a", job_usage(1))               # still the old prices
    assert old_job.client_cost == charge(job_usage(1), 1000, n.params.economics).client_cost
    n._run(n.reg.send(n.watcher.wallet, R.execute_proposal(pid)), n.reg.address, "too early",
           expect_ok=False, code=R.Err.PROPOSAL_NOT_READY)
    n.chain.advance(n.params.governance_delay)
    n.execute(pid)
    new_job = n.run_job("worker-a", job_usage(1))
    assert new_job.client_cost == charge(job_usage(1), 1000, new.economics).client_cost > old_job.client_cost
    # the open channel keeps the notice period its payee accepted
    assert up.read.config()[0] == delay_before == 3600
    assert n.claim("client", "proxy") == old_job.client_cost + new_job.client_cost
    assert n.chain.money_leak() == 0

"""Reputation contract: reports through the registry, replays, bounds, decay, slashes, money; once per
language, with the registry of the same language (see TESTING.md)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from tests.conftest import per_language
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings, strategies as st
from pytoniq_core import Address, Cell, begin_cell
from pytoniq_core.tlb.account import StateInit

from wrappers import keys as K
from wrappers import registry as R
from wrappers import reputation as P
from wrappers.build import load_code
from wrappers.chain.contract import Instant
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider
from wrappers.chain.getmethod import run_get_method
from wrappers.chain.records import find_transactions, has_transaction
from wrappers import TON
from wrappers.reputation import Err, ReportStats, ScoreState

# The registry only hashes the stake code (stake addresses are derived from it); messages from stake
# contracts are forged from those addresses, as in test_registry.py.
STAKE_CODE = begin_cell().store_uint(0x5741CE, 24).end_cell()
ESCROW_CODE = begin_cell().store_uint(0xE5C0, 16).end_cell()
PROXIES = ("proxy-a", "proxy-b", "proxy-c")
GOOD = ReportStats(succeeded=90, failed=5, timed_out=5, tokens=120_000, latency_ms=800)


def _key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"operator:" + name.encode()).digest())


class Env:
    def __init__(self, lang: str):
        self.lang = lang
        self.chain = c = EmbeddedChain()
        self.owner, self.relayer, self.dao = c.treasury("owner"), c.treasury("relayer"), c.treasury("dao")
        self.proxies = {n: c.treasury(n) for n in PROXIES}
        self.keys = {n: _key(n) for n in PROXIES}
        self.worker = c.treasury("worker").address
        self.code = load_code("reputation", lang)
        params = R.NetworkParams(staking=R.Staking(treasury=self.dao.address), governance_delay=3600, max_proxies=8)
        self.reg = Instant(R.Registry.from_init(EmbeddedProvider(c), self.owner.address, params,
                                                R.ChildCodes(STAKE_CODE, ESCROW_CODE, self.code), lang=lang))
        self.reg.send_deploy(self.owner)
        self.rep = P.reputation_address(self.code, self.reg.address, self.worker)
        self.read = P.ReputationReader(c.get_method, self.rep)
        for n in PROXIES:
            self.register(n)

    # ------------------------------------------------------------------ proxies and reports
    def stake_addr(self, owner: Address, role: int) -> Address:
        return R.child_address(STAKE_CODE, self.reg.address, R.stake_identity(owner, role))

    def forge(self, src: Address, dest: Address, value: int, body: Cell, state_init=None, bounced=False):
        """A message from a contract that is not deployed here (a stake contract, the registry itself):
        only the emulator can forge a sender. Its value is new money, so it counts as minted and the
        chain's money invariant (minted = balances + fees) keeps holding."""
        msg = self.chain.internal(src, dest, value, body, state_init=state_init)
        if bounced:
            from pytoniq_core.tlb.transaction import MessageAny
            m = MessageAny.deserialize(msg.begin_parse())
            m.info.bounced, m.info.bounce = True, False
            msg = m.serialize()
        self.chain.minted += value
        return self.chain.send(msg)

    def from_stake(self, owner: Address, role: int, body: Cell, value: int = 50_000_000):
        return self.forge(self.stake_addr(owner, role), self.reg.address, value, body)

    def register(self, name: str):
        owner = self.proxies[name].address
        txs = self.from_stake(owner, R.ROLE_PROXY,
                              R.register_proxy(owner, K.public_key_int(self.keys[name]), 60 * TON, True, "p:1"))
        assert has_transaction(txs, to=self.reg.address, success=True)

    def set_active(self, name: str, active: bool):
        owner = self.proxies[name].address
        self.from_stake(owner, R.ROLE_PROXY,
                        R.stake_status(owner, R.ROLE_PROXY, active, K.public_key_int(self.keys[name]), 60 * TON))
        assert self.reg.read.proxy(owner).active == active

    def report(self, proxy: str = "proxy-a", epoch: int | None = None, stats: ReportStats = GOOD,
               worker: Address | None = None, registry: Address | None = None) -> P.Report:
        return P.Report(registry or self.reg.address, P.owner_hash(self.proxies[proxy].address),
                        worker or self.worker, self.chain.now if epoch is None else epoch, stats)

    def submit(self, report: P.Report, key: Ed25519PrivateKey | None = None, value: int = P.SUBMIT_VALUE,
               relayer=None):
        """The real path: a relayer sends the signed report to the registry."""
        name = next(n for n in PROXIES if P.owner_hash(self.proxies[n].address) == report.proxy_owner_hash)
        body = P.submit_report(report.sign(key or self.keys[name]), report)
        return (relayer or self.relayer).send(self.reg.address, value, body)

    # ------------------------------------------------------------------ forged messages to the record
    def to_record(self, body: Cell, value: int = 50_000_000, src: Address | None = None, dest: Address | None = None,
                  init: bool = True, bounced: bool = False):
        """A message to the record as the registry (or ``src``) would send it, with the StateInit."""
        dest = dest or self.rep
        si = P.state_init(self.code, self.reg.address, self.worker) if init and dest == self.rep else None
        return self.forge(src or self.reg.address, dest, value, body, si, bounced)

    def apply(self, report: P.Report | Cell, value: int = 50_000_000, **kw):
        return self.to_record(P.apply_report(report, self.relayer.address), value, **kw)

    def deploy_record(self, rec: P.ReputationRecord, balance: int = TON) -> Address:
        """A record in a chosen state (a state no sequence of reports could reach in a test's time),
        at the address its data gives; messages to it are forged from the registry."""
        si = StateInit(code=self.code, data=rec.to_data())
        addr = Address((0, si.serialize().hash))
        self.chain.mint(addr, balance, state_init=si)
        assert self.chain.state(addr)[0] == "active"
        return addr

    # ------------------------------------------------------------------ reading
    def on_record(self, txs, addr: Address | None = None):
        addr = addr or self.rep
        return [t for t in txs if t.account.hash_part == addr.hash_part and not t.bounced]

    def expect_error(self, txs, code: int, addr: Address | None = None):
        mine = self.on_record(txs, addr)
        assert mine, "the message never reached the record"
        assert mine[0].exit_code == code, f"expected {P.describe_error(code)}, got {P.describe_error(mine[0].exit_code)}"
        assert not mine[0].success

    def expect_ok(self, txs, addr: Address | None = None):
        mine = self.on_record(txs, addr)
        assert mine and mine[0].success, [t.describe() for t in txs]
        return mine[0]

    def registry_refused(self, txs, code: int):
        mine = [t for t in txs if t.account == self.reg.address and not t.bounced]
        assert mine and mine[0].exit_code == code, [t.describe() for t in txs]
        assert not has_transaction(txs, op=P.OP["apply_report"])

    def record(self, addr: Address | None = None) -> P.ReputationRecord:
        return P.ReputationRecord.from_data(self.chain.state(addr or self.rep)[2])


env = per_language(Env)  # deployed once per language, restored before every test


class Unchanged:
    """Asserts that a refused operation changed nothing on the record and no value stayed there
    beyond storage rent, and that the chain's money invariant holds (nobody lost more than fees).

    A refused first message still leaves the account active in its initial form with nothing on
    it: the chain applies a message's StateInit even when the compute phase then fails. That is an
    empty record (every getter reads zero), so it counts as unchanged."""

    def __init__(self, env: Env, addr: Address | None = None):
        self.env, self.addr = env, addr or env.rep

    def __enter__(self):
        c = self.env.chain
        self.status, _, self.data = c.state(self.addr)
        self.bal = c.balance(self.addr)
        self.start = len(c.transactions)
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return
        c, env = self.env.chain, self.env
        status, _, data = c.state(self.addr)
        if self.status == "nonexist" and status == "active":
            initial = P.state_init(env.code, env.reg.address, env.worker).data
            assert data.hash == initial.hash, "a refused first message left data behind"
            assert not P.ReputationRecord.from_data(data).initialized
        else:
            assert status == self.status, f"the record went from {self.status} to {status}"
            assert (data.hash if data else None) == (self.data.hash if self.data else None), "state changed"
        txs = c.transactions[self.start:]
        rent = sum(t.storage_fees for t in txs if t.account.hash_part == self.addr.hash_part)
        assert self.bal - rent <= c.balance(self.addr) <= self.bal, "the record kept or lost value"
        assert c.money_leak() == 0


def model(env: Env, steps) -> tuple[P.Totals, ScoreState]:
    """The Python model of a record after accepted (stats, time) reports and ('slash', time) events."""
    totals, score = P.Totals(), ScoreState()
    for what, t in steps:
        if what == "slash":
            score = score.after_slash(t)
        else:
            totals, score = totals.after_report(what, t), score.after_report(what, t)
    return totals, score


# ------------------------------------------------------------------------------------ the first report
def test_first_report_deploys_the_record(env: Env):
    assert env.chain.state(env.rep)[0] == "nonexist"
    assert env.reg.read.reputation_address(env.worker) == env.rep  # the registry derives the same address
    rep = env.report(epoch=env.chain.now - 60)
    relayer_before, registry_before = env.relayer.balance, env.reg.balance
    txs = env.submit(rep)
    t = env.expect_ok(txs)
    assert t.deploy
    rec = env.record()
    assert rec.initialized and rec.registry == env.reg.address and rec.worker_owner == env.worker
    assert rec.totals == P.Totals(1, 90, 5, 5, 120_000, 800 * 90, env.chain.now)
    assert rec.reporters == {rep.proxy_owner_hash: rep.epoch}
    assert rec.score == ScoreState().after_report(GOOD, env.chain.now)
    assert env.read.record() == rec  # getters and the data parser agree
    # the excess goes back to the relayer; the record keeps exactly its storage reserve
    back = find_transactions(txs, from_=env.rep, to=env.relayer.address, op=P.OP_EXCESSES)
    assert back and back[0].value > 0
    assert env.chain.balance(env.rep) == P.STORAGE_RESERVE
    # the registry keeps nothing but its rent; the relayer pays the fees of the path and the reserve
    rent = sum(t.storage_fees for t in txs if t.account == env.reg.address)
    assert env.reg.balance == registry_before - rent
    fees = sum(t.total_fees + t.in_fwd_fee for t in txs)
    assert relayer_before - env.relayer.balance == fees - rent + P.STORAGE_RESERVE
    assert fees < 30_000_000, fees
    assert env.chain.money_leak() == 0


def test_initial_form_reads_as_an_empty_record(env: Env):
    # anyone can deploy the record with its StateInit and a top-up; it stays in the initial form
    si = P.state_init(env.code, env.reg.address, env.worker)
    env.relayer.send(env.rep, TON // 10, None, state_init=si, bounce=False)
    assert env.chain.state(env.rep)[0] == "active"
    assert env.read.data() == (env.reg.address, env.worker, False)
    assert env.read.totals() == P.Totals() and env.read.score() == 5000
    assert env.read.slashes() == P.Slashes() and env.read.reporters() == {}
    assert env.record() == P.ReputationRecord(env.reg.address, env.worker)
    # the first report still initialises it
    env.expect_ok(env.submit(env.report()))
    assert env.read.data()[2] and env.read.totals().reports == 1


def test_top_up_comment_and_bounce_change_nothing(env: Env):
    env.expect_ok(env.submit(env.report()))
    for body in (None, begin_cell().store_uint(0, 32).store_snake_string("hi").end_cell()):
        data = env.chain.state(env.rep)[2].hash
        txs = env.relayer.send(env.rep, TON, body)
        assert env.on_record(txs)[0].success and env.chain.state(env.rep)[2].hash == data
    data, bal = env.chain.state(env.rep)[2].hash, env.chain.balance(env.rep)
    txs = env.apply(env.report(epoch=env.chain.now + 1), bounced=True)
    assert [t for t in txs if t.account == env.rep][0].success
    assert env.chain.state(env.rep)[2].hash == data and env.chain.balance(env.rep) >= bal


# ------------------------------------------------------------------------------------ who may write
def test_report_signed_by_a_stranger(env: Env):
    stranger_key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    with Unchanged(env):
        txs = env.submit(env.report(), key=stranger_key)
    env.registry_refused(txs, Err.BAD_SIGNATURE)


def test_report_from_an_unregistered_proxy(env: Env):
    env.expect_ok(env.submit(env.report()))
    owner = env.proxies["proxy-a"].address
    assert has_transaction(env.proxies["proxy-a"].send(env.reg.address, 50_000_000, R.unregister_proxy()),
                           to=env.reg.address, success=True)
    with Unchanged(env):
        txs = env.submit(env.report(epoch=env.chain.now + 10))
    env.registry_refused(txs, Err.PROXY_UNKNOWN)
    assert env.reg.read.proxy(owner) is None


def test_report_from_a_jailed_proxy(env: Env):
    env.expect_ok(env.submit(env.report(epoch=env.chain.now - 10)))
    env.set_active("proxy-a", False)          # jailed (slashed or under-staked) after its first report
    with Unchanged(env):
        txs = env.submit(env.report())
    env.registry_refused(txs, Err.STAKE_TOO_LOW)
    env.set_active("proxy-a", True)           # back in good standing: it may write again
    env.expect_ok(env.submit(env.report()))


def test_direct_writes_from_anyone_but_the_registry(env: Env):
    # before the record exists: a stranger cannot deploy it with a report
    with Unchanged(env):
        txs = env.apply(env.report(), src=env.relayer.address)
    env.expect_error(txs, Err.WRONG_SENDER)
    assert not env.record().initialized and env.chain.balance(env.rep) == 0
    env.expect_ok(env.submit(env.report(epoch=env.chain.now - 5)))
    # once it exists: a forged sender, a real wallet, a stake contract, for reports and slashes
    forged = [env.relayer.address, env.stake_addr(env.worker, R.ROLE_WORKER)]
    for src in forged:
        for body in (P.apply_report(env.report(), env.relayer.address), P.record_slash(env.relayer.address, TON, 1)):
            with Unchanged(env):
                txs = env.to_record(body, src=src)
            env.expect_error(txs, Err.WRONG_SENDER)
    with Unchanged(env):
        txs = env.relayer.send(env.rep, 50_000_000, P.apply_report(env.report(), env.relayer.address))
    env.expect_error(txs, Err.WRONG_SENDER)


# ------------------------------------------------------------------------------------ replays and epochs
def test_replayed_report(env: Env):
    rep = env.report(epoch=env.chain.now - 100)
    env.expect_ok(env.submit(rep))
    rec = env.record()
    for again in (rep, replace(rep, stats=ReportStats(succeeded=1)), replace(rep, epoch=rep.epoch - 1)):
        with Unchanged(env):
            txs = env.submit(again)       # the registry forwards it (a valid signature) ...
        env.expect_error(txs, Err.REPLAYED_REPORT)   # ... and the record refuses it
    assert env.record() == rec
    env.expect_ok(env.submit(replace(rep, epoch=rep.epoch + 1)))


def test_refused_report_returns_its_value_to_the_relayer(env: Env):
    """A relayer attaching 5 TON to a report the record refuses (here a copy relayed first by someone
    else turns it into a replay) gets the 5 TON back, minus the fees of the path."""
    rep = env.report(epoch=env.chain.now - 100)
    env.expect_ok(env.submit(rep, relayer=env.dao))           # a copy, relayed first
    before, registry_before = env.relayer.balance, env.reg.balance
    with Unchanged(env):
        txs = env.submit(rep, value=5 * TON)
    env.expect_error(txs, Err.REPLAYED_REPORT)
    back = find_transactions(txs, from_=env.rep, to=env.relayer.address, op=P.OP_EXCESSES)
    assert len(back) == 1 and back[0].value > 5 * TON - 50_000_000
    fees = sum(t.total_fees + t.in_fwd_fee for t in txs if t.account != env.relayer.address)
    assert before - env.relayer.balance < 50_000_000
    assert env.reg.balance <= registry_before                 # the registry keeps nothing
    assert not has_transaction(txs, to=env.reg.address, bounced=True)
    assert fees < 50_000_000


def test_report_refused_by_a_parse_failure_returns_its_value(env: Env):
    """A refusal inside the report that no check throws, a cell underflow (9) on an overlong stats
    cell, returns the value to the relayer too, minus the fees: nothing bounces to the registry."""
    env.expect_ok(env.submit(env.report(epoch=env.chain.now - 1)))
    long_stats = begin_cell().store_slice(GOOD.to_cell().begin_parse()).store_uint(1, 1).end_cell()
    s = env.report().to_cell().begin_parse()
    bad = begin_cell().store_bits(s.load_bits(s.remaining_bits)).store_ref(long_stats).end_cell()
    with Unchanged(env):
        txs = env.apply(bad, value=TON)
    env.expect_error(txs, 9)
    back = find_transactions(txs, from_=env.rep, to=env.relayer.address, op=P.OP_EXCESSES)
    assert len(back) == 1 and back[0].value > TON - 50_000_000
    assert not has_transaction(txs, to=env.reg.address, bounced=True)


@pytest.mark.parametrize("offset,code", [
    (-P.REPORT_WINDOW, None), (-P.REPORT_WINDOW - 1, Err.STALE_REPORT),
    (P.MAX_FUTURE, None), (P.MAX_FUTURE + 1, Err.FUTURE_REPORT),
])
def test_epoch_window(env: Env, offset, code):
    rep = env.report(epoch=env.chain.now + offset)
    if code is None:
        env.expect_ok(env.submit(rep))
        assert env.read.reporter(rep.proxy_owner_hash) == rep.epoch
        return
    with Unchanged(env):
        txs = env.submit(rep)
    env.expect_error(txs, code)


# ------------------------------------------------------------------------------------ malformed reports
@pytest.mark.parametrize("stats,why", [
    (ReportStats(), "no job at all"),
    (ReportStats(failed=3, latency_ms=10), "a latency without a succeeded job"),
])
def test_bad_stats(env: Env, stats, why):
    assert stats.problems()
    with pytest.raises(ValueError):
        P.build_report(env.reg.address, env.proxies["proxy-a"].address, env.worker, env.chain.now,
                       **stats.__dict__)
    with Unchanged(env):
        txs = env.submit(env.report(stats=stats))
    env.expect_error(txs, Err.BAD_STATS)


def test_report_about_another_worker(env: Env):
    env.expect_ok(env.submit(env.report(epoch=env.chain.now - 1)))
    with Unchanged(env):
        txs = env.apply(env.report(worker=env.relayer.address))   # the registry would send it elsewhere
    env.expect_error(txs, Err.WRONG_WORKER)


def test_report_naming_another_registry_or_tag(env: Env):
    env.expect_ok(env.submit(env.report(epoch=env.chain.now - 1)))
    with Unchanged(env):
        txs = env.apply(env.report(registry=env.relayer.address))
    env.expect_error(txs, Err.MALFORMED)
    s = env.report().to_cell().begin_parse()
    s.skip_bits(32)
    bad_tag = begin_cell().store_uint(P.REPORT_TAG + 1, 32).store_slice(s).end_cell()
    with Unchanged(env):
        txs = env.apply(bad_tag)
    env.expect_error(txs, Err.MALFORMED)


def test_truncated_and_overlong(env: Env):
    env.expect_ok(env.submit(env.report(epoch=env.chain.now - 1)))
    rep = env.report()
    long_stats = begin_cell().store_slice(GOOD.to_cell().begin_parse()).store_uint(1, 1).end_cell()
    s = rep.to_cell().begin_parse()
    head = s.load_bits(s.remaining_bits)
    overlong = begin_cell().store_bits(head).store_ref(long_stats).end_cell()
    full = P.apply_report(rep, env.relayer.address)
    cut = begin_cell().store_bits(full.begin_parse().load_bits(32 + 64 + 100)).end_cell()
    for body in (P.apply_report(overlong, env.relayer.address), cut):
        with Unchanged(env):
            txs = env.to_record(body)
        env.expect_error(txs, 9)   # cell underflow: a parse failure


def test_excess_address_outside_the_basechain(env: Env):
    env.expect_ok(env.submit(env.report(epoch=env.chain.now - 1)))
    for bad in (Address("-1:" + "44" * 32), None):
        body = (begin_cell().store_uint(P.OP["apply_report"], 32).store_uint(0, 64).store_address(bad)
                .store_ref(env.report().to_cell()).end_cell())
        with Unchanged(env):
            txs = env.to_record(body)
        env.expect_error(txs, Err.BAD_WORKCHAIN)


def test_unknown_op_from_the_registry(env: Env):
    env.expect_ok(env.submit(env.report(epoch=env.chain.now - 1)))
    with Unchanged(env):
        txs = env.to_record(begin_cell().store_uint(0xDEADBEEF, 32).store_uint(0, 64).end_cell())
    env.expect_error(txs, Err.UNKNOWN_OP)


# ------------------------------------------------------------------------------------ value
def test_too_little_value(env: Env):
    # the first message must bring the storage reserve on top of its own costs
    need = P.GAS_ALLOWANCE + P.STORAGE_RESERVE
    with Unchanged(env):
        txs = env.apply(env.report(epoch=env.chain.now - 1), value=need - 1)
    env.expect_error(txs, Err.LOW_VALUE)
    env.expect_ok(env.apply(env.report(epoch=env.chain.now - 1), value=need))
    assert env.chain.balance(env.rep) == P.STORAGE_RESERVE
    # later messages only pay for themselves
    with Unchanged(env):
        txs = env.apply(env.report(), value=P.GAS_ALLOWANCE - 1)
    env.expect_error(txs, Err.LOW_VALUE)
    env.expect_ok(env.apply(env.report(), value=P.GAS_ALLOWANCE))
    with Unchanged(env):
        txs = env.to_record(P.record_slash(env.relayer.address, TON, 1), value=P.GAS_ALLOWANCE - 1)
    env.expect_error(txs, Err.LOW_VALUE)


def test_relayed_submission_below_the_registry_minimum(env: Env):
    with Unchanged(env):
        txs = env.submit(env.report(), value=P.SUBMIT_VALUE - 1)
    env.registry_refused(txs, Err.LOW_VALUE)


# ------------------------------------------------------------------------------------ overflow
def _near_limit(env: Env, **totals) -> P.ReputationRecord:
    return P.ReputationRecord(env.reg.address, env.worker, True, {}, replace(P.Totals(), **totals),
                              ScoreState(env.chain.now), P.Slashes())


@pytest.mark.parametrize("field,limit,stats", [
    ("reports", P.MAX_UINT32, ReportStats(succeeded=1)),
    ("succeeded", P.MAX_UINT64, ReportStats(succeeded=1)),
    ("failed", P.MAX_UINT64, ReportStats(failed=1)),
    ("timed_out", P.MAX_UINT64, ReportStats(timed_out=1)),
    ("tokens", P.MAX_UINT128, ReportStats(succeeded=1, tokens=1)),
    ("latency_sum", P.MAX_UINT128, ReportStats(succeeded=1, latency_ms=1)),
])
def test_overflowing_counters(env: Env, field, limit, stats):
    # one below the limit fits exactly; the next report would pass it and is refused
    step = stats.latency_ms * stats.succeeded if field == "latency_sum" else (
        1 if field == "reports" else getattr(stats, field))
    addr = env.deploy_record(_near_limit(env, **{field: limit - 2 * step}))
    env.expect_ok(env.to_record(P.apply_report(env.report(epoch=env.chain.now - 1, stats=stats), env.relayer.address),
                                dest=addr), addr)
    assert getattr(P.ReputationRecord.from_data(env.chain.state(addr)[2]).totals, field) == limit - step
    env.expect_ok(env.to_record(P.apply_report(env.report(epoch=env.chain.now, stats=stats), env.relayer.address),
                                dest=addr), addr)
    assert getattr(P.ReputationRecord.from_data(env.chain.state(addr)[2]).totals, field) == limit
    with Unchanged(env, addr):
        txs = env.to_record(P.apply_report(env.report(epoch=env.chain.now + 1, stats=stats), env.relayer.address),
                            dest=addr)
    env.expect_error(txs, Err.COUNTER_OVERFLOW, addr)


@pytest.mark.parametrize("field", ["good", "bad", "latency"])
def test_overflowing_decayed_values(env: Env, field):
    stats = ReportStats(succeeded=1, latency_ms=1) if field != "bad" else ReportStats(failed=1)
    rec = replace(_near_limit(env), score=replace(ScoreState(env.chain.now), **{field: P.MAX_UINT128 - 100}))
    addr = env.deploy_record(rec)
    with Unchanged(env, addr):
        txs = env.to_record(P.apply_report(env.report(stats=stats), env.relayer.address), dest=addr)
    env.expect_error(txs, Err.COUNTER_OVERFLOW, addr)


def test_slash_counters_saturate(env: Env):
    rec = P.ReputationRecord(env.reg.address, env.worker, True, {}, P.Totals(),
                             ScoreState(env.chain.now, penalty=P.MAX_UINT128 - 5),
                             P.Slashes(P.MAX_UINT32, P.MAX_UINT128 - 7, 1, ()))
    addr = env.deploy_record(rec)
    env.expect_ok(env.to_record(P.record_slash(env.relayer.address, 10**15, 2), dest=addr), addr)
    after = P.ReputationRecord.from_data(env.chain.state(addr)[2])
    assert after.slashes.count == P.MAX_UINT32 and after.slashes.total == P.MAX_UINT128
    assert after.score.penalty == P.MAX_UINT128 and after.slashes.last_at == env.chain.now


# ------------------------------------------------------------------------------------ many proxies
def test_many_proxies_report_the_same_worker(env: Env):
    now = env.chain.now
    stats = {"proxy-a": GOOD, "proxy-b": ReportStats(3, 1, 0, 900, 1500), "proxy-c": ReportStats(0, 2, 4, 10, 0)}
    epochs = {"proxy-a": now - 50, "proxy-b": now - 3000, "proxy-c": now - 10}
    steps = []
    for n in PROXIES:
        env.expect_ok(env.submit(env.report(n, epochs[n], stats[n])))
        steps.append((stats[n], env.chain.now))
    # epochs are per proxy: b may still report an epoch older than a's latest
    env.chain.advance(600)
    env.expect_ok(env.submit(env.report("proxy-b", now - 2000, stats["proxy-b"])))
    steps.append((stats["proxy-b"], env.chain.now))
    totals, score = model(env, steps)
    assert env.read.totals() == totals and env.read.score_state() == score
    assert env.read.reporters() == {P.owner_hash(env.proxies["proxy-a"].address): now - 50,
                                    P.owner_hash(env.proxies["proxy-b"].address): now - 2000,
                                    P.owner_hash(env.proxies["proxy-c"].address): now - 10}
    assert env.read.score() == score.score_at(env.chain.now)
    # and each proxy's own epochs still guard against its own replays
    with Unchanged(env):
        txs = env.submit(env.report("proxy-c", now - 10, stats["proxy-c"]))
    env.expect_error(txs, Err.REPLAYED_REPORT)


def test_reporter_book_is_bounded_and_pruned(env: Env):
    now = env.chain.now
    full = {i + 1: now - 100 - i for i in range(P.MAX_REPORTERS)}
    full[1] = now - P.REPORT_WINDOW + 50        # the oldest entry: stale 51 s from now
    rec = P.ReputationRecord(env.reg.address, env.worker, True, full, P.Totals(), ScoreState(now), P.Slashes())
    addr = env.deploy_record(rec)
    newcomer = env.report("proxy-a", now)
    with Unchanged(env, addr):
        txs = env.to_record(P.apply_report(newcomer, env.relayer.address), dest=addr)
    env.expect_error(txs, Err.TOO_MANY_REPORTERS, addr)
    # a proxy already in the book may go on reporting
    old = replace(newcomer, proxy_owner_hash=5)
    env.expect_ok(env.to_record(P.apply_report(old, env.relayer.address), dest=addr), addr)
    # once an entry is older than the window, a newcomer takes its place ...
    env.chain.advance(51)
    newcomer = replace(newcomer, epoch=env.chain.now)
    env.expect_ok(env.to_record(P.apply_report(newcomer, env.relayer.address), dest=addr), addr)
    after = P.ReputationRecord.from_data(env.chain.state(addr)[2])
    assert 1 not in after.reporters and after.reporters[newcomer.proxy_owner_hash] == newcomer.epoch
    assert len(after.reporters) == P.MAX_REPORTERS
    assert P.ReputationReader(env.chain.get_method, addr).reporters() == after.reporters
    # ... and the forgotten proxy's old report is still refused: it is stale
    with Unchanged(env, addr):
        txs = env.to_record(P.apply_report(replace(newcomer, proxy_owner_hash=1, epoch=full[1]), env.relayer.address),
                            dest=addr)
    env.expect_error(txs, Err.STALE_REPORT, addr)


# ------------------------------------------------------------------------------------ decay and score
def test_decay_over_time(env: Env):
    steps = []
    for i in range(3):
        env.expect_ok(env.submit(env.report(epoch=env.chain.now)))
        steps.append((GOOD, env.chain.now))
        env.chain.advance(3600)
    _, score = model(env, steps)
    assert env.read.score_state() == score
    high = env.read.score()
    assert high == score.score_at(env.chain.now) and high > 7000
    seen = [high]
    for days in (3, 7, 30, 90):
        env.chain.advance(days * 86400)
        s = env.read.score()
        assert s == score.score_at(env.chain.now)
        assert s <= seen[-1]
        seen.append(s)
    assert seen[-1] < high
    env.chain.advance(128 * P.HALF_LIFE)
    assert env.read.score() == 5000  # no recent history: back to the prior
    # bad history rises back towards the prior as it fades
    bad = ReportStats(succeeded=0, failed=50, timed_out=50)
    env.expect_ok(env.submit(env.report(epoch=env.chain.now, stats=bad)))
    low = env.read.score()
    env.chain.advance(14 * 86400)
    assert low < env.read.score() < 5000
    assert env.read.score() == env.read.score_state().score_at(env.chain.now)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_score_matches_python_for_random_states(lang, data):
    """get_score_at of arbitrary stored states (any width, any time) equals ScoreState.score_at."""
    code = load_code("reputation", lang)
    reg, worker = Address("0:" + "11" * 32), Address("0:" + "22" * 32)
    u128 = st.one_of(st.integers(0, 2**20), st.integers(0, P.MAX_UINT128))
    chain = EmbeddedChain()
    for _ in range(8):
        state = ScoreState(data.draw(st.integers(0, 2**32 - 1)), data.draw(u128), data.draw(u128),
                           data.draw(u128), data.draw(u128))
        rec = P.ReputationRecord(reg, worker, True, {}, P.Totals(), state, P.Slashes())
        t = data.draw(st.integers(0, 2**32 - 1))
        out = run_get_method(code, rec.to_data(), reg, "get_score_at", [t], balance=TON, now=t,
                             config=chain.config)
        assert out[0] == state.score_at(t)


steps_strategy = st.lists(st.tuples(
    st.sampled_from(PROXIES + ("slash",)),
    st.builds(ReportStats, st.integers(0, 10**6), st.integers(0, 1000), st.integers(0, 1000),
              st.integers(0, 10**9), st.integers(0, 60_000)),
    st.integers(0, 20 * 86400)), min_size=1, max_size=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps_strategy)
def test_random_reports_and_slashes_match_the_model(env: Env, steps):
    """Random reports from several proxies and slashes at random times: the record's totals and
    decayed state equal the Python model after every step, the score getter equals the Python score
    now and later, and value is never created, kept or lost beyond the reserve and fees."""
    env.chain.restore(env.base_snapshot)
    applied, epochs = [], {}
    for who, stats, gap in steps:
        env.chain.advance(gap)
        before = env.chain.balance(env.rep)
        start = len(env.chain.transactions)
        if who == "slash":
            txs = env.from_stake(env.worker, R.ROLE_WORKER, P.stake_slashed(env.worker, R.ROLE_WORKER, TON, 1))
            ok = True
        else:
            epoch = max(epochs.get(who, 0) + 1, env.chain.now - 10)
            txs = env.submit(env.report(who, epoch, stats))
            ok = not stats.problems()
            if ok:
                epochs[who] = epoch
        mine = env.on_record(txs)
        assert mine and mine[0].success == ok, [t.describe() for t in txs]
        if ok:
            applied.append(("slash" if who == "slash" else stats, env.chain.now))
            rent = sum(t.storage_fees for t in env.chain.transactions[start:] if t.account == env.rep)
            # an accepted message leaves exactly the reserve (or what was there), the rest goes back
            assert env.chain.balance(env.rep) == max(before - rent, P.STORAGE_RESERVE)
        else:
            env.expect_error(txs, Err.BAD_STATS)
        totals, score = model(env, applied)
        assert env.read.totals() == totals and env.read.score_state() == score
        assert env.chain.money_leak() == 0
    _, score = model(env, applied)
    for later in (0, 3600, 40 * 86400):
        assert env.read.score_at(env.chain.now + later) == score.score_at(env.chain.now + later)
    assert env.read.score() == score.score_at(env.chain.now)


# ------------------------------------------------------------------------------------ slashes
def test_slash_is_reflected_in_the_record(env: Env):
    env.expect_ok(env.submit(env.report(epoch=env.chain.now)))
    before = env.read.score()
    env.chain.advance(60)
    stake = env.stake_addr(env.worker, R.ROLE_WORKER)
    txs = env.from_stake(env.worker, R.ROLE_WORKER, P.stake_slashed(env.worker, R.ROLE_WORKER, 7 * TON, 1, 3))
    assert has_transaction(txs, from_=env.reg.address, to=env.rep, op=P.OP["record_slash"], success=True)
    assert has_transaction(txs, from_=env.rep, to=stake, op=P.OP_EXCESSES)
    sl = env.read.slashes()
    assert (sl.count, sl.total, sl.last_at) == (1, 7 * TON, env.chain.now)
    assert sl.events == (P.SlashEvent(1, env.chain.now, 7 * TON, 1),)
    assert sl.events[0].kind_name == "objective"
    after = env.read.score()
    assert after == env.read.score_state().score_at(env.chain.now)
    assert abs(after - before // 2) <= 2  # a fresh slash halves the score
    # the penalty fades with its own half-life
    env.chain.advance(P.SLASH_HALF_LIFE)
    assert env.read.score_state().decayed_to(env.chain.now).penalty == P.FRAC_ONE // 2
    assert env.read.score() == env.read.score_state().score_at(env.chain.now)
    # a slash of a proxy stake does not touch any worker record
    data = env.chain.state(env.rep)[2].hash
    owner = env.proxies["proxy-a"].address
    txs = env.from_stake(owner, R.ROLE_PROXY, P.stake_slashed(owner, R.ROLE_PROXY, TON, 2))
    assert not has_transaction(txs, op=P.OP["record_slash"]) and env.chain.state(env.rep)[2].hash == data


def test_slash_as_the_first_message_deploys_the_record(env: Env):
    txs = env.from_stake(env.worker, R.ROLE_WORKER, P.stake_slashed(env.worker, R.ROLE_WORKER, TON, 2))
    t = env.expect_ok(txs)
    assert t.deploy and env.read.data()[2]
    assert env.read.slashes().count == 1 and env.read.totals() == P.Totals()
    assert env.read.score() == ScoreState().after_slash(env.chain.now).score_at(env.chain.now) == 2500


def test_slash_log_keeps_the_last_eight(env: Env):
    for i in range(P.SLASH_LOG_SIZE + 3):
        env.chain.advance(10)
        env.expect_ok(env.from_stake(env.worker, R.ROLE_WORKER,
                                     P.stake_slashed(env.worker, R.ROLE_WORKER, (i + 1) * TON, 1 + i % 2)))
    sl = env.read.slashes()
    assert sl.count == P.SLASH_LOG_SIZE + 3 and sl.total == sum(range(1, P.SLASH_LOG_SIZE + 4)) * TON
    assert [e.number for e in sl.events] == list(range(4, P.SLASH_LOG_SIZE + 4))
    assert sl.events[-1].amount == (P.SLASH_LOG_SIZE + 3) * TON and sl.events[-1].at == env.chain.now


# ------------------------------------------------------------------------------------ all real contracts
def test_end_to_end_with_real_stake_contracts(lang):
    """Every contract real and of one language: a proxy registers through its stake contract, its
    operator key signs reports that reach the worker's record; the worker equivocates and its stake
    contract's slash reaches the record; the proxy equivocates, is jailed, and can no longer write."""
    from wrappers import stake as S

    c = EmbeddedChain()
    owner, dao, relayer, reporter = (c.treasury(n) for n in ("owner", "dao", "relayer", "reporter"))
    stake_code, rep_code = S.stake_code(lang), load_code("reputation", lang)
    params = R.NetworkParams(staking=R.Staking(treasury=dao.address, min_worker_stake=10 * TON,
                                               min_proxy_stake=50 * TON, slash_bps=2_000, reporter_bps=1_000),
                             max_proxies=4)
    reg = Instant(R.Registry.from_init(EmbeddedProvider(c), owner.address, params,
                                       R.ChildCodes(stake_code, None, rep_code), lang=lang))
    reg.send_deploy(owner)

    def staked(name: str, role: int, amount: int):
        who, key = c.treasury(name), S.derive_operator_key(name)
        st = Instant(S.Stake.from_init(EmbeddedProvider(c), reg.address, who.address, role, code=stake_code))
        st.send(who, S.deposit(), amount + S.DEPOSIT_FEE)
        st.send(who, S.set_operator(K.public_key_int(key)))
        return who, key, st

    def equivocate(st, key):
        a, b = (S.sign_statement(key, S.Statement(st.address, S.KIND_JOB_RECEIPT, 0xC0FFEE, 1, S.payload_cell(p)))
                for p in (b"answer A", b"answer B"))
        txs = st.send(reporter, S.report_equivocation(a, b), S.REPORT_VALUE)
        assert st.read.state().jailed, [t.describe() for t in txs]
        return txs

    proxy, proxy_key, proxy_stake = staked("proxy", R.ROLE_PROXY, 60 * TON)
    proxy_stake.send(proxy, S.register_proxy("10.0.0.1:8443"))
    assert reg.read.proxy(proxy.address).active
    worker, worker_key, worker_stake = staked("worker", R.ROLE_WORKER, 20 * TON)
    rep = P.reputation_address(rep_code, reg.address, worker.address)
    read = P.ReputationReader(c.get_method, rep)

    report = P.build_report(reg.address, proxy.address, worker.address, c.now, **GOOD.__dict__)
    txs = relayer.send(reg.address, P.SUBMIT_VALUE, P.signed_submission(report, proxy_key))
    assert has_transaction(txs, to=rep, deploy=True, success=True)
    assert read.totals() == P.Totals().after_report(GOOD, c.now)

    c.advance(600)
    txs = equivocate(worker_stake, worker_key)
    slashed = 20 * TON * 2_000 // 10_000
    assert has_transaction(txs, from_=reg.address, to=rep, op=P.OP["record_slash"], success=True)
    sl = read.slashes()
    assert (sl.count, sl.total, sl.events[0].kind) == (1, slashed, P.KIND_OBJECTIVE)
    expected = ScoreState().after_report(GOOD, c.now - 600).after_slash(c.now)
    assert read.score_state() == expected and read.score() == expected.score_at(c.now)

    equivocate(proxy_stake, proxy_key)
    assert not reg.read.proxy(proxy.address).active      # jailed: the registry heard it from the stake
    data = c.state(rep)[2].hash
    later = replace(report, epoch=c.now)
    txs = relayer.send(reg.address, P.SUBMIT_VALUE, P.signed_submission(later, proxy_key))
    assert has_transaction(txs, to=reg.address, exit_code=Err.STAKE_TOO_LOW)
    assert not has_transaction(txs, op=P.OP["apply_report"]) and c.state(rep)[2].hash == data
    assert c.money_leak() == 0


# ------------------------------------------------------------------------------------ listings
def test_forwarded_reports_from_the_registry_history(env: Env):
    """The testnet/mainnet listing reads the registry's outgoing apply_report messages; here the
    embedded chain's own transactions stand in for a lite server's history."""
    from node.cli.reputation import _rows_from_history

    other = env.relayer.address
    env.expect_ok(env.submit(env.report("proxy-a", env.chain.now - 20)))
    env.submit(env.report("proxy-a", env.chain.now - 10, worker=other))
    env.expect_ok(env.submit(env.report("proxy-b", env.chain.now - 5)))
    env.chain.advance(60)
    env.expect_ok(env.submit(env.report("proxy-a", env.chain.now)))
    with Unchanged(env):
        env.submit(env.report("proxy-a", env.chain.now))               # refused: a replay
    reg_txs = [t for t in env.chain.transactions if t.account == env.reg.address]
    fwd = list(P.forwarded_reports([m for t in reg_txs for m in t.out_msgs], env.reg.address))
    a = P.owner_hash(env.proxies["proxy-a"].address)
    assert [(f.report.proxy_owner_hash == a, f.record == env.rep) for f in fwd] == [
        (True, True), (True, False), (False, True), (True, True), (True, True)]
    assert fwd[1].record == P.reputation_address(env.code, env.reg.address, other)
    assert not list(P.forwarded_reports([m for t in reg_txs for m in t.out_msgs], env.relayer.address))

    class History:  # what the CLI's context offers on a real network
        network = "testnet"
        get_method = staticmethod(env.chain.get_method)
        provider = type("Lite", (), {"get_transactions": staticmethod(lambda addr, n: _aw(reg_txs[-n:]))})()

        @staticmethod
        def call(coro):
            import asyncio
            return asyncio.run(coro)

    rows = _rows_from_history(History, env.reg.address, a, 100, env.chain.now)
    assert {(w.to_str(), e) for w, _, e, _, _ in rows} == {(env.worker.to_str(), env.chain.now),
                                                           (other.to_str(), env.chain.now - 70)}
    # a shorter history (the newest three registry transactions: the last report, the replay and its
    # bounce) only knows the last worker
    assert {w.to_str() for w, *_ in _rows_from_history(History, env.reg.address, a, 3, env.chain.now)} == {
        env.worker.to_str()}


async def _aw(value):
    return value


# ------------------------------------------------------------------------------------ the CLI
class Cli:
    """`cocoon` commands on an embedded chain kept in a temporary state file."""

    def __init__(self, tmp_path, lang: str, monkeypatch):
        from click.testing import CliRunner
        from node.cli import registry as cli_registry
        from node.cli import main

        self.main, self.runner, self.tmp = main, CliRunner(), tmp_path
        self.state = tmp_path / "chain.json"
        self.keys = {}
        for name in ("owner", "relayer", "operator"):
            f = tmp_path / f"{name}.seed"
            f.write_text(hashlib.sha256(b"cli:" + name.encode()).hexdigest())
            self.keys[name] = f
        # the registry derives stake addresses from its stake code; forged stake messages need one
        real = cli_registry._maybe_code
        monkeypatch.setattr(cli_registry, "_maybe_code",
                            lambda n, lg: real(n, lg) if n != "stake" else (real(n, lg) or STAKE_CODE))
        self.ok("registry", "deploy", "--lang", lang, "--key-file", self.keys["owner"])
        self.registry = Address((tmp_path / "registry.txt").read_text().strip())

    def run(self, *args):
        args = [str(a) for a in args]
        if args[0] != "registry" or args[1] != "advance-time":
            args += ["--state-file", str(self.state)]
        else:
            args.insert(2, "--state-file")
            args.insert(3, str(self.state))
        return self.runner.invoke(self.main, args)

    def ok(self, *args) -> str:
        r = self.run(*args)
        assert r.exit_code == 0, (r.output, r.exception)
        return r.output

    def fails(self, *args) -> str:
        r = self.run(*args)
        assert r.exit_code != 0, r.output
        assert "Traceback" not in r.output and not isinstance(r.exception, (AssertionError, TypeError, KeyError))
        lines = [ln for ln in r.output.strip().splitlines() if ln.startswith("Error")]
        assert len(lines) == 1, r.output
        return lines[0]

    def chain(self) -> EmbeddedChain:
        return EmbeddedChain.load(self.state)

    def stake_worker(self, owner: Address) -> None:
        """Only a staked worker can be reported: a worker stake for ``owner``, deployed by a top-up."""
        c = self.chain()
        rd = R.RegistryReader(c.get_method, self.registry)
        si = R.child_state_init(rd.child_codes().stake, self.registry, R.stake_identity(owner, R.ROLE_WORKER))
        c.mint(rd.stake_address(owner, R.ROLE_WORKER), TON, state_init=si)
        c.save(self.state)

    def register_proxy(self, owner: Address, operator_key: int):
        """Registration goes through a proxy's stake contract: forged from its address here."""
        c = self.chain()
        stake = R.RegistryReader(c.get_method, self.registry).stake_address(owner, R.ROLE_PROXY)
        body = R.register_proxy(owner, operator_key, 60 * TON, True, "10.0.0.9:8443")
        c.minted += 50_000_000
        txs = c.send(c.internal(stake, self.registry, 50_000_000, body))
        assert has_transaction(txs, to=self.registry, success=True)
        c.save(self.state)


def test_cli_show_submit_and_listing(lang, tmp_path, monkeypatch):
    cli = Cli(tmp_path, lang, monkeypatch)
    worker, other = Address("0:" + "5a" * 32), Address("0:" + "6b" * 32)
    proxy = Address("0:" + "7c" * 32)
    out = cli.ok("reputation", "show", worker.to_str())
    assert "no record yet" in out
    assert "has reported no worker" in cli.ok("reputation", "reported", proxy.to_str())
    # an unregistered proxy cannot report: refused before anything is sent
    args = ["reputation", "submit", worker.to_str(), "--proxy", proxy.to_str(), "--operator-key-file",
            cli.keys["operator"], "--key-file", cli.keys["relayer"]]
    assert "not a registered proxy" in cli.fails(*args, "--succeeded", 3)
    op_seed = bytes.fromhex(cli.keys["operator"].read_text())
    cli.register_proxy(proxy, K.public_key_int(op_seed))
    assert "has no worker stake" in cli.fails(*args, "--succeeded", 3)
    cli.stake_worker(worker)
    cli.stake_worker(other)
    now = cli.chain().now
    out = cli.ok(*args, "--epoch", now - 30, "--succeeded", 40, "--failed", 2, "--timed-out", 1, "--tokens", 9000,
                 "--latency-ms", 700)
    assert f"report for epoch {now - 30} applied" in out
    cli.ok(*args[:2], other.to_str(), *args[3:], "--failed", 5)
    # show: the numbers are the record's, the score the Python model's
    stats = ReportStats(40, 2, 1, 9000, 700)
    expected = ScoreState().after_report(stats, now)
    out = cli.ok("reputation", "show", worker.to_str())
    assert "40 succeeded, 2 failed, 1 timed out" in out and "700 ms mean" in out and "reports       1 from 1 proxy" in out
    assert f"score         {expected.score_at(now)} / 10000" in out
    doc = json.loads(cli.ok("reputation", "show", worker.to_str(), "--json"))
    assert doc["totals"] == {"reports": 1, "succeeded": 40, "failed": 2, "timed_out": 1, "tokens": 9000,
                             "latency_sum": 28000, "last_report_at": now}
    assert doc["score"] == expected.score_at(now) and doc["reporters"] == {f"{P.owner_hash(proxy):064x}": now - 30}
    # the listing names both workers the proxy reported
    out = cli.ok("reputation", "reported", proxy.to_str())
    assert worker.to_str() in out and other.to_str() in out and "source: the records on the embedded chain" in out
    assert "has reported no worker" in cli.ok("reputation", "reported", worker.to_str())
    # refusals: one line each, no traceback, nothing sent
    assert "already reported epoch" in cli.fails(*args, "--epoch", now - 30, "--succeeded", 1)
    assert "would refuse this report" in cli.fails(*args, "--succeeded", 0)
    assert "older than the 3-day report window" in cli.fails(*args, "--epoch", now - 4 * 86400, "--succeeded", 1)
    wrong = tmp_path / "wrong.seed"
    wrong.write_text("11" * 32)
    bad = [a if a != cli.keys["operator"] else wrong for a in args]
    assert "not the proxy's registered key" in cli.fails(*bad, "--succeeded", 1)
    assert "is not a TON address" in cli.fails("reputation", "show", "not-an-address")
    assert "at least 0.05 TON" in cli.fails(*args, "--succeeded", 1, "--value", 0.01)
    assert json.loads(cli.ok("reputation", "show", worker.to_str(), "--json"))["totals"]["reports"] == 1
    # time passes: the score shown decays exactly as the model says
    cli.ok("registry", "advance-time", 10 * 86400)
    doc = json.loads(cli.ok("reputation", "show", worker.to_str(), "--json"))
    assert doc["score"] == expected.score_at(now + 10 * 86400) < expected.score_at(now)


def test_cli_shows_slashes(lang, tmp_path, monkeypatch):
    cli = Cli(tmp_path, lang, monkeypatch)
    worker = Address("0:" + "5a" * 32)
    c = cli.chain()
    stake = R.RegistryReader(c.get_method, cli.registry).stake_address(worker, R.ROLE_WORKER)
    c.minted += 50_000_000
    c.send(c.internal(stake, cli.registry, 50_000_000, P.stake_slashed(worker, R.ROLE_WORKER, 4 * TON, 2)))
    c.save(cli.state)
    out = cli.ok("reputation", "show", worker.to_str())
    assert "slashes       1, 4 TON in all" in out and "#1" in out and "(governance)" in out
    assert "score         2500 / 10000" in out and "last report   never" in out

"""Stake contract: every message, getter and error path, once per language (see TESTING.md).

The registry is the real one, deployed with the same language and holding the stake code, so every
notification the stake sends is authenticated and applied by it.
"""
from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from tests.conftest import per_language
from pytoniq_core import Address, Cell, begin_cell
from pytoniq_core.tlb.account import StateInit
from pytoniq_core.tlb.transaction import MessageAny

from wrappers import keys as K
from wrappers import registry as R
from wrappers import stake as S
from wrappers.chain.contract import Instant
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider
from wrappers.chain.records import find_transactions, has_transaction
from wrappers import TON
from wrappers.stake import Err, ROLE_PROXY, ROLE_WORKER

DELAY = 3600
UNBOND = 7 * 86400
MIN_WORKER, MIN_PROXY = 10 * TON, 50 * TON
SLASH_BPS, REPORTER_BPS = 5_000, 1_000
WORKER_STAKE, PROXY_STAKE = 20 * TON, 60 * TON


def wallet_key(name: str):
    """The Ed25519 key of the embedded treasury called ``name``: the operator key is also the key of
    a wallet, so the tests can show that this key cannot move funds."""
    return K.signing_key(hashlib.sha256(b"cocoon-embedded-treasury:" + name.encode()).digest())


class Env:
    def __init__(self, lang: str):
        self.lang = lang
        self.chain = c = EmbeddedChain()
        self.owner = c.treasury("registry-owner")
        self.provider = c.treasury("provider")            # owns the worker stake
        self.proxy_owner = c.treasury("proxy-owner")      # owns the proxy stake
        self.stranger, self.reporter, self.dao = c.treasury("stranger"), c.treasury("reporter"), c.treasury("dao")
        self.operator = c.treasury("operator")            # a wallet whose key is the worker's operator key
        self.op_key, self.op_key2, self.other_key = wallet_key("operator"), S.derive_operator_key("rotated"), \
            S.derive_operator_key("someone-else")
        self.proxy_key = S.derive_operator_key("proxy-operator")
        self.code = S.stake_code(lang)
        self.params = R.NetworkParams(
            staking=R.Staking(treasury=self.dao.address, min_worker_stake=MIN_WORKER, min_proxy_stake=MIN_PROXY,
                              unbonding_period=UNBOND, slash_bps=SLASH_BPS, reporter_bps=REPORTER_BPS),
            governance_delay=DELAY, max_proxies=4)
        self.reg = Instant(R.Registry.from_init(EmbeddedProvider(c), self.owner.address, self.params,
                                                R.ChildCodes(self.code, None, None), lang=lang))
        self.reg.send_deploy(self.owner)
        self.worker = self.stake(self.provider.address, ROLE_WORKER)
        self.deploy_txs = self.worker.send(self.provider, S.deposit(), WORKER_STAKE + S.DEPOSIT_FEE)
        self.worker.send(self.provider, S.set_operator(K.public_key_int(self.op_key)))
        self.proxy = self.stake(self.proxy_owner.address, ROLE_PROXY)
        self.proxy.send(self.proxy_owner, S.deposit(), PROXY_STAKE + S.DEPOSIT_FEE)
        self.proxy.send(self.proxy_owner, S.set_operator(K.public_key_int(self.proxy_key)))

    def stake(self, owner: Address, role: int, registry: Address | None = None) -> Instant:
        return Instant(S.Stake.from_init(EmbeddedProvider(self.chain), registry or self.reg.address, owner, role,
                                         code=self.code))

    def forge(self, src: Address, dest: Address, body: Cell, value: int = 50_000_000, bounced: bool = False):
        """A message from an address we do not control (the registry, a bounce): only the emulator can
        forge a sender, which is what lets us test that the stake checks it. The value is minted, so
        the chain's money accounting stays exact."""
        msg = self.chain.internal(src, dest, value, body)
        if bounced:
            m = MessageAny.deserialize(msg.begin_parse())
            m.info.bounced, m.info.bounce = True, False
            msg = m.serialize()
        self.chain.minted += value
        return self.chain.send(msg)

    def on(self, stake, txs):
        return [t for t in txs if t.account.hash_part == stake.address.hash_part]

    def on_registry(self, txs):
        return [t for t in txs if t.account.hash_part == self.reg.address.hash_part and not t.bounced]

    def expect_error(self, stake, txs, code: int):
        mine = [t for t in self.on(stake, txs) if not t.bounced]
        assert mine, "the message never reached the stake contract"
        assert mine[0].exit_code == code, \
            f"expected {S.describe_error(code)}, got {S.describe_error(mine[0].exit_code)}"
        assert not mine[0].success

    def statement(self, key, payload: bytes = b"answer A", *, stake=None, kind: int = S.KIND_JOB_RECEIPT,
                  context: int = 0xC0FFEE, seqno: int = 7) -> S.SignedStatement:
        target = stake.address if stake is not None else self.worker.address
        return S.sign_statement(key, S.Statement(target, kind, context, seqno, S.payload_cell(payload)))

    def report(self, a, b, sender=None, value: int = S.REPORT_VALUE, stake=None):
        return (stake or self.worker).send(sender or self.reporter, S.report_equivocation(a, b), value)

    def propose_and_wait(self, action: Cell) -> int:
        pid = self.reg.read.proposals()[1]
        txs = self.reg.send(self.owner, R.propose(action))
        assert has_transaction(txs, to=self.reg.address, success=True)
        self.chain.advance(DELAY)
        return pid


env = per_language(Env)  # deployed once per language, restored before every test


class Unchanged:
    """Asserts that a refused operation changed no state of the stake contract and moved no funds:
    its data and balance are what they were (storage rent aside) and it sent nothing but the bounce."""

    def __init__(self, env: Env, stake: Instant | None = None):
        self.env, self.stake = env, stake or env.worker

    def __enter__(self):
        self.data, self.bal = self.stake.data_hash, self.stake.balance
        self.state = self.stake.read.state()
        self.start = len(self.env.chain.transactions)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            txs = self.env.chain.transactions[self.start:]
            mine = self.env.on(self.stake, txs)
            assert self.stake.data_hash == self.data, "state changed on a refused operation"
            assert self.stake.read.state() == self.state
            rent = sum(t.storage_fees for t in mine)
            assert self.stake.balance >= self.bal - rent, "the stake lost money on a refused operation"
            assert self.stake.balance - self.bal < 1_000_000, "a refused operation kept the sender's value"
            for t in mine:
                if not t.bounced:
                    assert not t.success
                    # only the bounce of the refused message leaves the contract
                    assert all(m.info.bounced for m in t.out_msgs)


def status_messages(env: Env, txs, stake=None):
    stake = stake or env.worker
    return find_transactions(txs, from_=stake.address, to=env.reg.address, op=S.REGISTRY_OP["stake_status"])


def parse_status(t) -> tuple[bool, int, int]:
    s = t.in_msg.body.begin_parse()
    s.skip_bits(32 + 64)
    s.load_address()
    s.skip_bits(8)
    return bool(s.load_bit()), s.load_uint(256), s.load_coins()


def payouts(txs, stake, reason: int):
    return [t for t in find_transactions(txs, from_=stake.address, op=S.OP["payout"])
            if S.payout_reason(t.in_msg.body) == reason]


# ================================================================================================
# Deployment, parameters, getters

def test_first_deposit_deploys_queries_params_and_reports_status(env: Env):
    w = env.worker
    assert has_transaction(env.deploy_txs, to=w.address, deploy=True, success=True)
    assert env.reg.read.stake_address(env.provider.address, ROLE_WORKER) == w.address
    assert has_transaction(env.deploy_txs, from_=w.address, to=env.reg.address, op=S.REGISTRY_OP["query_params"])
    assert has_transaction(env.deploy_txs, from_=env.reg.address, to=w.address,
                           op=S.REGISTRY_OP["params_response"], success=True)
    st = w.read.state()
    assert (st.registry, st.owner, st.role) == (env.reg.address, env.provider.address, ROLE_WORKER)
    assert st.params_ready and st.is_active and not st.jailed
    assert st.active == WORKER_STAKE and st.unbonding == 0
    version, staking = w.read.params()
    assert staking == env.params.staking and version == env.reg.read.version()
    assert w.read.keys() == S.Keys(K.public_key_int(env.op_key), 0, 0)
    assert w.read.slashing() == S.Slashing(0, 0, 0) and w.read.is_active()
    assert w.read.unbonding() == S.Unbonding([], 0, 0)
    # the registry heard of the activation
    sent = status_messages(env, env.deploy_txs)
    assert sent and parse_status(sent[-1]) == (True, 0, WORKER_STAKE) and sent[-1].success
    # balance: the stake plus the reserve (and what notifications returned)
    assert w.balance >= WORKER_STAKE + S.MIN_RESERVE


def test_serves_with_checks_activity_and_key(env: Env):
    w = env.worker
    key = env.op_key.public_key().public_bytes_raw()
    assert w.read.serves_with(key) and w.read.serves_with(K.public_key_int(env.op_key))
    assert not w.read.serves_with(K.public_key_int(env.other_key))
    w.send(env.provider, S.unbond(WORKER_STAKE - MIN_WORKER + 1))
    assert not w.read.serves_with(key)


def test_getters_read_the_initial_form(env: Env):
    s = env.stake(env.stranger.address, ROLE_PROXY)
    txs = env.stranger.send(s.address, TON, None, state_init=s.state_init)
    assert has_transaction(txs, to=s.address, deploy=True, success=True)
    assert env.chain.state(s.address)[2].begin_parse().remaining_bits == 267  # still child_init
    st = s.read.state()
    assert (st.owner, st.role, st.active, st.params_ready, st.is_active) == (env.stranger.address, ROLE_PROXY, 0,
                                                                               False, False)
    assert s.read.params() == (0, None) and s.read.unbonding().requests == []


def test_first_operation_other_than_a_deposit_pays_the_init(env: Env):
    s = env.stake(env.stranger.address, ROLE_WORKER)
    key = K.public_key_int(env.other_key)
    txs = s.send(env.stranger, S.set_operator(key), S.OP_VALUE + S.INIT_VALUE - 1)
    env.expect_error(s, txs, Err.LOW_VALUE)
    txs = s.send(env.stranger, S.set_operator(key), S.OP_VALUE + S.INIT_VALUE)
    assert env.on(s, txs)[0].success
    assert has_transaction(txs, from_=env.reg.address, to=s.address, op=S.REGISTRY_OP["params_response"], success=True)
    st = s.read.state()
    assert st.params_ready and st.operator_key == key and st.active == 0 and not st.is_active
    assert s.balance >= S.MIN_RESERVE


def test_refresh_initialises_a_stake_deployed_by_a_top_up(env: Env):
    s = env.stake(env.stranger.address, ROLE_PROXY)
    env.stranger.send(s.address, TON, None, state_init=s.state_init)
    txs = s.send(env.reporter, S.refresh_params(), S.REFRESH_VALUE)
    assert env.on(s, txs)[0].success
    assert env.chain.state(s.address)[2].begin_parse().remaining_bits > 267  # the full storage now
    assert s.read.params() == (env.reg.read.version(), env.params.staking)
    assert s.read.state().owner == env.stranger.address and not s.read.is_active()


def test_the_other_build_reads_the_same_storage(env: Env):
    """Both builds follow one layout (stake.tlb): the other language's getters, run on this build's
    data, return the same values (in the initial form too)."""
    from wrappers.chain.getmethod import run_get_method

    w = env.worker
    w.send(env.provider, S.unbond(3 * TON))
    env.chain.advance(60)
    w.send(env.provider, S.unbond(2 * TON))
    w.send(env.provider, S.set_operator(K.public_key_int(env.op_key2)))
    env.report(env.statement(env.op_key2, b"a"), env.statement(env.op_key2, b"b"))
    fresh = env.stake(env.stranger.address, ROLE_PROXY)
    env.stranger.send(fresh.address, TON, None, state_init=fresh.state_init)
    other = S.stake_code("tolk" if env.lang == "func" else "func")
    for stake in (w, fresh):
        _status, code, data = env.chain.state(stake.address)

        def on(c):
            return lambda addr, method, stack: run_get_method(c, data, addr, method, stack, balance=stake.balance,
                                                              now=env.chain.now, config=env.chain.config)

        mine, theirs = S.StakeReader(on(code), stake.address), S.StakeReader(on(other), stake.address)
        for getter in ("state", "unbonding", "params", "keys", "slashing", "is_active"):
            assert getattr(mine, getter)() == getattr(theirs, getter)(), getter
    assert w.read.unbonding().requests and w.read.state().jailed


@pytest.mark.parametrize("body", [None, begin_cell().store_uint(0, 32).store_snake_string("tip").end_cell(),
                                  begin_cell().store_uint(S.OP_EXCESSES, 32).store_uint(5, 64).end_cell()])
def test_top_up_comment_and_excesses_change_nothing(env: Env, body):
    data, bal = env.worker.data_hash, env.worker.balance
    txs = env.stranger.send(env.worker.address, TON, body)
    assert has_transaction(txs, to=env.worker.address, success=True)
    assert env.worker.data_hash == data and env.worker.balance > bal + TON // 2


def test_unknown_op(env: Env):
    with Unchanged(env):
        txs = env.worker.send(env.provider, begin_cell().store_uint(0xDEADBEEF, 32).store_uint(0, 64).end_cell())
    env.expect_error(env.worker, txs, Err.UNKNOWN_OP)


@pytest.mark.parametrize("owner,role,code", [
    (Address("-1:" + "33" * 32), ROLE_WORKER, Err.BAD_WORKCHAIN),
    (None, 3, Err.MALFORMED),
])
def test_identity_is_checked_on_the_first_operation(env: Env, owner, role, code):
    owner = owner or env.stranger.address
    s = env.stake(owner, role)
    txs = env.stranger.send(s.address, S.DEPOSIT_FEE + TON, S.deposit(), state_init=s.state_init)
    env.expect_error(s, txs, code)
    assert s.balance < 1_000_000  # the value bounced


def test_refresh_picks_up_new_params_and_deactivates(env: Env):
    from dataclasses import replace
    new = replace(env.params, staking=replace(env.params.staking, min_worker_stake=WORKER_STAKE + 1,
                                                              unbonding_period=2 * DELAY))
    pid = env.propose_and_wait(R.action_set_params(new))
    env.reg.send(env.stranger, R.execute_proposal(pid))
    assert env.worker.read.is_active()  # parameters are not pushed: the stake still has the old ones
    with Unchanged(env):
        txs = env.worker.send(env.stranger, S.refresh_params(), S.REFRESH_VALUE - 1)
    env.expect_error(env.worker, txs, Err.LOW_VALUE)
    txs = env.worker.send(env.stranger, S.refresh_params(query_id=9), S.REFRESH_VALUE)
    assert has_transaction(txs, to=env.worker.address, op=S.OP["refresh_params"], success=True)
    version, staking = env.worker.read.params()
    assert staking == new.staking and version == env.reg.read.version()
    assert not env.worker.read.is_active()
    sent = status_messages(env, txs)
    assert sent and parse_status(sent[-1])[0] is False
    # the refresher got its value back, minus the query and the fees
    back = find_transactions(txs, from_=env.worker.address, to=env.stranger.address, op=S.OP_EXCESSES)
    assert back and S.REFRESH_VALUE - S.QUERY_VALUE - 10_000_000 < back[0].value < S.REFRESH_VALUE - S.QUERY_VALUE
    # and the new unbonding period applies to the next request
    env.worker.send(env.provider, S.unbond(TON))
    assert env.worker.read.unbonding().requests[0].unlock_at == env.chain.now + 2 * DELAY


def test_params_response_only_from_the_registry(env: Env):
    from dataclasses import replace
    fake = replace(env.params, staking=replace(env.params.staking, slash_bps=10_000, reporter_bps=10_000,
                                               treasury=env.stranger.address))
    body = (begin_cell().store_uint(S.REGISTRY_OP["params_response"], 32).store_uint(0, 64).store_uint(99, 32)
            .store_ref(fake.to_cell()).end_cell())
    with Unchanged(env):
        txs = env.worker.send(env.stranger, body)
    env.expect_error(env.worker, txs, Err.WRONG_SENDER)
    assert env.worker.read.params()[1] == env.params.staking


# ================================================================================================
# Parameters pending: a stake whose "registry" never answers

@pytest.fixture
def pending(env: Env):
    """A worker and a proxy stake whose registry is the stranger's wallet: no params_response comes."""
    w = env.stake(env.provider.address, ROLE_WORKER, registry=env.stranger.address)
    p = env.stake(env.proxy_owner.address, ROLE_PROXY, registry=env.stranger.address)
    txs = w.send(env.provider, S.deposit(), WORKER_STAKE + S.DEPOSIT_FEE)
    assert has_transaction(txs, from_=w.address, to=env.stranger.address, op=S.REGISTRY_OP["query_params"])
    p.send(env.proxy_owner, S.deposit(), PROXY_STAKE + S.DEPOSIT_FEE)
    w.send(env.provider, S.set_operator(K.public_key_int(env.op_key)))  # the first key needs no params
    assert w.read.keys().operator_key == K.public_key_int(env.op_key)
    st = w.read.state()
    assert st.active == WORKER_STAKE and not st.params_ready and not st.is_active
    return w, p


def test_operations_that_need_params_wait_for_them(env: Env, pending):
    w, p = pending
    cases = [
        (w, env.provider, S.unbond(TON), S.OP_VALUE),
        (w, env.provider, S.set_operator(K.public_key_int(env.op_key2)), S.OP_VALUE),   # a rotation
        (p, env.proxy_owner, S.register_proxy("10.0.0.1:443"), S.OP_VALUE),
        (w, env.reporter, S.report_equivocation(env.statement(env.op_key, b"a", stake=w),
                                                env.statement(env.op_key, b"b", stake=w)), S.REPORT_VALUE),
    ]
    for stake, sender, body, value in cases:
        with Unchanged(env, stake):
            txs = stake.send(sender, body, value)
        env.expect_error(stake, txs, Err.PARAMS_PENDING)
    # a governance slash from its registry too
    slash = (begin_cell().store_uint(S.REGISTRY_OP["governance_slash"], 32).store_uint(0, 64).store_coins(TON)
             .store_uint(1, 256).end_cell())
    with Unchanged(env, w):
        txs = env.forge(env.stranger.address, w.address, slash)
    env.expect_error(w, txs, Err.PARAMS_PENDING)


def test_params_arrive_later_and_activate(env: Env, pending):
    w, _ = pending
    body = (begin_cell().store_uint(S.REGISTRY_OP["params_response"], 32).store_uint(0, 64).store_uint(5, 32)
            .store_ref(env.params.to_cell()).end_cell())
    # from the real registry, which is not this stake's registry: refused
    with Unchanged(env, w):
        txs = env.forge(env.reg.address, w.address, body)
    env.expect_error(w, txs, Err.WRONG_SENDER)
    txs = env.forge(env.stranger.address, w.address, body)
    assert env.on(w, txs)[0].success
    assert w.read.params() == (5, env.params.staking) and w.read.is_active()
    # the activation goes to its registry (here the wallet)
    assert has_transaction(txs, from_=w.address, to=env.stranger.address, op=S.REGISTRY_OP["stake_status"])


# ================================================================================================
# Deposit

def test_deposit_counts_value_minus_fee_and_returns_the_unspent_fee(env: Env):
    w = env.worker
    txs = w.send(env.provider, S.deposit(query_id=3), 5 * TON + S.DEPOSIT_FEE)
    assert env.on(w, txs)[0].success
    assert w.read.state().active == WORKER_STAKE + 5 * TON
    back = find_transactions(txs, from_=w.address, to=env.provider.address, op=S.OP_EXCESSES)
    assert back and 0 < back[0].value < S.DEPOSIT_FEE
    assert parse_status(status_messages(env, txs)[0]) == (True, K.public_key_int(env.op_key), WORKER_STAKE + 5 * TON)
    assert w.balance >= WORKER_STAKE + 5 * TON + S.MIN_RESERVE


@pytest.mark.parametrize("value", [S.DEPOSIT_FEE, S.DEPOSIT_FEE - 1, S.DEPOSIT_FEE // 2])
def test_deposit_too_small_to_cover_the_fee(env: Env, value):
    with Unchanged(env):
        txs = env.worker.send(env.provider, S.deposit(), value)
    env.expect_error(env.worker, txs, Err.LOW_VALUE)


def test_first_deposit_too_small_deploys_nothing_usable(env: Env):
    s = env.stake(env.stranger.address, ROLE_WORKER)
    txs = s.send(env.stranger, S.deposit(), S.DEPOSIT_FEE)
    env.expect_error(s, txs, Err.LOW_VALUE)
    assert s.balance == 0 and has_transaction(txs, from_=s.address, to=env.stranger.address, bounced=True)


def test_deposit_by_stranger_or_operator(env: Env):
    for who in (env.stranger, env.operator):
        with Unchanged(env):
            txs = env.worker.send(who, S.deposit(), 5 * TON)
        env.expect_error(env.worker, txs, Err.NOT_OWNER)


def test_below_minimum_is_inactive_until_topped_up(env: Env):
    s = env.stake(env.stranger.address, ROLE_WORKER)
    s.send(env.stranger, S.deposit(), MIN_WORKER - 1 + S.DEPOSIT_FEE)
    assert s.read.state().params_ready and not s.read.is_active()
    txs = s.send(env.stranger, S.deposit(), 1 + S.DEPOSIT_FEE)
    assert s.read.is_active() and s.read.state().active == MIN_WORKER
    assert parse_status(status_messages(env, txs, s)[0]) == (True, 0, MIN_WORKER)


# ================================================================================================
# Operator key

def test_rotation_retires_the_key_and_a_second_rotation_waits(env: Env):
    w = env.worker
    k1, k2, k3 = (K.public_key_int(k) for k in (env.op_key, env.op_key2, env.other_key))
    txs = w.send(env.provider, S.set_operator(k2))
    assert env.on(w, txs)[0].success
    assert w.read.keys() == S.Keys(k2, k1, env.chain.now + UNBOND)
    assert parse_status(status_messages(env, txs)[0]) == (True, k2, WORKER_STAKE)
    env.chain.advance(UNBOND - 1)
    with Unchanged(env):
        txs = w.send(env.provider, S.set_operator(k3))
    env.expect_error(w, txs, Err.ROTATION_TOO_SOON)
    env.chain.advance(1)
    assert env.on(w, w.send(env.provider, S.set_operator(k3)))[0].success
    assert w.read.keys() == S.Keys(k3, k2, env.chain.now + UNBOND)


def test_same_key_changes_nothing(env: Env):
    data = env.worker.data_hash
    txs = env.worker.send(env.provider, S.set_operator(K.public_key_int(env.op_key)))
    assert env.on(env.worker, txs)[0].success and env.worker.data_hash == data
    assert not status_messages(env, txs)


def test_rotation_by_stranger_or_operator(env: Env):
    for who in (env.stranger, env.operator):
        with Unchanged(env):
            txs = env.worker.send(who, S.set_operator(K.public_key_int(env.other_key)))
        env.expect_error(env.worker, txs, Err.NOT_OWNER)


def test_owner_op_too_little_value(env: Env):
    for body in (S.set_operator(1), S.unbond(TON), S.withdraw()):
        with Unchanged(env):
            txs = env.worker.send(env.provider, body, S.OP_VALUE - 1)
        env.expect_error(env.worker, txs, Err.LOW_VALUE)


# ================================================================================================
# Unbonding and withdrawal

def test_unbond_and_withdraw_after_the_period(env: Env):
    w = env.worker
    txs = w.send(env.provider, S.unbond(15 * TON))
    assert env.on(w, txs)[0].success
    st = w.read.state()
    assert (st.active, st.unbonding, st.is_active) == (5 * TON, 15 * TON, False)
    assert parse_status(status_messages(env, txs)[0]) == (False, K.public_key_int(env.op_key), 5 * TON)
    unlock = env.chain.now + UNBOND
    assert w.read.unbonding() == S.Unbonding([S.UnbondRequest(0, 15 * TON, unlock)], 0, unlock)
    env.chain.advance(UNBOND - 1)
    with Unchanged(env):
        txs = w.send(env.provider, S.withdraw())
    env.expect_error(w, txs, Err.STILL_LOCKED)
    env.chain.advance(1)
    assert w.read.unbonding().withdrawable_now == 15 * TON
    owner_before = env.provider.balance
    txs = w.send(env.provider, S.withdraw(query_id=4))
    paid = payouts(txs, w, S.PAYOUT_WITHDRAWAL)
    assert paid and paid[0].account == env.provider.address
    assert 15 * TON <= paid[0].value < 15 * TON + S.OP_VALUE + 100_000_000
    assert not paid[0].in_msg.info.bounce
    assert w.read.state().unbonding == 0 and w.read.unbonding().requests == []
    assert w.balance == 5 * TON + S.MIN_RESERVE  # exactly the stake and the reserve remain
    assert env.provider.balance > owner_before + 15 * TON - S.OP_VALUE
    with Unchanged(env):
        txs = w.send(env.provider, S.withdraw())
    env.expect_error(w, txs, Err.NOTHING_UNBONDING)


def test_several_requests_in_flight(env: Env):
    w = env.worker
    for i in range(S.MAX_UNBONDING):
        assert env.on(w, w.send(env.provider, S.unbond(TON + i)))[0].success
        env.chain.advance(100)
    with Unchanged(env):
        txs = w.send(env.provider, S.unbond(TON))
    env.expect_error(w, txs, Err.TOO_MANY_UNBONDING)
    ub = w.read.unbonding()
    assert [r.amount for r in ub.requests] == [TON, TON + 1, TON + 2, TON + 3]
    assert w.read.state().unbonding == ub.total == 4 * TON + 6
    # only the first two are unlocked at this time
    env.chain.advance(UNBOND - 300)
    assert w.read.unbonding().withdrawable_now == 2 * TON + 1
    paid = payouts(w.send(env.provider, S.withdraw()), w, S.PAYOUT_WITHDRAWAL)
    assert paid and paid[0].value >= 2 * TON + 1
    assert [r.amount for r in w.read.unbonding().requests] == [TON + 2, TON + 3]
    assert w.read.state().unbonding == 2 * TON + 5
    # a slot is free again
    assert env.on(w, w.send(env.provider, S.unbond(TON)))[0].success


@pytest.mark.parametrize("amount", [0, WORKER_STAKE + 1, S.MAX_COINS])
def test_unbond_amount_out_of_range(env: Env, amount):
    with Unchanged(env):
        txs = env.worker.send(env.provider, S.unbond(amount))
    env.expect_error(env.worker, txs, Err.BAD_AMOUNT)


def test_unbond_everything(env: Env):
    txs = env.worker.send(env.provider, S.unbond(WORKER_STAKE))
    assert env.on(env.worker, txs)[0].success
    assert env.worker.read.state().active == 0 and not env.worker.read.is_active()


def test_unbond_and_withdraw_by_stranger_or_operator(env: Env):
    env.worker.send(env.provider, S.unbond(TON))
    env.chain.advance(UNBOND)
    for who in (env.stranger, env.operator):
        for body in (S.unbond(TON), S.withdraw()):
            with Unchanged(env):
                txs = env.worker.send(who, body)
            env.expect_error(env.worker, txs, Err.NOT_OWNER)
    # the operator key signs statements but also controls a wallet: still nothing moves
    assert env.operator.public_key == K.public_key_int(env.op_key).to_bytes(32, "big")


# ================================================================================================
# Proxies

def test_proxy_registers_through_its_stake(env: Env):
    p = env.proxy
    txs = p.send(env.proxy_owner, S.register_proxy("10.0.0.1:8443", query_id=11), TON)
    assert has_transaction(txs, from_=p.address, to=env.reg.address, op=S.REGISTRY_OP["register_proxy"], success=True)
    info = env.reg.read.proxy(env.proxy_owner.address)
    assert info and info.active and info.stake == PROXY_STAKE and info.endpoint == "10.0.0.1:8443"
    assert info.operator_key == K.public_key_int(env.proxy_key)
    # the registry returns the excess to the owner
    back = find_transactions(txs, from_=env.reg.address, to=env.proxy_owner.address, op=S.OP_EXCESSES)
    assert back and back[0].value > TON // 2
    # the stake keeps exactly its stake and reserve
    assert p.balance >= PROXY_STAKE + S.MIN_RESERVE
    # the registry follows activity: unbonding below the minimum deactivates, a deposit reactivates
    p.send(env.proxy_owner, S.unbond(PROXY_STAKE - MIN_PROXY + 1))
    info = env.reg.read.proxy(env.proxy_owner.address)
    assert not info.active and info.stake == MIN_PROXY - 1
    p.send(env.proxy_owner, S.deposit(), TON + S.DEPOSIT_FEE)
    assert env.reg.read.proxy(env.proxy_owner.address).active
    # and key rotations
    p.send(env.proxy_owner, S.set_operator(K.public_key_int(env.other_key)))
    assert env.reg.read.proxy(env.proxy_owner.address).operator_key == K.public_key_int(env.other_key)


def test_register_proxy_refusals(env: Env):
    p = env.proxy
    with Unchanged(env):
        txs = env.worker.send(env.provider, S.register_proxy("10.0.0.1:8443"))
    env.expect_error(env.worker, txs, Err.NOT_PROXY)
    with Unchanged(env, p):
        txs = p.send(env.stranger, S.register_proxy("10.0.0.1:8443"))
    env.expect_error(p, txs, Err.NOT_OWNER)
    bad = (begin_cell().store_uint(S.OP["register_proxy"], 32).store_uint(0, 64)
           .store_ref(begin_cell().store_uint(1, 8).store_ref(Cell.empty()).end_cell()).end_cell())
    with Unchanged(env, p):
        txs = p.send(env.proxy_owner, bad)
    env.expect_error(p, txs, Err.MALFORMED)
    with Unchanged(env, p):
        txs = p.send(env.proxy_owner, S.register_proxy("10.0.0.1:8443"), S.OP_VALUE - 1)
    env.expect_error(p, txs, Err.LOW_VALUE)
    p.send(env.proxy_owner, S.unbond(PROXY_STAKE - MIN_PROXY + 1))
    with Unchanged(env, p):
        txs = p.send(env.proxy_owner, S.register_proxy("10.0.0.1:8443"))
    env.expect_error(p, txs, Err.NOT_ACTIVE)
    assert env.reg.read.proxy(env.proxy_owner.address) is None


# ================================================================================================
# Storage fees: after idle years an owner's operation brings the deficit, and the registry stays true

@pytest.mark.parametrize("years", [1, 2, 5])
def test_after_idle_years_the_registry_never_lists_more_than_the_stake_holds(env: Env, years):
    p = env.proxy
    p.send(env.proxy_owner, S.register_proxy("10.0.0.1:8443"), TON)
    assert env.reg.read.proxy(env.proxy_owner.address).active
    env.chain.advance(years * 365 * 86400)
    # the documented minimum alone cannot refill the reserve and pay the notification: refused
    with Unchanged(env, p):
        txs = p.send(env.proxy_owner, S.unbond(PROXY_STAKE), S.OP_VALUE)
    env.expect_error(p, txs, Err.LOW_VALUE)
    assert env.reg.read.proxy(env.proxy_owner.address).active     # nothing changed anywhere
    deficit = S.storage_deficit(p.balance, p.read.state())
    assert deficit > 0
    with Unchanged(env, p):
        txs = p.send(env.proxy_owner, S.unbond(PROXY_STAKE), S.OP_VALUE + deficit - 1)
    env.expect_error(p, txs, Err.LOW_VALUE)
    # with the deficit the unbonding happens, the registry hears of it and the reserve is whole again
    txs = p.send(env.proxy_owner, S.unbond(PROXY_STAKE), S.OP_VALUE + deficit)
    assert env.on(p, txs)[0].success
    status = status_messages(env, txs, p)
    assert len(status) == 1 and status[0].success
    info, st = env.reg.read.proxy(env.proxy_owner.address), p.read.state()
    assert not info.active and info.stake == st.active == 0
    assert p.balance >= st.unbonding + S.MIN_RESERVE - S.RENT_ALLOWANCE
    assert env.chain.money_leak() == 0


# ================================================================================================
# Bounced notifications: the registry refuses every message (its code upgraded to one that throws 103)

# TVM code `THROW 103` (F2C4_ n): refuses whatever arrives, as a registry that no longer recognises
# the stake would
REFUSING_CODE = begin_cell().store_uint((0b1111001011000 << 11) | Err.WRONG_SENDER, 24).end_cell()


@pytest.fixture
def orphaned(env: Env) -> Env:
    pid = env.propose_and_wait(R.action_upgrade_code(REFUSING_CODE))
    env.reg.send(env.stranger, R.execute_proposal(pid))
    assert env.chain.state(env.reg.address)[1].hash == REFUSING_CODE.hash
    return env


# ================================================================================================
# A stake-code change orphans nobody: stakes of earlier codes keep reporting, registering, being slashed

def _change_stake_code(env: Env) -> Cell:
    """The registry's stake code becomes the other language's build (same messages and layout)."""
    other = S.stake_code("tolk" if env.lang == "func" else "func")
    pid = env.propose_and_wait(R.action_set_child_codes(R.ChildCodes(other, None, None)))
    assert env.on_registry(env.reg.send(env.stranger, R.execute_proposal(pid)))[0].success
    assert env.reg.read.child_codes().stake.hash == other.hash
    return other


def test_stake_of_an_earlier_code_keeps_reporting_and_registering(env: Env):
    p = env.proxy
    p.send(env.proxy_owner, S.register_proxy("10.0.0.1:8443"), TON)
    assert env.reg.read.proxy(env.proxy_owner.address).active
    _change_stake_code(env)
    # the old stake unbonds everything: the registry hears of it and lists the proxy inactive
    txs = p.send(env.proxy_owner, S.unbond(PROXY_STAKE))
    status = status_messages(env, txs, p)
    assert status and status[0].success and status[0].exit_code == 0
    info = env.reg.read.proxy(env.proxy_owner.address)
    assert not info.active and info.stake == 0
    # ... deposits again and registers again through the old stake
    p.send(env.proxy_owner, S.deposit(), PROXY_STAKE + S.DEPOSIT_FEE)
    txs = p.send(env.proxy_owner, S.register_proxy("10.0.0.2:8443"), TON)
    assert has_transaction(txs, to=env.reg.address, op=S.REGISTRY_OP["register_proxy"], success=True)
    info = env.reg.read.proxy(env.proxy_owner.address)
    assert info.active and info.endpoint == "10.0.0.2:8443"
    # a wallet still cannot pose as a stake
    txs = env.reg.send(env.stranger, R.stake_status(env.proxy_owner.address, ROLE_PROXY, True, 1, PROXY_STAKE))
    assert env.on_registry(txs)[0].exit_code == R.Err.WRONG_SENDER


@pytest.mark.parametrize("when", ["proposed_before_the_change", "naming_the_old_code_after_it"])
def test_governance_slash_reaches_the_stake_it_names_across_a_code_change(env: Env, when):
    w = env.worker
    pid = env.reg.read.proposals()[1]
    if when == "proposed_before_the_change":
        env.reg.send(env.owner, R.propose(R.action_slash_stake(env.provider.address, ROLE_WORKER, 5 * TON, 0xE1)))
        # the proposal stores the hash of the stake code current at proposal time
        stored = env.reg.read.proposal(pid).action.begin_parse()
        stored.skip_bits(8 + 267 + 8)
        stored.load_coins()
        stored.skip_bits(256)
        assert stored.load_uint(256) == int.from_bytes(env.code.hash, "big")
        _change_stake_code(env)
        env.chain.advance(DELAY)
    else:
        _change_stake_code(env)
        pid = env.propose_and_wait(R.action_slash_stake(env.provider.address, ROLE_WORKER, 5 * TON, 0xE1,
                                                        code_hash=env.code.hash))
    txs = env.reg.send(env.stranger, R.execute_proposal(pid), value=R.SLASH_EXEC_VALUE + TON)
    mine = env.on(w, txs)
    assert mine and mine[0].success, [t.describe() for t in txs]
    assert w.read.state().active == WORKER_STAKE - 5 * TON
    sl = find_transactions(txs, from_=w.address, to=env.reg.address, op=S.REGISTRY_OP["stake_slashed"])
    assert sl and sl[0].success


def test_slash_naming_an_unknown_code_is_refused(env: Env):
    unknown = begin_cell().store_uint(0xBEEF, 16).end_cell()
    pid = env.reg.read.proposals()[1]
    txs = env.reg.send(env.owner, R.propose(R.action_slash_stake(env.provider.address, ROLE_WORKER, TON, 1,
                                                                 code_hash=unknown.hash)))
    assert env.on_registry(txs)[0].exit_code == R.Err.NO_CHILD_CODE
    assert env.reg.read.proposal(pid) is None


def test_at_most_eight_earlier_stake_codes(env: Env):
    codes = [begin_cell().store_uint(0xC0DE00 + i, 24).end_cell() for i in range(9)]
    for code in codes[:8]:
        pid = env.propose_and_wait(R.action_set_child_codes(R.ChildCodes(code, None, None)))
        assert env.on_registry(env.reg.send(env.stranger, R.execute_proposal(pid)))[0].success
    # eight earlier codes are kept (the deployed one and seven of these): one more change is refused
    txs = env.reg.send(env.owner, R.propose(R.action_set_child_codes(R.ChildCodes(codes[8], None, None))))
    assert env.on_registry(txs)[0].exit_code == R.Err.TOO_MANY_CODES
    # going back to a code already kept moves it out of the set: allowed
    pid = env.propose_and_wait(R.action_set_child_codes(R.ChildCodes(env.code, None, None)))
    assert env.on_registry(env.reg.send(env.stranger, R.execute_proposal(pid)))[0].success


def test_bounced_status_changes_nothing(orphaned: Env):
    env, w = orphaned, orphaned.worker
    txs = w.send(env.provider, S.deposit(), TON + S.DEPOSIT_FEE)
    assert has_transaction(txs, from_=env.reg.address, to=w.address, bounced=True, success=True,
                           op=S.REGISTRY_OP["stake_status"])
    assert w.read.state().active == WORKER_STAKE + TON  # the deposit itself stands
    before = (w.data_hash, w.balance)
    bounce = begin_cell().store_uint(0xFFFFFFFF, 32).store_uint(S.REGISTRY_OP["stake_status"], 32).store_uint(0, 64).end_cell()
    txs = env.forge(env.reg.address, w.address, bounce, value=10_000_000, bounced=True)
    assert env.on(w, txs)[0].success and w.data_hash == before[0]
    assert not env.on(w, txs)[0].out_msgs


def test_bounced_register_proxy_returns_the_value_to_the_owner(orphaned: Env):
    env, p = orphaned, orphaned.proxy
    data = p.data_hash
    txs = p.send(env.proxy_owner, S.register_proxy("10.0.0.1:8443"), TON)
    refused = find_transactions(txs, to=env.reg.address, op=S.REGISTRY_OP["register_proxy"])
    assert refused and refused[0].exit_code == Err.WRONG_SENDER
    back = find_transactions(txs, from_=p.address, to=env.proxy_owner.address, op=S.OP_EXCESSES)
    assert back and back[-1].value > TON * 9 // 10
    assert p.data_hash == data and p.balance < PROXY_STAKE + S.MIN_RESERVE + 50_000_000


def test_bounced_slash_notifications_keep_the_slash(orphaned: Env):
    env, w = orphaned, orphaned.worker
    dao_before = env.dao.balance
    txs = env.report(env.statement(env.op_key, b"a"), env.statement(env.op_key, b"b"))
    assert env.on(w, txs)[0].success and w.read.state().jailed
    assert has_transaction(txs, from_=env.reg.address, to=w.address, bounced=True, op=S.REGISTRY_OP["stake_slashed"])
    assert env.dao.balance > dao_before  # the treasury was still paid
    assert w.balance >= w.read.state().active


# ================================================================================================
# Objective slashing

def test_equivocation_slashes_pays_and_jails(env: Env):
    w = env.worker
    w.send(env.provider, S.unbond(4 * TON))                # unbonding funds are slashable too
    held = WORKER_STAKE
    slashed = held * SLASH_BPS // 10_000
    reward = slashed * REPORTER_BPS // 10_000
    a, b = env.statement(env.op_key, b"answer A"), env.statement(env.op_key, b"answer B")
    assert S.is_equivocation(a, b, K.public_key_int(env.op_key))
    dao_before, balance_before = env.dao.balance, w.balance
    txs = env.report(a, b)
    assert env.on(w, txs)[0].success
    st = w.read.state()
    assert st.jailed and not st.is_active
    # active first (16 TON available, 10 taken), the unbonding request untouched
    assert (st.active, st.unbonding) == (16 * TON - slashed, 4 * TON)
    assert w.read.slashing() == S.Slashing(slashed, 1, S.evidence_id(a.statement, b.statement))
    to_dao = payouts(txs, w, S.PAYOUT_TREASURY)
    assert len(to_dao) == 1 and to_dao[0].account == env.dao.address and to_dao[0].value == slashed - reward
    assert not to_dao[0].in_msg.info.bounce
    to_reporter = payouts(txs, w, S.PAYOUT_REPORTER)
    assert len(to_reporter) == 1 and to_reporter[0].account == env.reporter.address
    assert reward < to_reporter[0].value < reward + S.REPORT_VALUE
    assert env.dao.balance >= dao_before + slashed - reward - 1_000_000
    # the registry heard of it
    sl = find_transactions(txs, from_=w.address, to=env.reg.address, op=S.REGISTRY_OP["stake_slashed"])
    assert sl and sl[0].success
    s = sl[0].in_msg.body.begin_parse()
    s.skip_bits(32 + 64)
    assert s.load_address() == env.provider.address and s.load_uint(8) == ROLE_WORKER
    assert s.load_coins() == slashed and s.load_uint(8) == S.SLASH_OBJECTIVE
    assert parse_status(status_messages(env, txs)[0])[0] is False
    # the contract still holds what it owes
    assert w.balance >= st.active + st.unbonding
    assert w.balance >= balance_before - slashed
    # jailed: no deposit, no second slash, not even with the same evidence reversed
    with Unchanged(env):
        txs = w.send(env.provider, S.deposit(), TON)
    env.expect_error(w, txs, Err.JAILED)
    with Unchanged(env):
        txs = env.report(b, a)
    env.expect_error(w, txs, Err.EVIDENCE_USED)
    with Unchanged(env):
        txs = env.report(env.statement(env.op_key, b"C", seqno=8), env.statement(env.op_key, b"D", seqno=8))
    env.expect_error(w, txs, Err.JAILED)
    # the owner can still leave with what is left, after the period
    w.send(env.provider, S.unbond(st.active))
    env.chain.advance(UNBOND)
    paid = payouts(w.send(env.provider, S.withdraw()), w, S.PAYOUT_WITHDRAWAL)
    assert paid and paid[0].value >= st.active + 4 * TON
    assert w.read.state().active == 0 and w.read.state().unbonding == 0


def test_slash_reaches_unbonding_newest_first(env: Env):
    w = env.worker
    w.send(env.provider, S.unbond(12 * TON))
    env.chain.advance(10)
    w.send(env.provider, S.unbond(6 * TON))      # active 2, requests 12 then 6
    slashed = WORKER_STAKE * SLASH_BPS // 10_000  # 10: 2 from active, 6 from the newest, 2 from the oldest
    txs = env.report(env.statement(env.op_key, b"x"), env.statement(env.op_key, b"y"))
    assert env.on(w, txs)[0].success
    st, ub = w.read.state(), w.read.unbonding()
    assert st.active == 0 and [r.amount for r in ub.requests] == [10 * TON] and st.unbonding == 10 * TON
    assert w.read.slashing().slashed_total == slashed


def test_identical_statements(env: Env):
    a = env.statement(env.op_key, b"same")
    with Unchanged(env):
        txs = env.report(a, a)
    env.expect_error(env.worker, txs, Err.IDENTICAL_STATEMENTS)


def test_signature_of_another_key(env: Env):
    for a, b in ((env.statement(env.other_key, b"a"), env.statement(env.other_key, b"b")),
                 (env.statement(env.op_key, b"a"), env.statement(env.other_key, b"b"))):
        with Unchanged(env):
            txs = env.report(a, b)
        env.expect_error(env.worker, txs, Err.BAD_SIGNATURE)
    # a valid signature over something else (the other statement's hash) does not count either
    a, b = env.statement(env.op_key, b"a"), env.statement(env.op_key, b"b")
    forged = S.SignedStatement(b.statement, a.signature)
    with Unchanged(env):
        txs = env.report(a, forged)
    env.expect_error(env.worker, txs, Err.BAD_SIGNATURE)


@pytest.mark.parametrize("field", ["seqno", "kind", "context"])
def test_statements_about_different_things(env: Env, field):
    other = {"seqno": dict(seqno=8), "kind": dict(kind=S.KIND_USAGE_REPORT), "context": dict(context=1)}[field]
    with Unchanged(env):
        txs = env.report(env.statement(env.op_key, b"a"), env.statement(env.op_key, b"b", **other))
    env.expect_error(env.worker, txs, Err.NOT_CONFLICTING)


def test_statements_for_another_stake_or_domain(env: Env):
    # signed by this operator key, but naming the proxy's stake contract
    a = env.statement(env.op_key, b"a", stake=env.proxy)
    b = env.statement(env.op_key, b"b", stake=env.proxy)
    with Unchanged(env):
        txs = env.report(a, b)
    env.expect_error(env.worker, txs, Err.BAD_STATEMENT)
    # the same fields under another domain tag (e.g. a reputation report's)
    st = S.Statement(env.worker.address, 1, 7, 7, S.payload_cell(b"a")).to_cell().begin_parse()
    st.skip_bits(32)
    retagged = begin_cell().store_uint(0x52455054, 32).store_slice(st).end_cell()
    signed = begin_cell().store_bytes(env.op_key.sign(retagged.hash)).store_ref(retagged).end_cell()
    with Unchanged(env):
        txs = env.report(signed, env.statement(env.op_key, b"b"))
    env.expect_error(env.worker, txs, Err.BAD_STATEMENT)


def test_report_value_and_shape(env: Env):
    a, b = env.statement(env.op_key, b"a"), env.statement(env.op_key, b"b")
    with Unchanged(env):
        txs = env.report(a, b, value=S.REPORT_VALUE - 1)
    env.expect_error(env.worker, txs, Err.LOW_VALUE)
    truncated = begin_cell().store_uint(S.OP["report_equivocation"], 32).store_uint(0, 64).store_ref(a.to_cell()).end_cell()
    with Unchanged(env):
        txs = env.worker.send(env.reporter, truncated, S.REPORT_VALUE)
    mine = env.on(env.worker, txs)[0]
    assert not mine.success and mine.exit_code == 9  # cell underflow: the second statement is missing


def test_retired_key_evidence_counts_within_its_window(env: Env):
    w = env.worker
    w.send(env.provider, S.set_operator(K.public_key_int(env.op_key2)))
    env.chain.advance(UNBOND - 1)
    snap = env.chain.snapshot()
    txs = env.report(env.statement(env.op_key, b"a"), env.statement(env.op_key, b"b"))
    assert env.on(w, txs)[0].success and w.read.state().jailed
    env.chain.restore(snap)
    env.chain.advance(1)
    with Unchanged(env):
        txs = env.report(env.statement(env.op_key, b"a"), env.statement(env.op_key, b"b"))
    env.expect_error(w, txs, Err.BAD_SIGNATURE)
    # the current key works at any time
    assert env.on(w, env.report(env.statement(env.op_key2, b"a"), env.statement(env.op_key2, b"b")))[0].success


def test_payout_to_a_failing_treasury_is_not_lost(env: Env, lang):
    """The treasury is a contract that throws on every message: the non-bounceable payout stays with it."""
    from dataclasses import replace
    thrower = StateInit(code=begin_cell().store_uint(0xF237, 16).end_cell(), data=Cell.empty())  # THROW 55
    bad = R.address_of(thrower)
    env.stranger.send(bad, TON, None, state_init=thrower, bounce=False)
    assert env.chain.state(bad)[0] == "active"
    new = replace(env.params, staking=replace(env.params.staking, treasury=bad))
    pid = env.propose_and_wait(R.action_set_params(new))
    env.reg.send(env.stranger, R.execute_proposal(pid))
    env.worker.send(env.stranger, S.refresh_params(), S.REFRESH_VALUE)
    assert env.worker.read.params()[1].treasury == bad
    before = env.chain.balance(bad)
    txs = env.report(env.statement(env.op_key, b"a"), env.statement(env.op_key, b"b"))
    slashed = WORKER_STAKE * SLASH_BPS // 10_000
    share = slashed - slashed * REPORTER_BPS // 10_000
    got = find_transactions(txs, to=bad)
    assert got and got[0].exit_code == 55 and not got[0].success
    assert env.chain.balance(bad) >= before + share - 1_000_000
    assert not has_transaction(txs, from_=bad, to=env.worker.address)  # nothing came back
    assert env.worker.read.slashing().slashed_total == slashed


def test_reward_to_a_failing_reporter_is_not_lost(env: Env):
    """The reporter is a contract that throws on every message (its report is forged from its address):
    the non-bounceable reward stays with it and nothing comes back to the stake."""
    thrower = StateInit(code=begin_cell().store_uint(0xF237, 16).end_cell(), data=Cell.empty())  # THROW 55
    bad = R.address_of(thrower)
    env.stranger.send(bad, TON, None, state_init=thrower, bounce=False)
    before = env.chain.balance(bad)
    body = S.report_equivocation(env.statement(env.op_key, b"a"), env.statement(env.op_key, b"b"))
    txs = env.forge(bad, env.worker.address, body, value=S.REPORT_VALUE)
    assert env.on(env.worker, txs)[0].success
    reward = (WORKER_STAKE * SLASH_BPS // 10_000) * REPORTER_BPS // 10_000
    got = payouts(txs, env.worker, S.PAYOUT_REPORTER)
    assert got and got[0].account == bad and got[0].exit_code == 55 and not got[0].in_msg.info.bounce
    assert env.chain.balance(bad) >= before + reward
    assert len(find_transactions(txs, from_=bad, to=env.worker.address)) == 1  # the report, no bounce
    assert env.chain.money_leak() == 0


# ================================================================================================
# Governance slashing

def _gov_slash_body(amount: int, evidence: int = 0xE1) -> Cell:
    return (begin_cell().store_uint(S.REGISTRY_OP["governance_slash"], 32).store_uint(0, 64).store_coins(amount)
            .store_uint(evidence, 256).end_cell())


def test_governance_slash_only_through_the_registry_after_the_delay(env: Env):
    w = env.worker
    pid = env.reg.read.proposals()[1]
    env.reg.send(env.owner, R.propose(R.action_slash_stake(env.provider.address, ROLE_WORKER, 10 * TON, 0xE1)))
    # the provider tries to escape by unbonding most of the stake during the delay
    w.send(env.provider, S.unbond(12 * TON))
    # too early: the registry refuses, the stake is untouched
    with Unchanged(env):
        txs = env.reg.send(env.stranger, R.execute_proposal(pid), value=R.SLASH_EXEC_VALUE + TON)
    assert find_transactions(txs, to=env.reg.address)[0].exit_code == R.Err.PROPOSAL_NOT_READY
    # not through the registry: a wallet sending the same message is refused
    with Unchanged(env):
        txs = w.send(env.owner, _gov_slash_body(10 * TON))
    env.expect_error(w, txs, Err.WRONG_SENDER)
    env.chain.advance(DELAY)
    dao_before = env.dao.balance
    txs = env.reg.send(env.stranger, R.execute_proposal(pid), value=R.SLASH_EXEC_VALUE + TON)
    mine = env.on(w, txs)
    assert mine and mine[0].success, [t.describe() for t in txs]
    st = w.read.state()
    # 8 TON from the active stake, the other 2 from the unbonding request
    assert (st.active, st.unbonding) == (0, 10 * TON)
    assert not st.jailed and w.read.slashing() == S.Slashing(10 * TON, 1, 0)
    to_dao = payouts(txs, w, S.PAYOUT_TREASURY)
    assert to_dao and to_dao[0].value == 10 * TON and env.dao.balance >= dao_before + 10 * TON - 1_000_000
    sl = find_transactions(txs, from_=w.address, to=env.reg.address, op=S.REGISTRY_OP["stake_slashed"])
    assert sl and sl[0].success
    s = sl[0].in_msg.body.begin_parse()
    s.skip_bits(32 + 64 + 267 + 8)
    assert s.load_coins() == 10 * TON and s.load_uint(8) == S.SLASH_GOVERNANCE
    # the attached value and the reserve pay for both notifications
    status = status_messages(env, txs)
    assert len(status) == 1 and status[0].success
    assert parse_status(status[0]) == (False, K.public_key_int(env.op_key), 0)
    assert w.balance >= st.unbonding


@pytest.mark.parametrize("amount", [S.MAX_COINS, WORKER_STAKE + 1])
def test_governance_slash_never_takes_more_than_held(env: Env, amount):
    w = env.worker
    w.send(env.provider, S.unbond(3 * TON))
    txs = env.forge(env.reg.address, w.address, _gov_slash_body(amount), value=R.SLASH_EXEC_VALUE)
    assert env.on(w, txs)[0].success
    st = w.read.state()
    assert (st.active, st.unbonding) == (0, 0) and w.read.unbonding().requests == []
    assert payouts(txs, w, S.PAYOUT_TREASURY)[0].value == WORKER_STAKE
    assert w.balance >= 0 and env.chain.money_leak() == 0


def test_governance_slash_of_zero_changes_nothing(env: Env):
    data = env.worker.data_hash
    txs = env.forge(env.reg.address, env.worker.address, _gov_slash_body(0), value=R.SLASH_EXEC_VALUE)
    assert env.on(env.worker, txs)[0].success and env.worker.data_hash == data
    assert not find_transactions(txs, from_=env.worker.address)


# ================================================================================================
# Money invariants over long random sequences (hypothesis)

from hypothesis import HealthCheck, given, settings, strategies as hs  # noqa: E402

OPS = hs.one_of(
    hs.tuples(hs.just("deposit"), hs.integers(0, 30) .map(lambda t: t * TON // 2)),
    hs.tuples(hs.just("unbond"), hs.one_of(hs.integers(0, 45).map(lambda t: t * TON // 2), hs.just(S.MAX_COINS))),
    hs.tuples(hs.just("withdraw"), hs.just(0)),
    hs.tuples(hs.just("advance"), hs.sampled_from([0, 60, UNBOND // 2, UNBOND, 2 * UNBOND])),
    hs.tuples(hs.just("gov_slash"), hs.one_of(hs.integers(0, 40).map(lambda t: t * TON // 2), hs.just(S.MAX_COINS))),
    hs.tuples(hs.just("report"), hs.just(0)),
    hs.tuples(hs.just("rotate"), hs.just(0)),
)


class Model:
    """What the stake should hold, computed independently of the contract."""

    def __init__(self, env: Env):
        st = env.worker.read.state()
        self.active, self.jailed = st.active, False
        self.queue: dict[int, list[int]] = {}
        self.next_id = 0
        self.key_index, self.retired_until = 0, 0
        self.credited = self.active       # what the owner put in, minus fees
        self.withdrawn = self.slashed = 0

    @property
    def unbonding(self) -> int:
        return sum(a for a, _ in self.queue.values())

    def take(self, amount: int) -> None:
        a = min(amount, self.active)
        self.active -= a
        left = amount - a
        for rid in sorted(self.queue, reverse=True):
            if left == 0:
                break
            t = min(self.queue[rid][0], left)
            self.queue[rid][0] -= t
            left -= t
            if self.queue[rid][0] == 0:
                del self.queue[rid]
        self.slashed += amount


def _step(env: Env, m: Model, keys: list, op: str, arg: int, seq: int) -> None:
    w, now = env.worker, env.chain.now
    expect = None       # the exit code we expect; None: success
    if op == "advance":
        env.chain.advance(arg)
        return
    if op == "deposit":
        expect = Err.LOW_VALUE if arg == 0 else Err.JAILED if m.jailed else None
        txs = w.send(env.provider, S.deposit(), arg + S.DEPOSIT_FEE)
        if expect is None:
            m.active += arg
            m.credited += arg
    elif op == "unbond":
        expect = (Err.BAD_AMOUNT if arg == 0 or arg > m.active else
                  Err.TOO_MANY_UNBONDING if len(m.queue) >= S.MAX_UNBONDING else None)
        txs = w.send(env.provider, S.unbond(arg))
        if expect is None:
            m.active -= arg
            m.queue[m.next_id] = [arg, now + UNBOND]
            m.next_id += 1
    elif op == "withdraw":
        ready = [rid for rid, (_, u) in m.queue.items() if u <= now]
        expect = Err.NOTHING_UNBONDING if not m.queue else Err.STILL_LOCKED if not ready else None
        txs = w.send(env.provider, S.withdraw())
        if expect is None:
            amount = sum(m.queue.pop(rid)[0] for rid in ready)
            m.withdrawn += amount
            paid = payouts(txs, w, S.PAYOUT_WITHDRAWAL)
            assert len(paid) == 1 and paid[0].value >= amount
    elif op == "gov_slash":
        txs = env.forge(env.reg.address, w.address, _gov_slash_body(arg), value=R.SLASH_EXEC_VALUE)
        slashed = min(arg, m.active + m.unbonding)
        if slashed:
            m.take(slashed)
            paid = payouts(txs, w, S.PAYOUT_TREASURY)
            assert len(paid) == 1 and paid[0].value == slashed
    elif op == "report":
        key = keys[m.key_index]
        a = env.statement(key, b"first", seqno=seq)
        b = env.statement(key, b"second", seqno=seq)
        expect = Err.JAILED if m.jailed else None
        txs = env.report(a, b)
        if expect is None:
            slashed = (m.active + m.unbonding) * SLASH_BPS // 10_000
            reward = slashed * REPORTER_BPS // 10_000
            m.take(slashed)
            m.jailed = True
            assert sum(t.value for t in payouts(txs, w, S.PAYOUT_TREASURY)) == slashed - reward
            assert payouts(txs, w, S.PAYOUT_REPORTER)[0].value >= reward
    else:  # rotate
        expect = Err.ROTATION_TOO_SOON if now < m.retired_until else None
        nxt = (m.key_index + 1) % len(keys)
        txs = w.send(env.provider, S.set_operator(K.public_key_int(keys[nxt])))
        if expect is None:
            m.key_index, m.retired_until = nxt, now + UNBOND
    mine = [t for t in env.on(w, txs) if not t.bounced]
    if expect is None:
        assert mine[0].success, (op, arg, mine[0].describe())
    else:
        assert mine[0].exit_code == expect, (op, arg, mine[0].describe())


def _check_invariants(env: Env, m: Model) -> None:
    w = env.worker
    st = w.read.state()
    assert (st.active, st.unbonding, st.jailed) == (m.active, m.unbonding, m.jailed)
    assert [(r.id, r.amount, r.unlock_at) for r in w.read.unbonding().requests] == \
        sorted((rid, a, u) for rid, (a, u) in m.queue.items())
    assert w.read.slashing().slashed_total == m.slashed
    # the contract can always pay what it holds
    assert w.balance >= st.active + st.unbonding
    # total in = total out + held
    assert m.credited == m.withdrawn + m.slashed + st.active + st.unbonding
    # no value appeared or vanished anywhere on the chain
    assert env.chain.money_leak() == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=hs.lists(OPS, min_size=8, max_size=40))
def test_money_invariants_hold_after_every_step(env: Env, ops):
    snap = env.chain.snapshot()
    try:
        m = Model(env)
        keys = [env.op_key, env.op_key2, env.other_key]
        _check_invariants(env, m)
        for i, (op, arg) in enumerate(ops):
            _step(env, m, keys, op, arg, seq=100 + i)
            _check_invariants(env, m)
    finally:
        env.chain.restore(snap)


# ================================================================================================
# The provider CLI, end to end on the embedded chain (`cocoon registry deploy` carries the stake code)

class Cli:
    def __init__(self, tmp_path):
        from click.testing import CliRunner
        from node.cli import main

        self.main, self.runner, self.dir = main, CliRunner(), tmp_path
        self.state = str(tmp_path / "chain.json")
        self.keys = {}
        for name in ("owner", "provider", "proxy", "reporter"):
            p = tmp_path / f"{name}.key"
            p.write_text(hashlib.sha256(b"cli-test:" + name.encode()).hexdigest())
            self.keys[name] = str(p)

    def __call__(self, *args: str, key: str | None = None, ok: bool = True) -> str:
        argv = list(args) + ["--state-file", self.state] + (["--key-file", self.keys[key]] if key else [])
        r = self.runner.invoke(self.main, argv)
        out = r.output
        assert "Traceback" not in out and not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), out
        assert (r.exit_code == 0) == ok, f"{argv}: exit {r.exit_code}\n{out}"
        if not ok:
            errors = [line for line in out.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1, out   # one clear line saying what went wrong
        return out


def _field(out: str, name: str) -> str:
    line = next(line for line in out.splitlines() if line.startswith(name))
    return line[len(name):].split()[0]


def test_cli_end_to_end(lang, tmp_path):
    cli = Cli(tmp_path)
    cli("registry", "deploy", "--lang", lang, "--governance-delay", "60", key="owner")
    out = cli("stake", "status", key="provider")
    assert "not deployed yet" in out
    out = cli("stake", "deposit", "20", key="provider")
    assert "ok: deposited 20 TON" in out and "ACTIVE" in out
    op_key = S.derive_operator_key("cli-operator")
    cli("stake", "set-operator", f"{K.public_key_int(op_key):064x}", key="provider")
    out = cli("stake", "status", key="provider")
    assert "ACTIVE" in _field(out, "state") and _field(out, "active") == "20"
    assert f"{K.public_key_int(op_key):064x}" in out
    stake_addr = Address(_field(out, "stake"))

    out = cli("stake", "unbond", "5", key="provider")
    assert "unbonding 5 TON" in out and "withdrawable from" in out
    out = cli("stake", "unbond", "1000", key="provider", ok=False)
    assert "the active stake is 15 TON" in out
    out = cli("stake", "withdraw", key="provider", ok=False)
    assert "nothing is unlocked yet" in out and "advance-time" in out
    cli("registry", "advance-time", str(7 * 86400))
    out = cli("stake", "withdraw", key="provider")
    assert "ok: withdrawal" in out
    received = Decimal(out.split("received ")[1].split()[0])
    assert Decimal(5) <= received < Decimal("5.2")
    out = cli("stake", "status", key="provider")
    assert _field(out, "active") == "15" and _field(out, "unbonding") == "0"

    # anyone reports an equivocation of the operator key; files in raw and in base64 form
    a = S.sign_statement(op_key, S.Statement(stake_addr, S.KIND_JOB_RECEIPT, 42, 1, S.payload_cell(b"tokens=10")))
    b = S.sign_statement(op_key, S.Statement(stake_addr, S.KIND_JOB_RECEIPT, 42, 1, S.payload_cell(b"tokens=99")))
    import base64
    (tmp_path / "a.boc").write_bytes(a.to_cell().to_boc())
    (tmp_path / "b.txt").write_text(base64.b64encode(b.to_cell().to_boc()).decode())
    (tmp_path / "junk").write_text("not a statement")
    out = cli("stake", "report-equivocation", str(tmp_path / "a.boc"), str(tmp_path / "junk"), key="reporter", ok=False)
    assert "not a signed stake statement" in out
    out = cli("stake", "report-equivocation", str(tmp_path / "a.boc"), str(tmp_path / "a.boc"), key="reporter", ok=False)
    assert "same statement" in out
    out = cli("stake", "report-equivocation", str(tmp_path / "a.boc"), str(tmp_path / "b.txt"), key="reporter")
    assert "slashed 7.5 TON and jailed" in out and "received" in out
    out = cli("stake", "report-equivocation", str(tmp_path / "b.txt"), str(tmp_path / "a.boc"), key="reporter", ok=False)
    assert "already slashed" in out
    out = cli("stake", "status", "--address", stake_addr.to_str())
    assert "JAILED" in out and _field(out, "slashed") == "7.5"
    out = cli("stake", "deposit", "1", key="provider", ok=False)
    assert "jailed" in out

    # a proxy: stake, key, registration through the stake contract
    out = cli("stake", "register-proxy", "10.0.0.1:8443", key="proxy", ok=False)
    assert "no proxy stake" in out
    cli("stake", "deposit", "60", "--role", "proxy", key="proxy")
    cli("stake", "set-operator", f"{K.public_key_int(S.derive_operator_key('cli-proxy')):064x}", "--role", "proxy",
        key="proxy")
    out = cli("stake", "register-proxy", "10.0.0.1:8443", key="proxy")
    assert "registered: proxy 10.0.0.1:8443" in out
    out = cli("registry", "show")
    assert "10.0.0.1:8443" in out and "active" in out

    # the registry raises the proxy minimum; anyone refreshes the proxy's stake, which turns inactive
    cli("registry", "set-params", "--min-proxy-stake", "70", key="owner")
    cli("registry", "advance-time", "60")
    cli("registry", "execute", "0", key="owner")
    out = cli("stake", "status", "--role", "proxy", key="proxy")
    assert "ACTIVE" in _field(out, "state") and "parameters have changed" in out
    out = cli("stake", "refresh", "--role", "proxy", key="reporter", ok=False)
    assert "there is no proxy stake" in out
    out = cli("stake", "refresh", "--role", "proxy", "--owner", _field(out_owner := cli(
        "stake", "status", "--role", "proxy", key="proxy"), "owner"), key="reporter")
    assert "parameters refreshed" in out and out_owner
    out = cli("stake", "status", "--role", "proxy", key="proxy")
    assert "below the minimum of 70 TON" in out and "parameters have changed" not in out
    assert "INACTIVE" in cli("registry", "show")


@pytest.mark.parametrize("args,needle", [
    (("stake", "deposit", "abc"), "not a number"),
    (("stake", "deposit", "0"), "more than 0"),
    (("stake", "deposit", "0.0000000001"), "9 decimals"),
    (("stake", "set-operator", "zz"), "operator key"),
    (("stake", "unbond", "1"), "no worker stake"),
    (("stake", "status", "--address", "nonsense"), "not a TON address"),
])
def test_cli_failures_are_one_line(lang, tmp_path, args, needle):
    cli = Cli(tmp_path)
    cli("registry", "deploy", "--lang", lang, key="owner")
    out = cli(*args, key="provider", ok=False)
    assert needle in out

"""Registry contract: every message, getter and error path, once per language (see TESTING.md)."""
from __future__ import annotations

import pytest

from tests.conftest import per_language
from pytoniq_core import Address, Cell, begin_cell

from wrappers import registry as R
from wrappers.chain.contract import Instant
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider
from wrappers.chain.records import find_transactions, has_transaction
from wrappers import TON
from wrappers.registry import Err, ROLE_PROXY, ROLE_WORKER

# Child codes are only hashed by the registry (addresses are derived from them), so any distinct
# code cells serve; the real child contracts have their own suites.
STAKE_CODE = begin_cell().store_uint(0x5741CE, 24).end_cell()
ESCROW_CODE = begin_cell().store_uint(0xE5C0, 16).end_cell()
REPUTATION_CODE = begin_cell().store_uint(0x4E90, 16).end_cell()
IMG_A, IMG_B, MODEL_A = 0xA1 << 248 | 1, 0xB2 << 248 | 2, 0xC3 << 248 | 3
DELAY = 3600


class Env:
    def __init__(self, lang: str):
        self.lang = lang
        self.chain = c = EmbeddedChain()
        self.owner, self.stranger = c.treasury("owner"), c.treasury("stranger")
        self.heir, self.proxy_owner = c.treasury("heir"), c.treasury("proxy-owner")
        self.dao = c.treasury("dao")
        self.params = R.NetworkParams(staking=R.Staking(treasury=self.dao.address), governance_delay=DELAY,
                                      max_proxies=2)
        self.reg = Instant(R.Registry.from_init(
            EmbeddedProvider(c), self.owner.address, self.params, R.ChildCodes(STAKE_CODE, ESCROW_CODE, REPUTATION_CODE),
            lang=lang, worker_images={IMG_A: 1}, models={MODEL_A: 1}))
        self.deploy_txs = self.reg.send_deploy(self.owner)
        self.read = self.reg.read

    def send(self, wallet, body: Cell, value: int = 50_000_000):
        return self.reg.send(wallet, body, value)

    def from_address(self, src: Address, body: Cell, value: int = 50_000_000, bounced: bool = False):
        """A message from a contract we have not deployed (a stake contract): only the emulator can
        forge a sender, which is what lets us test that the registry recomputes it."""
        msg = self.chain.internal(src, self.reg.address, value, body)
        if bounced:
            from pytoniq_core.tlb.transaction import MessageAny
            m = MessageAny.deserialize(msg.begin_parse())
            m.info.bounced = True
            m.info.bounce = False
            msg = m.serialize()
        return self.chain.send(msg)

    def stake_addr(self, owner: Address, role: int = ROLE_PROXY) -> Address:
        return R.child_address(STAKE_CODE, self.reg.address, R.stake_identity(owner, role))

    def on_registry(self, txs):
        return [t for t in txs if t.account == self.reg.address or
                (t.account.hash_part == self.reg.address.hash_part)]

    def expect_error(self, txs, code: int):
        mine = self.on_registry(txs)
        assert mine, "the message never reached the registry"
        assert mine[0].exit_code == code, f"expected {R.describe_error(code)}, got {R.describe_error(mine[0].exit_code)}"
        assert not mine[0].success


env = per_language(Env)  # deployed once per language, restored before every test


class Unchanged:
    """Asserts that the registry's data and balance are what they were (a refused operation)."""

    def __init__(self, env: Env, keeps_value: bool = False):
        self.env, self.keeps_value = env, keeps_value  # a bounce returns our own money: it stays

    def __enter__(self):
        self.data, self.bal = self.env.reg.data_hash, self.env.reg.balance
        self.start = len(self.env.chain.transactions)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            assert self.env.reg.data_hash == self.data, "state changed on a refused operation"
            # storage rent for the time that passed is the only thing the registry may pay
            rent = sum(t.storage_fees for t in self.env.on_registry(self.env.chain.transactions[self.start:]))
            assert self.env.reg.balance >= self.bal - rent, "the registry lost money on a refused operation"
            if not self.keeps_value:
                assert self.env.reg.balance - self.bal < 1_000_000, "a refused operation kept the sender's value"


# ------------------------------------------------------------------------------------ deployment
def test_deploy_and_getters(env: Env):
    assert has_transaction(env.deploy_txs, to=env.reg.address, deploy=True, success=True)
    owner, pending = env.read.owner()
    assert owner == env.owner.address and pending is None
    assert env.read.version() == 0
    assert env.read.params() == env.params
    trust = env.read.trust()
    assert set(trust["worker_images"]) == {IMG_A} and trust["proxy_images"] == {} and set(trust["models"]) == {MODEL_A}
    assert env.read.is_allowed("worker_image", IMG_A) and not env.read.is_allowed("worker_image", IMG_B)
    assert env.read.is_allowed("model", MODEL_A) and not env.read.is_allowed("proxy_image", IMG_A)
    codes = env.read.child_codes()
    assert (codes.stake.hash, codes.escrow.hash, codes.reputation.hash) == (
        STAKE_CODE.hash, ESCROW_CODE.hash, REPUTATION_CODE.hash)
    assert env.read.proxies() == [] and env.read.proposals() == ([], 0)


def test_child_addresses_match_python_derivation(env: Env):
    a = env.stranger.address
    assert env.read.stake_address(a, ROLE_WORKER) == R.child_address(STAKE_CODE, env.reg.address, R.stake_identity(a, 1))
    assert env.read.stake_address(a, ROLE_PROXY) != env.read.stake_address(a, ROLE_WORKER)
    key = 0x1234 << 200
    assert env.read.escrow_address(a, env.heir.address, key) == R.child_address(
        ESCROW_CODE, env.reg.address, R.escrow_identity(a, env.heir.address, key))
    assert env.read.reputation_address(a) == R.child_address(REPUTATION_CODE, env.reg.address, R.reputation_identity(a))


def test_child_address_without_code_fails(lang):
    c = EmbeddedChain()
    owner = c.treasury("owner")
    reg = Instant(R.Registry.from_init(EmbeddedProvider(c), owner.address,
                                       R.NetworkParams(staking=R.Staking(treasury=owner.address)), lang=lang))
    reg.send_deploy(owner)
    from wrappers.chain.getmethod import GetMethodError
    with pytest.raises(GetMethodError) as e:
        reg.read.stake_address(owner.address, ROLE_WORKER)
    assert e.value.exit_code == Err.NO_CHILD_CODE


# ------------------------------------------------------------------------------------ plain value
@pytest.mark.parametrize("body", [None, begin_cell().store_uint(0, 32).store_snake_string("hello").end_cell()])
def test_top_up_and_comment_change_nothing(env: Env, body):
    data, bal = env.reg.data_hash, env.reg.balance
    txs = env.owner.send(env.reg.address, 2 * TON, body)
    assert has_transaction(txs, to=env.reg.address, success=True)
    assert env.reg.data_hash == data and env.reg.balance > bal + TON


def test_unknown_op(env: Env):
    with Unchanged(env):
        txs = env.send(env.owner, begin_cell().store_uint(0xDEADBEEF, 32).store_uint(0, 64).end_cell())
    env.expect_error(txs, Err.UNKNOWN_OP)
    assert has_transaction(txs, from_=env.reg.address, to=env.owner.address, bounced=True)


def test_bounced_message_is_ignored(env: Env):
    with Unchanged(env, keeps_value=True):
        txs = env.from_address(env.stranger.address, R.revoke("worker_image", IMG_A), bounced=True)
    assert env.on_registry(txs)[0].success
    assert env.read.is_allowed("worker_image", IMG_A)


# ------------------------------------------------------------------------------------ access control
OWNER_OPS = {
    "revoke_worker_image": lambda: R.revoke("worker_image", IMG_A),
    "revoke_model": lambda: R.revoke("model", MODEL_A),
    "remove_proxy": lambda: R.remove_proxy(1),
    "propose": lambda: R.propose(R.action_add("worker_image", IMG_B)),
    "cancel_proposal": lambda: R.cancel_proposal(0),
    "transfer_ownership": lambda: R.transfer_ownership(Address("0:" + "11" * 32)),
}


@pytest.mark.parametrize("op", sorted(OWNER_OPS))
def test_stranger_cannot_call_owner_operations(env: Env, op):
    with Unchanged(env):
        txs = env.send(env.stranger, OWNER_OPS[op]())
    env.expect_error(txs, Err.NOT_OWNER)


def test_too_little_value(env: Env):
    with Unchanged(env):
        txs = env.send(env.owner, R.revoke("worker_image", IMG_A), value=R.MIN_OP_VALUE - 1)
    env.expect_error(txs, Err.LOW_VALUE)
    assert env.read.is_allowed("worker_image", IMG_A)


@pytest.mark.parametrize("cut", [8, 32 + 64 + 100])
def test_truncated_body(env: Env, cut):
    full = R.revoke("worker_image", IMG_A)
    s = full.begin_parse()
    body = begin_cell().store_bits(s.load_bits(cut)).end_cell()
    with Unchanged(env):
        txs = env.send(env.owner, body)
    mine = env.on_registry(txs)[0]
    assert not mine.success
    # a parse failure is TVM's cell underflow (9); FunC and Tolk may differ only here (DESIGN.md §3)
    allowed = (9, Err.UNKNOWN_OP) if cut < 32 else (9,)
    assert mine.exit_code in allowed


# ------------------------------------------------------------------------------------ revocations
@pytest.mark.parametrize("kind,h", [("worker_image", IMG_A), ("model", MODEL_A)])
def test_revocation_is_immediate(env: Env, kind, h):
    txs = env.send(env.owner, R.revoke(kind, h), value=TON)
    assert has_transaction(txs, to=env.reg.address, success=True)
    assert not env.read.is_allowed(kind, h)
    assert env.read.version() == 1
    # the excess comes back to the owner
    back = find_transactions(txs, from_=env.reg.address, to=env.owner.address, op=R.OP_EXCESSES)
    assert back and back[0].value > TON // 2


@pytest.mark.parametrize("kind", ["worker_image", "proxy_image", "model"])
def test_revoking_unknown_hash(env: Env, kind):
    with Unchanged(env):
        txs = env.send(env.owner, R.revoke(kind, IMG_B))
    env.expect_error(txs, Err.HASH_UNKNOWN)


# ------------------------------------------------------------------------------------ proposals
def _propose(env: Env, action: Cell) -> int:
    pid = env.read.proposals()[1]
    txs = env.send(env.owner, R.propose(action))
    assert has_transaction(txs, to=env.reg.address, success=True), [t.describe() for t in txs]
    return pid


@pytest.mark.parametrize("kind", ["worker_image", "proxy_image", "model"])
def test_addition_waits_for_the_governance_delay(env: Env, kind):
    pid = _propose(env, R.action_add(kind, IMG_B))
    p = env.read.proposal(pid)
    assert p is not None and p.execute_after == env.chain.now + DELAY
    assert not env.read.is_allowed(kind, IMG_B) and env.read.version() == 0
    with Unchanged(env):
        txs = env.send(env.stranger, R.execute_proposal(pid))
    env.expect_error(txs, Err.PROPOSAL_NOT_READY)
    env.chain.advance(DELAY - 1)
    env.expect_error(env.send(env.stranger, R.execute_proposal(pid)), Err.PROPOSAL_NOT_READY)
    env.chain.advance(1)
    txs = env.send(env.stranger, R.execute_proposal(pid))  # anyone may execute a ripe proposal
    assert has_transaction(txs, to=env.reg.address, success=True)
    assert env.read.is_allowed(kind, IMG_B)
    assert env.read.proposal(pid) is None and env.read.version() == 1
    env.expect_error(env.send(env.stranger, R.execute_proposal(pid)), Err.PROPOSAL_UNKNOWN)


def test_adding_an_allowed_hash(env: Env):
    with Unchanged(env):
        txs = env.send(env.owner, R.propose(R.action_add("worker_image", IMG_A)))
    env.expect_error(txs, Err.HASH_EXISTS)


def test_duplicate_proposals_second_fails_at_execution(env: Env):
    p1 = _propose(env, R.action_add("model", IMG_B))
    p2 = _propose(env, R.action_add("model", IMG_B))
    env.chain.advance(DELAY)
    assert env.on_registry(env.send(env.owner, R.execute_proposal(p1)))[0].success
    with Unchanged(env):
        txs = env.send(env.owner, R.execute_proposal(p2))
    env.expect_error(txs, Err.HASH_EXISTS)


def test_cancelled_proposal_cannot_execute(env: Env):
    pid = _propose(env, R.action_add("proxy_image", IMG_B))
    env.expect_error(env.send(env.stranger, R.cancel_proposal(pid)), Err.NOT_OWNER)
    txs = env.send(env.owner, R.cancel_proposal(pid))
    assert env.on_registry(txs)[0].success and env.read.proposal(pid) is None
    env.chain.advance(DELAY)
    env.expect_error(env.send(env.owner, R.execute_proposal(pid)), Err.PROPOSAL_UNKNOWN)
    assert not env.read.is_allowed("proxy_image", IMG_B)
    env.expect_error(env.send(env.owner, R.cancel_proposal(pid)), Err.PROPOSAL_UNKNOWN)


def test_open_proposals_are_bounded(env: Env):
    for i in range(R.MAX_OPEN_PROPOSALS):
        _propose(env, R.action_add("model", i + 1000))
    with Unchanged(env):
        txs = env.send(env.owner, R.propose(R.action_add("model", 99)))
    env.expect_error(txs, Err.TOO_MANY_PROPOSALS)
    # executing or cancelling one frees a slot
    env.send(env.owner, R.cancel_proposal(0))
    _propose(env, R.action_add("model", 99))


def test_unknown_action(env: Env):
    with Unchanged(env):
        txs = env.send(env.owner, R.propose(begin_cell().store_uint(0x42, 8).store_uint(0, 256).end_cell()))
    env.expect_error(txs, Err.BAD_ACTION)


def test_parameter_change(env: Env):
    new = R.NetworkParams(staking=R.Staking(treasury=env.dao.address, min_proxy_stake=77 * TON),
                          economics=R.Economics(price_per_token=30, worker_fee_per_token=20),
                          is_test=True, governance_delay=7200, max_proxies=5)
    pid = _propose(env, R.action_set_params(new))
    assert env.read.params() == env.params
    env.chain.advance(DELAY)
    assert env.on_registry(env.send(env.owner, R.execute_proposal(pid)))[0].success
    assert env.read.params() == new and env.read.version() == 1
    # the new delay applies to the next proposal
    pid2 = _propose(env, R.action_add("model", IMG_B))
    assert env.read.proposal(pid2).execute_after == env.chain.now + 7200


@pytest.mark.parametrize("bad", [
    dict(staking=dict(slash_bps=10_001)),
    dict(staking=dict(reporter_bps=20_000)),
    dict(economics=dict(prompt_mult=0)),
    dict(economics=dict(price_per_token=5, worker_fee_per_token=6)),
    dict(max_proxies=0),
    dict(governance_delay=365 * 86400 + 1),
    dict(economics=dict(close_delay=0xFFFFFFFF)),          # now + close_delay would overflow uint32
    dict(economics=dict(close_delay=365 * 86400 + 1)),
    dict(staking=dict(unbonding_period=0)),
    dict(staking=dict(unbonding_period=2 * DELAY - 1)),     # a provider could escape a governance slash
    dict(governance_delay=4 * 86400),                       # the same, by raising the delay instead
])
def test_bad_params_refused(env: Env, bad):
    from dataclasses import replace
    p = env.params
    if "staking" in bad:
        p = replace(p, staking=replace(p.staking, **bad["staking"]))
    elif "economics" in bad:
        p = replace(p, economics=replace(p.economics, **bad["economics"]))
    else:
        p = replace(p, **bad)
    assert p.problems()
    with Unchanged(env):
        txs = env.send(env.owner, R.propose(R.action_set_params(p)))
    env.expect_error(txs, Err.BAD_PARAMS)


def test_unbonding_period_bounds_at_their_edges(env: Env):
    """The unbonding period must be at least twice the governance delay, and close_delay at most a
    year: exactly at the edge is accepted."""
    from dataclasses import replace
    p = replace(env.params, staking=replace(env.params.staking, unbonding_period=2 * DELAY),
                economics=replace(env.params.economics, close_delay=365 * 86400))
    assert not p.problems()
    pid = _propose(env, R.action_set_params(p))
    env.chain.advance(DELAY)
    assert env.on_registry(env.send(env.owner, R.execute_proposal(pid)))[0].success
    assert env.read.params() == p


def test_child_code_change(env: Env):
    new_stake = begin_cell().store_uint(0xBEEF, 16).end_cell()
    pid = _propose(env, R.action_set_child_codes(R.ChildCodes(new_stake, ESCROW_CODE, None)))
    env.chain.advance(DELAY)
    env.send(env.owner, R.execute_proposal(pid))
    codes = env.read.child_codes()
    assert codes.stake.hash == new_stake.hash and codes.reputation is None
    a = env.stranger.address
    assert env.read.stake_address(a, 1) == R.child_address(new_stake, env.reg.address, R.stake_identity(a, 1))


def test_code_upgrade_keeps_state(env: Env):
    other = "tolk" if env.lang == "func" else "func"
    pid = _propose(env, R.action_upgrade_code(R.registry_code(other)))
    env.chain.advance(DELAY)
    txs = env.send(env.owner, R.execute_proposal(pid))
    assert env.on_registry(txs)[0].success
    assert env.chain.state(env.reg.address)[1].hash == R.registry_code(other).hash
    # same storage, read and written by the other implementation
    assert env.read.is_allowed("worker_image", IMG_A) and env.read.version() == 1
    assert env.read.owner()[0] == env.owner.address
    env.send(env.owner, R.revoke("worker_image", IMG_A))
    assert not env.read.is_allowed("worker_image", IMG_A)


# ------------------------------------------------------------------------------------ ownership
def test_two_step_ownership_transfer(env: Env):
    txs = env.send(env.owner, R.transfer_ownership(env.heir.address))
    assert env.on_registry(txs)[0].success
    assert env.read.owner() == (env.owner.address, env.heir.address)
    # not yet the owner
    env.expect_error(env.send(env.heir, R.revoke("model", MODEL_A)), Err.NOT_OWNER)
    env.expect_error(env.send(env.stranger, R.accept_ownership()), Err.NOT_PENDING_OWNER)
    assert env.on_registry(env.send(env.heir, R.accept_ownership()))[0].success
    assert env.read.owner() == (env.heir.address, None)
    env.expect_error(env.send(env.owner, R.revoke("model", MODEL_A)), Err.NOT_OWNER)
    assert env.on_registry(env.send(env.heir, R.revoke("model", MODEL_A)))[0].success


def test_ownership_transfer_cancelled_and_not_accepted(env: Env):
    env.send(env.owner, R.transfer_ownership(env.heir.address))
    env.send(env.owner, R.transfer_ownership(None))
    assert env.read.owner() == (env.owner.address, None)
    with Unchanged(env):
        txs = env.send(env.heir, R.accept_ownership())
    env.expect_error(txs, Err.NOT_PENDING_OWNER)


# ------------------------------------------------------------------------------------ proxies
OP_KEY = 0x0BADC0DE << 224


def _register(env: Env, stake: int = 60 * TON, active: bool = True, owner=None, endpoint="10.0.0.1:8443"):
    owner = owner or env.proxy_owner.address
    return env.from_address(env.stake_addr(owner), R.register_proxy(owner, OP_KEY, stake, active, endpoint))


def test_proxy_registers_through_its_stake_contract(env: Env):
    txs = _register(env)
    assert env.on_registry(txs)[0].success
    p = env.read.proxy(env.proxy_owner.address)
    assert p and p.active and p.operator_key == OP_KEY and p.stake == 60 * TON and p.endpoint == "10.0.0.1:8443"
    assert p.registered_at == env.chain.now and env.read.version() == 1
    assert [x.owner_hash for x in env.read.proxies()] == [int.from_bytes(env.proxy_owner.address.hash_part, "big")]
    # the excess goes to the proxy's owner, not to the stake contract
    assert has_transaction(txs, from_=env.reg.address, to=env.proxy_owner.address, op=R.OP_EXCESSES)
    # re-registration updates in place
    _register(env, endpoint="10.0.0.2:9000")
    assert env.read.proxy(env.proxy_owner.address).endpoint == "10.0.0.2:9000"
    assert env.read.proxies()[0].endpoint == "10.0.0.2:9000" and len(env.read.proxies()) == 1


def test_register_from_a_stranger_or_worker_stake(env: Env):
    owner = env.proxy_owner.address
    for src in (env.stranger.address, env.stake_addr(owner, ROLE_WORKER)):
        with Unchanged(env):
            txs = env.from_address(src, R.register_proxy(owner, OP_KEY, 60 * TON, True, "x:1"))
        env.expect_error(txs, Err.WRONG_SENDER)
    # a real wallet pretending to be the stake contract
    with Unchanged(env):
        txs = env.send(env.proxy_owner, R.register_proxy(owner, OP_KEY, 60 * TON, True, "x:1"))
    env.expect_error(txs, Err.WRONG_SENDER)


@pytest.mark.parametrize("stake,active", [(50 * TON - 1, True), (100 * TON, False), (0, True)])
def test_register_needs_an_active_minimum_stake(env: Env, stake, active):
    with Unchanged(env):
        txs = _register(env, stake=stake, active=active)
    env.expect_error(txs, Err.STAKE_TOO_LOW)


def test_max_proxies(env: Env):
    owners = [env.proxy_owner.address, env.stranger.address, env.heir.address]
    assert env.on_registry(_register(env, owner=owners[0]))[0].success
    assert env.on_registry(_register(env, owner=owners[1]))[0].success
    with Unchanged(env):
        txs = _register(env, owner=owners[2])
    env.expect_error(txs, Err.TOO_MANY_PROXIES)
    # an existing one may still update
    assert env.on_registry(_register(env, owner=owners[1], endpoint="y:2"))[0].success


def test_foreign_workchain_owner(env: Env):
    owner = Address("-1:" + "22" * 32)
    with Unchanged(env):
        txs = _register(env, owner=owner)
    env.expect_error(txs, Err.BAD_WORKCHAIN)


def test_stake_status_activates_and_deactivates(env: Env):
    owner = env.proxy_owner.address
    _register(env)
    v = env.read.version()
    txs = env.from_address(env.stake_addr(owner), R.stake_status(owner, ROLE_PROXY, True, OP_KEY + 1, 49 * TON))
    assert env.on_registry(txs)[0].success
    p = env.read.proxy(owner)
    assert not p.active and p.stake == 49 * TON and p.operator_key == OP_KEY + 1 and env.read.version() == v + 1
    env.from_address(env.stake_addr(owner), R.stake_status(owner, ROLE_PROXY, True, OP_KEY, 80 * TON))
    assert env.read.proxy(owner).active
    env.from_address(env.stake_addr(owner), R.stake_status(owner, ROLE_PROXY, False, OP_KEY, 80 * TON))
    assert not env.read.proxy(owner).active  # jailed: inactive whatever the amount
    # from anyone else: refused
    with Unchanged(env):
        txs = env.from_address(env.stranger.address, R.stake_status(owner, ROLE_PROXY, True, OP_KEY, 80 * TON))
    env.expect_error(txs, Err.WRONG_SENDER)


def test_stake_status_of_unknown_proxy_changes_nothing(env: Env):
    owner = env.stranger.address
    data = env.reg.data_hash
    txs = env.from_address(env.stake_addr(owner), R.stake_status(owner, ROLE_PROXY, True, OP_KEY, 80 * TON))
    assert env.on_registry(txs)[0].success and env.reg.data_hash == data


def test_bad_role(env: Env):
    owner = env.proxy_owner.address
    with Unchanged(env):
        txs = env.from_address(env.stake_addr(owner, 3), R.stake_status(owner, 3, True, OP_KEY, 80 * TON))
    env.expect_error(txs, Err.BAD_ROLE)
    with Unchanged(env):
        txs = env.send(env.owner, R.propose(R.action_slash_stake(owner, 9, TON, 1)))
    env.expect_error(txs, Err.BAD_ROLE)


def test_unregister_and_remove(env: Env):
    _register(env)
    env.expect_error(env.send(env.stranger, R.unregister_proxy()), Err.PROXY_UNKNOWN)
    assert env.on_registry(env.send(env.proxy_owner, R.unregister_proxy()))[0].success
    assert env.read.proxy(env.proxy_owner.address) is None and env.read.proxies() == []
    _register(env)
    key = int.from_bytes(env.proxy_owner.address.hash_part, "big")
    env.expect_error(env.send(env.stranger, R.remove_proxy(key)), Err.NOT_OWNER)
    assert env.on_registry(env.send(env.owner, R.remove_proxy(key)))[0].success  # tighten now
    assert env.read.proxy(key) is None
    env.expect_error(env.send(env.owner, R.remove_proxy(key)), Err.PROXY_UNKNOWN)


def test_a_removed_proxy_comes_back_only_through_governance(env: Env):
    """remove_proxy holds: the removed proxy's stake re-registering is refused (214) at once and until
    a readmit_proxy proposal executes after the delay; unregistering oneself does not bar anyone."""
    _register(env)
    key = int.from_bytes(env.proxy_owner.address.hash_part, "big")
    assert env.on_registry(env.send(env.owner, R.remove_proxy(key)))[0].success
    with Unchanged(env):
        txs = _register(env)
    env.expect_error(txs, Err.PROXY_REMOVED)
    assert env.read.proxy(key) is None
    # readmission is a proposal: only for a removed proxy (206), only by the owner, only after the delay
    other = int.from_bytes(env.stranger.address.hash_part, "big")
    with Unchanged(env):
        txs = env.send(env.owner, R.propose(R.action_readmit_proxy(other)))
    env.expect_error(txs, Err.PROXY_UNKNOWN)
    env.expect_error(env.send(env.stranger, R.propose(R.action_readmit_proxy(key))), Err.NOT_OWNER)
    pid = _propose(env, R.action_readmit_proxy(key))
    env.chain.advance(DELAY - 1)
    env.expect_error(env.send(env.stranger, R.execute_proposal(pid)), Err.PROPOSAL_NOT_READY)
    with Unchanged(env):
        txs = _register(env)
    env.expect_error(txs, Err.PROXY_REMOVED)
    env.chain.advance(1)
    assert env.on_registry(env.send(env.stranger, R.execute_proposal(pid)))[0].success
    assert env.on_registry(_register(env))[0].success and env.read.proxy(key).active


# ------------------------------------------------------------------------------------ queries and slashing
def test_query_params(env: Env):
    txs = env.send(env.stranger, R.query_params(query_id=7))
    resp = find_transactions(txs, from_=env.reg.address, to=env.stranger.address, op=R.OP["params_response"])
    assert resp
    s = resp[0].in_msg.body.begin_parse()
    s.skip_bits(32)
    assert s.load_uint(64) == 7 and s.load_uint(32) == env.read.version()
    assert R.NetworkParams.from_cell(s.load_ref()) == env.params


def test_governance_slash_goes_through_the_registry_after_the_delay(env: Env):
    target = env.proxy_owner.address
    pid = _propose(env, R.action_slash_stake(target, ROLE_PROXY, 5 * TON, 0xE1))
    env.chain.advance(DELAY)
    with Unchanged(env):
        txs = env.send(env.stranger, R.execute_proposal(pid), value=R.SLASH_EXEC_VALUE - 1)
    env.expect_error(txs, Err.LOW_VALUE)
    bal = env.reg.balance
    start = len(env.chain.transactions)
    txs = env.send(env.stranger, R.execute_proposal(pid), value=R.SLASH_EXEC_VALUE + 20_000_000)
    # the executor pays for the slash message, not the registry (only rent may come off its balance)
    rent = sum(t.storage_fees for t in env.on_registry(env.chain.transactions[start:]))
    bounces = find_transactions(txs, to=env.reg.address, bounced=True)
    # here no stake contract exists, so the 0.05 TON comes back: it may stay, minus the bounce's gas
    back = sum(t.value - t.total_fees for t in bounces)
    assert env.reg.balance - back >= bal - rent
    sent = find_transactions(txs, from_=env.reg.address, to=env.stake_addr(target), op=R.OP["governance_slash"])
    assert sent, [t.describe() for t in txs]
    body = sent[0].in_msg.body.begin_parse()
    body.skip_bits(32 + 64)
    assert body.load_coins() == 5 * TON and body.load_uint(256) == 0xE1
    assert sent[0].in_msg.info.bounce
    # no stake contract there: the message bounces back and the registry ignores it
    assert has_transaction(txs, from_=env.stake_addr(target), to=env.reg.address, bounced=True, success=True)
    assert env.read.proposal(pid) is None


# ------------------------------------------------------------------------------------ reputation path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

PROXY_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _pub_int(key: Ed25519PrivateKey) -> int:
    from cryptography.hazmat.primitives import serialization
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return int.from_bytes(raw, "big")


def _signed_report(env: Env, key=PROXY_KEY, registry=None, worker=None, epoch=1, proxy=None):
    proxy = proxy or env.proxy_owner.address
    report = R.reputation_report(registry or env.reg.address, proxy.hash_part, worker or env.heir.address, epoch,
                                 begin_cell().store_uint(7, 32).end_cell())
    return report, key.sign(report.hash)


def _register_keyed(env: Env, active: bool = True):
    owner = env.proxy_owner.address
    txs = env.from_address(env.stake_addr(owner), R.register_proxy(owner, _pub_int(PROXY_KEY), 60 * TON, True, "p:1"))
    assert env.on_registry(txs)[0].success
    if not active:
        env.from_address(env.stake_addr(owner), R.stake_status(owner, ROLE_PROXY, False, _pub_int(PROXY_KEY), 60 * TON))


def test_report_is_forwarded_to_the_workers_reputation_contract(env: Env):
    _register_keyed(env)
    report, sig = _signed_report(env)
    txs = env.send(env.stranger, R.submit_report(sig, report, query_id=5), value=R.REPORT_VALUE + 10_000_000)
    assert env.on_registry(txs)[0].success
    rep = R.child_address(REPUTATION_CODE, env.reg.address, R.reputation_identity(env.heir.address))
    fwd = find_transactions(txs, from_=env.reg.address, to=rep, op=R.OP["apply_report"])
    assert fwd, [t.describe() for t in txs]
    m = fwd[0].in_msg
    assert m.init is not None and m.init.code.hash == REPUTATION_CODE.hash  # deployed on first report
    s = m.body.begin_parse()
    s.skip_bits(32)
    assert s.load_uint(64) == 5 and s.load_address() == env.stranger.address
    assert s.load_ref().hash == report.hash


@pytest.mark.parametrize("case,code", [
    ("unregistered", Err.PROXY_UNKNOWN), ("inactive", Err.STAKE_TOO_LOW), ("stranger_key", Err.BAD_SIGNATURE),
    ("other_registry", Err.MALFORMED), ("foreign_worker", Err.BAD_WORKCHAIN), ("low_value", Err.LOW_VALUE),
    ("bad_tag", Err.MALFORMED),
])
def test_bad_reports_are_refused(env: Env, case, code):
    if case != "unregistered":
        _register_keyed(env, active=case != "inactive")
    kw = {}
    if case == "stranger_key":
        kw["key"] = Ed25519PrivateKey.from_private_bytes(bytes(32))
    if case == "other_registry":
        kw["registry"] = env.stranger.address
    if case == "foreign_worker":
        kw["worker"] = Address("-1:" + "33" * 32)
    report, sig = _signed_report(env, **kw)
    if case == "bad_tag":
        s = report.begin_parse()
        s.skip_bits(32)
        report = begin_cell().store_uint(0x52455055, 32).store_slice(s).end_cell()
        sig = PROXY_KEY.sign(report.hash)
    value = R.REPORT_VALUE - 1 if case == "low_value" else R.REPORT_VALUE
    with Unchanged(env):
        txs = env.send(env.stranger, R.submit_report(sig, report), value=value)
    env.expect_error(txs, code)
    assert not has_transaction(txs, from_=env.reg.address, op=R.OP["apply_report"])


def test_worker_slash_event_reaches_reputation(env: Env):
    worker = env.heir.address
    txs = env.from_address(env.stake_addr(worker, ROLE_WORKER), R.stake_slashed(worker, ROLE_WORKER, 3 * TON, 1, 9))
    assert env.on_registry(txs)[0].success
    rep = R.child_address(REPUTATION_CODE, env.reg.address, R.reputation_identity(worker))
    fwd = find_transactions(txs, from_=env.reg.address, to=rep, op=R.OP["record_slash"])
    assert fwd
    s = fwd[0].in_msg.body.begin_parse()
    s.skip_bits(32)
    assert s.load_uint(64) == 9 and s.load_address() == env.stake_addr(worker, ROLE_WORKER)
    assert s.load_coins() == 3 * TON and s.load_uint(8) == 1


def test_proxy_slash_event_only_returns_the_excess(env: Env):
    owner = env.proxy_owner.address
    src = env.stake_addr(owner, ROLE_PROXY)
    txs = env.from_address(src, R.stake_slashed(owner, ROLE_PROXY, TON, 2))
    assert env.on_registry(txs)[0].success
    assert not has_transaction(txs, from_=env.reg.address, op=R.OP["record_slash"])
    assert has_transaction(txs, from_=env.reg.address, to=src, op=R.OP_EXCESSES)


def test_slash_event_from_a_stranger(env: Env):
    worker = env.heir.address
    with Unchanged(env):
        txs = env.from_address(env.stranger.address, R.stake_slashed(worker, ROLE_WORKER, TON, 1))
    env.expect_error(txs, Err.WRONG_SENDER)


def test_endpoint_must_be_one_cell(env: Env):
    owner = env.proxy_owner.address
    body = R.register_proxy(owner, OP_KEY, 60 * TON, True, "x:1")
    s = body.begin_parse()
    head = s.load_bits(s.remaining_bits)
    deep = begin_cell().store_bytes(b"x:1").store_ref(begin_cell().store_bytes(b"junk").end_cell()).end_cell()
    body = begin_cell().store_bits(head).store_ref(deep).end_cell()
    with Unchanged(env):
        txs = env.from_address(env.stake_addr(owner), body)
    env.expect_error(txs, Err.MALFORMED)

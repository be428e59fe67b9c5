"""Escrow contract (payment channel): every message, getter and error path, once per language (see
TESTING.md). The registry is deployed from the same language and holds the escrow code, so the
escrow's address, its parameters and its open go through the real registry."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pytoniq_core import Address, Cell, begin_cell
from pytoniq_core.tlb.transaction import MessageAny

from wrappers import keys as K
from node.payments import policy as CP
from node.payments import vouchers as V
from wrappers import escrow as E
from wrappers import registry as R
from wrappers.chain.contract import Instant
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider
from wrappers.chain.records import find_transactions, has_transaction
from wrappers import TON
from wrappers.escrow import Err, State

DELAY = 3600                 # the registry's close delay
MIN_DEPOSIT = 1 * TON        # the registry's minimum escrow deposit
DEPOSIT = 10 * TON           # what the payer opens the test channel with
GOV_DELAY = 600


def key(n: int):
    return K.signing_key(bytes([n]) * 32)


class Env:
    """A registry (same language) holding the escrow code, and one channel payer -> payee. Two
    snapshots: ``fresh`` (nothing deployed for the channel) and ``opened`` (open with DEPOSIT)."""

    def __init__(self, lang: str):
        self.lang = lang
        self.chain = c = EmbeddedChain()
        self.owner, self.payer, self.payee = c.treasury("owner"), c.treasury("payer"), c.treasury("payee")
        self.stranger = c.treasury("stranger")
        self.params = R.NetworkParams(
            staking=R.Staking(treasury=self.owner.address), governance_delay=GOV_DELAY,
            economics=R.Economics(min_escrow_deposit=MIN_DEPOSIT, close_delay=DELAY))
        self.code = E.escrow_code(lang)
        self.reg = Instant(R.Registry.from_init(EmbeddedProvider(c), self.owner.address, self.params,
                                                R.ChildCodes(escrow=self.code), lang=lang))
        self.reg.send_deploy(self.owner)
        self.payer_key, self.payee_key, self.stranger_key = key(1), key(2), key(3)
        self.esc = self.channel(self.payer_key)
        self.fresh = c.snapshot()
        self.open_txs = self.esc.open(self.payer, DEPOSIT, K.public_key_int(self.payee_key))
        self.opened = c.snapshot()

    def channel(self, payer_key, payer=None, payee=None, registry=None) -> Instant:
        return Instant(E.Escrow.from_init(EmbeddedProvider(self.chain), registry or self.reg.address,
                                          (payer or self.payer).address, (payee or self.payee).address,
                                          K.public_key_int(payer_key), code=self.code))

    def voucher(self, amount: int, signer=None, esc: Instant | None = None) -> V.Voucher:
        return V.Voucher.sign(signer or self.payer_key, (esc or self.esc).address, amount)

    def mine(self, txs, esc=None):
        a = (esc or self.esc).address
        return [t for t in txs if t.account.hash_part == a.hash_part]

    def expect_error(self, txs, code: int, esc=None):
        mine = self.mine(txs, esc)
        assert mine, "the message never reached the escrow"
        assert mine[0].exit_code == code, \
            f"expected {E.describe_error(code)}, got {E.describe_error(mine[0].exit_code)}"
        assert not mine[0].success

    def ok(self, txs, esc=None):
        mine = [t for t in self.mine(txs, esc) if not t.bounced]
        assert mine and all(t.success for t in mine), [t.describe() for t in txs]
        return mine[0]

    def from_address(self, src: Address, body: Cell, value: int = 50_000_000, bounced: bool = False, esc=None):
        """A message from an address we do not control (the registry, a forged bounce): only the
        emulator can forge a sender, which is what lets us test that the escrow checks it."""
        msg = self.chain.internal(src, (esc or self.esc).address, value, body)
        if bounced:
            m = MessageAny.deserialize(msg.begin_parse())
            m.info.bounced, m.info.bounce = True, False
            msg = m.serialize()
        return self.chain.send(msg)

    @property
    def ch(self) -> E.Channel:
        return self.esc.read.channel()


_BASE: dict[str, Env] = {}


@pytest.fixture
def env(lang) -> Env:
    # deploy and open once per language, then every test starts from the opened snapshot
    if lang not in _BASE:
        _BASE[lang] = Env(lang)
    e = _BASE[lang]
    e.chain.restore(e.opened)
    return e


def payments(txs, env: Env, to=None) -> list[E.Payout]:
    """The payment / refund / open_refused messages the escrow sent, as delivered."""
    out = []
    for t in txs:
        if t.src is not None and t.src.hash_part == env.esc.address.hash_part and not t.bounced:
            if to is not None and t.account.hash_part != to.address.hash_part:
                continue
            p = E.parse_payout(t.in_msg.body)
            if p is not None:
                out.append((p, t.value))
    return out


class Unchanged:
    """A refused operation: the escrow's data and balance are what they were (storage rent is the
    only thing it may pay), it sent no payment or refund, and the bystanders' balances (payer and
    payee unless they sent the message) did not move."""

    def __init__(self, env: Env, sender=None, esc: Instant | None = None):
        self.env, self.sender, self.esc = env, sender, esc or env.esc

    def __enter__(self):
        self.data, self.bal = self.esc.data_hash, self.esc.balance
        self.others = {w.name: w.balance for w in (self.env.payer, self.env.payee) if w is not self.sender}
        self.start = len(self.env.chain.transactions)
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return
        txs = self.env.chain.transactions[self.start:]
        assert self.esc.data_hash == self.data, "state changed on a refused operation"
        rent = sum(t.storage_fees for t in self.env.mine(txs, self.esc))
        assert self.bal - rent <= self.esc.balance <= self.bal, "the escrow's balance moved on a refused operation"
        sent = [t for t in txs if t.src is not None and t.src.hash_part == self.esc.address.hash_part
                and t.op in (E.OP["payment"], E.OP["refund"])]
        assert not sent, "a refused operation paid someone"
        for w in (self.env.payer, self.env.payee):
            if w.name in self.others:
                assert w.balance == self.others[w.name], f"{w.name}'s balance moved on a refused operation"


# ==================================================================================== open
def test_open_reads_params_from_the_registry(env: Env):
    assert has_transaction(env.open_txs, to=env.esc.address, deploy=True, success=True)
    # the open completes only with the registry's answer
    assert has_transaction(env.open_txs, from_=env.esc.address, to=env.reg.address, op=R.OP["query_params"])
    assert has_transaction(env.open_txs, from_=env.reg.address, to=env.esc.address, op=R.OP["params_response"],
                           success=True)
    ch = env.ch
    assert (ch.state, ch.deposited, ch.claimed, ch.withdrawn, ch.owed, ch.pending) == (State.OPEN, DEPOSIT, 0, 0, 0, 0)
    assert env.esc.read.config() == (DELAY, MIN_DEPOSIT)
    assert env.esc.read.keys() == (K.public_key_int(env.payer_key), K.public_key_int(env.payee_key))
    assert env.esc.read.payee_key_is(env.payee_key) and not env.esc.read.payee_key_is(env.stranger_key)
    assert env.esc.read.parties() == (env.reg.address, env.payer.address, env.payee.address)
    # the registry's getter derives the same address
    assert env.reg.read.escrow_address(env.payer.address, env.payee.address, env.esc.payer_key) == env.esc.address
    # the deposit and the storage reserve stay; the rest of the value came back to the payer
    assert env.esc.balance == DEPOSIT + E.STORAGE_RESERVE
    assert has_transaction(env.open_txs, from_=env.esc.address, to=env.payer.address, op=E.OP_EXCESSES)


def test_open_below_the_minimum_is_refused_and_returned(env: Env):
    env.chain.restore(env.fresh)
    before = env.payer.balance
    txs = env.esc.open(env.payer, MIN_DEPOSIT - 1, K.public_key_int(env.payee_key))
    refused = payments(txs, env, to=env.payer)
    assert len(refused) == 1
    p, value = refused[0]
    assert (p.op, p.reason, p.min_deposit) == ("open_refused", Err.DEPOSIT_TOO_LOW, MIN_DEPOSIT)
    assert value > MIN_DEPOSIT - 1                      # the amount and the rest of the value
    assert env.ch.state == State.NEW and env.ch.deposited == 0
    # the payer paid fees (its wallet's, the escrow's and the registry's) and the storage reserve:
    # far less than the amount
    assert before - env.payer.balance < E.STORAGE_RESERVE + 60_000_000
    assert env.esc.balance == E.STORAGE_RESERVE
    # the escrow stays unusable...
    env.expect_error(env.esc.top_up(env.stranger, TON), Err.NOT_OPEN)
    env.expect_error(env.esc.claim(env.payee, env.voucher(1)), Err.NOT_OPEN)
    # ...until a sufficient open
    env.ok(env.esc.open(env.payer, MIN_DEPOSIT, K.public_key_int(env.payee_key)))
    assert env.ch.state == State.OPEN and env.ch.deposited == MIN_DEPOSIT


def test_open_is_refused_when_the_registry_does_not_answer(env: Env):
    # a channel whose registry address holds no contract: query_params bounces
    env.chain.restore(env.fresh)
    nowhere = Address("0:" + "ab" * 32)
    esc = env.channel(env.payer_key, registry=nowhere)
    txs = esc.open(env.payer, 2 * TON, 0)
    assert has_transaction(txs, from_=nowhere, to=esc.address, bounced=True, success=True)
    refused = [E.parse_payout(t.in_msg.body) for t in txs if t.src and t.src.hash_part == esc.address.hash_part
               and t.account.hash_part == env.payer.address.hash_part]
    assert refused and refused[0].op == "open_refused" and refused[0].reason == Err.PARAMS_UNAVAILABLE
    value = [t.value for t in txs if t.op == E.OP["open_refused"]][0]
    assert value > 2 * TON
    assert esc.read.channel().state == State.NEW and esc.balance == E.STORAGE_RESERVE


def test_only_the_payer_opens(env: Env):
    env.chain.restore(env.fresh)
    before = env.payee.balance
    txs = env.esc.open(env.stranger, 2 * TON, 0)
    env.expect_error(txs, Err.NOT_OWNER)
    assert env.chain.state(env.esc.address)[0] != "active" or env.ch.state == State.NEW
    assert env.payee.balance == before
    # the stranger's value came back
    assert has_transaction(txs, from_=env.esc.address, to=env.stranger.address, bounced=True)


@pytest.mark.parametrize("case", ["twice", "zero", "low_value"])
def test_bad_opens(env: Env, case):
    amount, value, code = {
        "twice": (2 * TON, None, Err.ALREADY_OPEN),
        "zero": (0, None, Err.MALFORMED),
        "low_value": (2 * TON, 2 * TON + E.OPEN_FEE - 1, Err.LOW_VALUE),
    }[case]
    if case != "twice":
        env.chain.restore(env.fresh)
        env.payer.send(env.esc.address, E.STORAGE_RESERVE, None, state_init=env.esc.state_init, bounce=False)
        assert env.ch.state == State.NEW
    with Unchanged(env, sender=env.payer):
        txs = env.esc.open(env.payer, amount, 0, value=value)
    env.expect_error(txs, code)


def test_first_open_pays_the_storage_reserve(env: Env):
    env.chain.restore(env.fresh)
    need = 2 * TON + E.OPEN_FEE + E.STORAGE_RESERVE
    env.expect_error(env.esc.open(env.payer, 2 * TON, 0, value=need - 1), Err.LOW_VALUE)
    env.ok(env.esc.open(env.payer, 2 * TON, 0, value=need))
    assert env.ch.state == State.OPEN and env.esc.balance == 2 * TON + E.STORAGE_RESERVE


def test_payer_and_payee_must_differ(env: Env):
    env.chain.restore(env.fresh)
    esc = env.channel(env.payer_key, payee=env.payer)
    txs = esc.open(env.payer, 2 * TON, 0)
    env.expect_error(txs, Err.MALFORMED, esc)


def test_params_response_only_from_the_registry(env: Env):
    env.chain.restore(env.fresh)
    env.payer.send(env.esc.address, E.STORAGE_RESERVE, None, state_init=env.esc.state_init, bounce=False)
    body = (begin_cell().store_uint(R.OP["params_response"], 32).store_uint(0, 64).store_uint(0, 32)
            .store_ref(replace(env.params, economics=R.Economics(min_escrow_deposit=0, close_delay=0)).to_cell())
            .end_cell())
    with Unchanged(env):
        txs = env.from_address(env.stranger.address, body)
    env.expect_error(txs, Err.WRONG_SENDER)
    # from the registry, but no open is pending
    env.chain.restore(env.opened)
    with Unchanged(env):
        txs = env.from_address(env.reg.address, body)
    env.expect_error(txs, Err.NOT_OPEN)


@pytest.mark.parametrize("which", ["close", "withdraw"])
def test_a_huge_close_delay_still_lets_the_channel_close(env: Env, which):
    """A registry that did not bound close_delay (deployed with 2^32 - 1): the notice ends at the last
    uint32 time instead of overflowing, and the request succeeds."""
    env.chain.restore(env.fresh)
    params = replace(env.params, economics=R.Economics(min_escrow_deposit=MIN_DEPOSIT, close_delay=0xFFFFFFFF))
    reg = Instant(R.Registry.from_init(EmbeddedProvider(env.chain), env.stranger.address, params,
                                       R.ChildCodes(escrow=env.code), lang=env.lang))
    reg.send_deploy(env.stranger)
    esc = env.channel(env.payer_key, registry=reg.address)
    env.ok(esc.open(env.payer, DEPOSIT, K.public_key_int(env.payee_key)), esc)
    if which == "close":
        txs = esc.request_close(env.payer)
    else:
        txs = esc.request_withdraw(env.payer, TON)
    env.ok(txs, esc)
    assert esc.read.channel().close_at == 0xFFFFFFFF


def test_params_are_kept_from_the_open(env: Env):
    """A channel keeps the close delay it was opened with; a later parameter change applies to
    channels opened afterwards."""
    new = replace(env.params, economics=R.Economics(min_escrow_deposit=5 * TON, close_delay=7 * DELAY))
    env.reg.send(env.owner, R.propose(R.action_set_params(new)))
    env.chain.advance(GOV_DELAY)
    env.reg.send(env.owner, R.execute_proposal(0))
    assert env.reg.read.params() == new
    assert env.esc.read.config() == (DELAY, MIN_DEPOSIT)
    other = env.channel(key(9))
    env.ok(other.open(env.payer, 5 * TON, 0), other)
    assert other.read.config() == (7 * DELAY, 5 * TON)
    env.ok(env.esc.request_close(env.payer))
    assert env.ch.close_at == env.chain.now + DELAY


# ==================================================================================== top-up
def test_top_up_by_anyone(env: Env):
    txs = env.esc.top_up(env.stranger, 3 * TON)
    env.ok(txs)
    assert env.ch.deposited == DEPOSIT + 3 * TON
    assert env.esc.balance == DEPOSIT + 3 * TON + E.STORAGE_RESERVE
    back = find_transactions(txs, from_=env.esc.address, to=env.stranger.address, op=E.OP_EXCESSES)
    assert back and back[0].value > E.MARGIN


@pytest.mark.parametrize("case", ["zero", "low_value", "not_open", "closed"])
def test_bad_top_ups(env: Env, case):
    amount, value, code = 3 * TON, None, None
    if case == "zero":
        amount, code = 0, Err.MALFORMED
    elif case == "low_value":
        value, code = 3 * TON + E.TOP_UP_FEE - 1, Err.LOW_VALUE
    elif case == "not_open":
        env.chain.restore(env.fresh)
        env.payer.send(env.esc.address, E.STORAGE_RESERVE, None, state_init=env.esc.state_init, bounce=False)
        code = Err.NOT_OPEN
    else:
        _close(env)
        code = Err.CLOSED
    with Unchanged(env):
        txs = env.esc.top_up(env.stranger, amount, value=value)
    env.expect_error(txs, code)


def test_plain_transfer_and_comment_change_nothing(env: Env):
    data = env.esc.data_hash
    env.ok(env.stranger.send(env.esc.address, TON, None))
    env.ok(env.stranger.send(env.esc.address, TON, begin_cell().store_uint(0, 32).store_snake_string("hi").end_cell()))
    # the value stays (minus the gas of accepting it) as surplus, returned to the payer at close
    assert env.esc.data_hash == data
    assert DEPOSIT + E.STORAGE_RESERVE + 2 * TON - 2_000_000 < env.esc.balance < DEPOSIT + E.STORAGE_RESERVE + 2 * TON


# ==================================================================================== claims
def test_anyone_claims_for_the_payee(env: Env):
    before = env.payee.balance
    txs = env.esc.claim(env.stranger, env.voucher(2 * TON))
    env.ok(txs)
    paid = payments(txs, env, to=env.payee)
    assert [(p.op, p.amount, v) for p, v in paid] == [("payment", 2 * TON, 2 * TON)]
    assert env.ch.claimed == 2 * TON and env.ch.held == DEPOSIT - 2 * TON
    assert env.esc.balance == DEPOSIT - 2 * TON + E.STORAGE_RESERVE
    fee = find_transactions(txs, to=env.payee.address, from_=env.esc.address)[0].total_fees
    assert env.payee.balance == before + 2 * TON - fee
    # the stranger's excess came back to the stranger, not to the payee
    assert has_transaction(txs, from_=env.esc.address, to=env.stranger.address, op=E.OP_EXCESSES)
    # the next voucher pays only the difference
    txs = env.esc.claim(env.stranger, env.voucher(5 * TON))
    assert [p.amount for p, _ in payments(txs, env)] == [3 * TON]
    assert env.ch.claimed == 5 * TON


def test_payee_claim_is_one_message(env: Env):
    txs = env.esc.claim(env.payee, env.voucher(2 * TON), value=E.CLAIM_FEE + E.MARGIN)
    out = [t for t in txs if t.src is not None and t.src.hash_part == env.esc.address.hash_part]
    assert len(out) == 1 and out[0].op == E.OP["payment"]
    # the payment carries the excess of the claim too
    assert 2 * TON < out[0].value < 2 * TON + E.CLAIM_FEE + E.MARGIN


def test_claimable_matches_the_contract(env: Env):
    for amount in (3 * TON, 3 * TON, 12 * TON, 15 * TON):
        expect = E.claimable(amount, env.ch)
        txs = env.esc.claim(env.stranger, env.voucher(amount))
        got = sum(p.amount for p, _ in payments(txs, env))
        assert got == expect
    assert env.ch.claimed == DEPOSIT


def test_voucher_from_another_channel(env: Env):
    # same payer and key, another payee: another channel, another address
    other = env.channel(env.payer_key, payee=env.stranger)
    env.ok(other.open(env.payer, 2 * TON, 0), other)
    foreign = env.voucher(TON, esc=other)
    assert foreign.verify(K.public_key_int(env.payer_key))
    with Unchanged(env, sender=env.payee):
        txs = env.esc.claim(env.payee, replace(foreign, channel=env.esc.address))
    env.expect_error(txs, Err.BAD_SIGNATURE)
    # and it still works where it belongs
    env.ok(other.claim(env.stranger, foreign), other)


@pytest.mark.parametrize("signer", ["payee", "stranger"])
def test_voucher_signed_by_anyone_but_the_payer(env: Env, signer):
    k = env.payee_key if signer == "payee" else env.stranger_key
    with Unchanged(env, sender=env.payee):
        txs = env.esc.claim(env.payee, env.voucher(TON, signer=k))
    env.expect_error(txs, Err.BAD_SIGNATURE)


def test_coop_close_signature_is_not_a_voucher(env: Env):
    sig = V.sign_coop_close(env.payer_key, env.esc.address, TON)
    with Unchanged(env):
        txs = env.esc.claim(env.stranger, V.Voucher(env.esc.address, TON, sig))
    env.expect_error(txs, Err.BAD_SIGNATURE)


def test_claims_that_go_backwards(env: Env):
    env.ok(env.esc.claim(env.stranger, env.voucher(3 * TON)))
    for amount in (3 * TON, 2 * TON, 0):
        with Unchanged(env):
            txs = env.esc.claim(env.stranger, env.voucher(amount))
        env.expect_error(txs, Err.STALE_VOUCHER)
    assert env.ch.claimed == 3 * TON


def test_amounts_above_the_deposit(env: Env):
    v = env.voucher(15 * TON)
    txs = env.esc.claim(env.stranger, v)
    assert [p.amount for p, _ in payments(txs, env)] == [DEPOSIT]     # never more than deposited
    assert env.ch.claimed == DEPOSIT and env.ch.held == 0
    assert env.esc.balance == E.STORAGE_RESERVE
    with Unchanged(env):
        txs = env.esc.claim(env.stranger, v)
    env.expect_error(txs, Err.NOTHING_TO_CLAIM)
    # a top-up makes the rest of the same voucher claimable
    env.ok(env.esc.top_up(env.payer, 4 * TON))
    txs = env.esc.claim(env.stranger, v)
    assert [p.amount for p, _ in payments(txs, env)] == [4 * TON]
    assert env.ch.claimed == 14 * TON


def test_claim_before_open_and_with_little_value(env: Env):
    with Unchanged(env):
        txs = env.esc.claim(env.stranger, env.voucher(TON), value=E.CLAIM_FEE - 1)
    env.expect_error(txs, Err.LOW_VALUE)
    env.chain.restore(env.fresh)
    env.payer.send(env.esc.address, E.STORAGE_RESERVE, None, state_init=env.esc.state_init, bounce=False)
    with Unchanged(env):
        txs = env.esc.claim(env.stranger, env.voucher(TON))
    env.expect_error(txs, Err.NOT_OPEN)


@pytest.mark.parametrize("cut", [8, 32 + 64 + 20, 32 + 64 + 40 + 500])
def test_truncated_claim(env: Env, cut):
    full = E.claim_body(env.voucher(TON))
    body = begin_cell().store_bits(full.begin_parse().load_bits(cut)).end_cell()
    with Unchanged(env):
        txs = env.esc.send(env.stranger, body, E.CLAIM_FEE + E.MARGIN)
    mine = env.mine(txs)[0]
    assert not mine.success and mine.exit_code == 9     # cell underflow in both languages


@pytest.mark.parametrize("state", ["new", "open", "closed"])
def test_truncated_bodies_are_a_cell_underflow_in_every_state(env: Env, state):
    """escrow.tlb: a body is read before any check, so a cut query id or field is a cell underflow
    (9) whatever the channel's state and whoever sends it, never the error a check would give (the
    Tolk build once checked the state and the sender first and answered 400, 401 or 101)."""
    if state == "new":   # deployed in its initial form, never opened
        env.chain.restore(env.fresh)
        env.payer.send(env.esc.address, E.STORAGE_RESERVE, None, state_init=env.esc.state_init, bounce=False)
    elif state == "closed":
        _close(env)
    sig = bytes(64)
    params = (begin_cell().store_uint(R.OP["params_response"], 32).store_uint(0, 64).store_uint(1, 32)
              .store_ref(env.params.to_cell()).end_cell())
    bodies = [E.open_body(TON, K.public_key_int(env.payee_key)), E.top_up_body(TON), E.claim_body(env.voucher(TON)),
              E.request_close_body(), E.request_withdraw_body(TON), E.finish_body(),
              E.coop_close_body(TON, sig, sig), params]
    for sender in (env.payer, env.stranger):
        for full in bodies:
            bits = full.bits.to01()
            for cut in sorted({40, len(bits) - 1}):
                body = begin_cell().store_bits(bits[:cut]).end_cell()
                with Unchanged(env, sender=sender):
                    txs = env.esc.send(sender, body, TON)
                mine = env.mine(txs)[0]
                assert not mine.success and mine.exit_code == 9, (sender.name, hex(full.begin_parse().load_uint(32)),
                                                                  cut, mine.exit_code)


def test_unknown_op(env: Env):
    with Unchanged(env):
        txs = env.esc.send(env.stranger, begin_cell().store_uint(0xDEADBEEF, 32).store_uint(0, 64).end_cell(), TON)
    env.expect_error(txs, Err.UNKNOWN_OP)
    assert has_transaction(txs, from_=env.esc.address, to=env.stranger.address, bounced=True)


# ==================================================================================== close and withdraw
def _close(env: Env):
    env.ok(env.esc.request_close(env.payer))
    env.chain.advance(DELAY)
    env.ok(env.esc.finish(env.stranger))
    assert env.ch.state == State.CLOSED


def test_close_takes_the_delay_and_returns_the_rest(env: Env):
    env.ok(env.esc.claim(env.stranger, env.voucher(4 * TON)))
    txs = env.esc.request_close(env.payer)
    env.ok(txs)
    ch = env.ch
    assert ch.state == State.CLOSING and ch.close_at == env.chain.now + DELAY
    env.chain.advance(DELAY - 1)
    with Unchanged(env):
        txs = env.esc.finish(env.stranger)
    env.expect_error(txs, Err.TOO_EARLY)
    env.chain.advance(1)
    txs = env.esc.finish(env.stranger)      # anyone finishes
    env.ok(txs)
    assert [(p.op, p.amount, v) for p, v in payments(txs, env, to=env.payer)] == [("refund", 6 * TON, 6 * TON)]
    ch = env.ch
    assert (ch.state, ch.withdrawn, ch.claimed, ch.held, ch.close_at) == (State.CLOSED, 6 * TON, 4 * TON, 0, env.chain.now)
    assert env.esc.balance == E.STORAGE_RESERVE
    # closed is final
    for txs, code in ((env.esc.claim(env.stranger, env.voucher(8 * TON)), Err.CLOSED),
                      (env.esc.top_up(env.payer, TON), Err.CLOSED),
                      (env.esc.request_close(env.payer), Err.CLOSED),
                      (env.esc.request_withdraw(env.payer, TON), Err.CLOSED),
                      (env.esc.finish(env.stranger), Err.CLOSED),
                      (env.esc.open(env.payer, 2 * TON, 0), Err.CLOSED)):
        env.expect_error(txs, code)


def test_claim_racing_a_close(env: Env):
    """The payee's claim lands during the notice period and is honoured; the payer gets the rest."""
    v = env.voucher(7 * TON)
    env.ok(env.esc.request_close(env.payer))
    env.chain.advance(DELAY // 2)
    txs = env.esc.claim(env.payee, v)
    assert [p.amount for p, _ in payments(txs, env)] == [7 * TON]
    env.chain.advance(DELAY // 2)
    txs = env.esc.finish(env.payer)         # the payer's own finish: one refund message with its excess
    refunds = payments(txs, env, to=env.payer)
    assert len(refunds) == 1 and refunds[0][0].amount == 3 * TON and refunds[0][1] > 3 * TON
    assert env.ch.claimed == 7 * TON and env.ch.withdrawn == 3 * TON


def test_claim_after_the_notice_until_someone_finishes(env: Env):
    env.ok(env.esc.request_close(env.payer))
    env.chain.advance(2 * DELAY)
    env.ok(env.esc.claim(env.stranger, env.voucher(TON)))
    assert env.ch.claimed == TON
    env.ok(env.esc.finish(env.stranger))
    with Unchanged(env):
        txs = env.esc.claim(env.stranger, env.voucher(2 * TON))
    env.expect_error(txs, Err.CLOSED)


@pytest.mark.parametrize("op", ["request_close", "request_withdraw"])
def test_only_the_payer_requests(env: Env, op):
    for w in (env.payee, env.stranger):
        with Unchanged(env, sender=w):
            txs = env.esc.request_close(w) if op == "request_close" else env.esc.request_withdraw(w, TON)
        env.expect_error(txs, Err.NOT_OWNER)


def test_finish_without_a_request(env: Env):
    with Unchanged(env):
        txs = env.esc.finish(env.stranger)
    env.expect_error(txs, Err.NOTHING_TO_FINISH)


def test_close_twice_and_low_values(env: Env):
    with Unchanged(env, sender=env.payer):
        txs = env.esc.request_close(env.payer, value=E.REQUEST_FEE - 1)
    env.expect_error(txs, Err.LOW_VALUE)
    env.ok(env.esc.request_close(env.payer))
    with Unchanged(env, sender=env.payer):
        txs = env.esc.request_close(env.payer)
    env.expect_error(txs, Err.REQUEST_PENDING)
    env.chain.advance(DELAY)
    with Unchanged(env):
        txs = env.esc.finish(env.stranger, value=E.FINISH_FEE - 1)
    env.expect_error(txs, Err.LOW_VALUE)


def test_withdrawal_while_vouchers_are_outstanding(env: Env):
    v = env.voucher(6 * TON)                # the payee holds it, unclaimed
    env.ok(env.esc.request_withdraw(env.payer, 8 * TON))
    ch = env.ch
    assert ch.state == State.OPEN and ch.pending == 8 * TON and ch.close_at == env.chain.now + DELAY
    ex = CP.exposure(v.amount, ch)
    assert ex.unclaimed == 6 * TON and ex.at_risk == 4 * TON and ex.notice_ends == ch.close_at
    assert CP.should_claim(v.amount, ch, claim_fee=5_000_000, now=ch.close_at - 60)
    env.chain.advance(DELAY - 10)
    env.ok(env.esc.claim(env.stranger, v))  # during the notice: honoured
    env.chain.advance(10)
    txs = env.esc.finish(env.stranger)
    # the payer gets what is still held, at most the request
    assert [p.amount for p, _ in payments(txs, env, to=env.payer)] == [4 * TON]
    ch = env.ch
    assert (ch.state, ch.claimed, ch.withdrawn, ch.pending, ch.close_at, ch.held) == (State.OPEN, 6 * TON, 4 * TON, 0, 0, 0)


def test_partial_withdrawal_keeps_the_channel_open(env: Env):
    env.ok(env.esc.request_withdraw(env.payer, 3 * TON))
    env.chain.advance(DELAY)
    txs = env.esc.finish(env.payer)
    assert [p.amount for p, _ in payments(txs, env, to=env.payer)] == [3 * TON]
    assert env.ch.state == State.OPEN and env.ch.held == 7 * TON
    env.ok(env.esc.claim(env.stranger, env.voucher(7 * TON)))
    assert env.ch.held == 0


@pytest.mark.parametrize("case", ["zero", "too_high", "pending", "closing"])
def test_bad_withdrawals(env: Env, case):
    amount, code = TON, Err.REQUEST_PENDING
    if case == "zero":
        amount, code = 0, Err.MALFORMED
    elif case == "too_high":
        amount, code = DEPOSIT + 1, Err.AMOUNT_TOO_HIGH
    elif case == "pending":
        env.ok(env.esc.request_withdraw(env.payer, TON))
    else:
        env.ok(env.esc.request_close(env.payer))
    with Unchanged(env, sender=env.payer):
        txs = env.esc.request_withdraw(env.payer, amount)
    env.expect_error(txs, code)


def test_close_replaces_a_pending_withdrawal_and_restarts_the_notice(env: Env):
    env.ok(env.esc.request_withdraw(env.payer, TON))
    env.chain.advance(DELAY - 5)
    env.ok(env.esc.request_close(env.payer))
    ch = env.ch
    assert ch.state == State.CLOSING and ch.pending == 0 and ch.close_at == env.chain.now + DELAY
    env.chain.advance(5)
    env.expect_error(env.esc.finish(env.stranger), Err.TOO_EARLY)


# ==================================================================================== cooperative close
def _coop(env: Env, amount: int, payer_key=None, payee_key=None, channel=None, sender=None):
    ch = channel or env.esc.address
    ps = V.sign_coop_close(payer_key or env.payer_key, ch, amount)
    qs = V.sign_coop_close(payee_key or env.payee_key, ch, amount)
    return env.esc.coop_close(sender or env.stranger, amount, ps, qs)


def test_cooperative_close_settles_at_once(env: Env):
    env.ok(env.esc.claim(env.stranger, env.voucher(2 * TON)))
    txs = _coop(env, 5 * TON)
    env.ok(txs)
    assert [p.amount for p, _ in payments(txs, env, to=env.payee)] == [3 * TON]
    assert [p.amount for p, _ in payments(txs, env, to=env.payer)] == [5 * TON]
    ch = env.ch
    assert (ch.state, ch.claimed, ch.withdrawn, ch.held, ch.close_at) == (State.CLOSED, 5 * TON, 5 * TON, 0, env.chain.now)
    assert env.esc.balance == E.STORAGE_RESERVE
    # replaying the same statement changes nothing
    with Unchanged(env):
        txs = _coop(env, 5 * TON)
    env.expect_error(txs, Err.CLOSED)


def test_cooperative_close_below_what_was_claimed(env: Env):
    env.ok(env.esc.claim(env.stranger, env.voucher(4 * TON)))
    txs = _coop(env, TON, sender=env.payer)
    assert payments(txs, env, to=env.payee) == []
    assert [p.amount for p, _ in payments(txs, env, to=env.payer)] == [6 * TON]
    assert env.ch.claimed == 4 * TON


@pytest.mark.parametrize("bad", ["payer", "payee", "channel", "voucher"])
def test_cooperative_close_with_one_bad_signature(env: Env, bad):
    amount = 5 * TON
    ps = V.sign_coop_close(env.payer_key, env.esc.address, amount)
    qs = V.sign_coop_close(env.payee_key, env.esc.address, amount)
    code = Err.BAD_SIGNATURE
    if bad == "payer":
        ps = V.sign_coop_close(env.stranger_key, env.esc.address, amount)
    elif bad == "payee":
        qs, code = V.sign_coop_close(env.stranger_key, env.esc.address, amount), Err.BAD_PAYEE_SIGNATURE
    elif bad == "channel":
        other = env.channel(key(7)).address
        ps = V.sign_coop_close(env.payer_key, other, amount)
    else:
        ps = env.voucher(amount).signature       # the payer's voucher signature is not a close
    with Unchanged(env):
        txs = env.esc.coop_close(env.stranger, amount, ps, qs)
    env.expect_error(txs, code)
    assert env.ch.state == State.OPEN


@pytest.mark.parametrize("tail_bits,tail_ref", [(1, False), (7, False), (0, True), (200, True)])
def test_cooperative_close_ignores_data_after_the_payee_signature(env: Env, tail_bits, tail_ref):
    # escrow.tlb: bits or references after the last field are ignored, in the signature cell too
    ps = V.sign_coop_close(env.payer_key, env.esc.address, 5 * TON)
    qs = V.sign_coop_close(env.payee_key, env.esc.address, 5 * TON)
    body = E.coop_close_body(5 * TON, ps, qs, payee_tail_bits=tail_bits, payee_tail_ref=tail_ref)
    txs = env.esc.send(env.stranger, body, E.COOP_CLOSE_FEE + E.MARGIN)
    env.ok(txs)
    assert [p.amount for p, _ in payments(txs, env, to=env.payee)] == [5 * TON]
    assert env.ch.state == State.CLOSED


def test_cooperative_close_during_a_notice(env: Env):
    env.ok(env.esc.request_close(env.payer))
    env.ok(_coop(env, 6 * TON))
    assert env.ch.state == State.CLOSED and env.ch.claimed == 6 * TON and env.ch.withdrawn == 4 * TON


# ==================================================================================== bounced payments
REFUSE_UNTIL = 1_767_230_000


def _refusing_payee(env: Env):
    """A payee contract that refuses every message with a body until REFUSE_UNTIL (a payee that
    cannot accept payments for a while), then accepts them."""
    from tonpy.fift.fift import convert_assembler
    import base64
    code_t = convert_assembler(f"<{{ DROP SBITS 0 GTINT NOW {REFUSE_UNTIL} PUSHINT LESS AND 50 THROWIF }}>c")
    code = Cell.one_from_boc(base64.b64decode(code_t.to_boc()))
    from pytoniq_core.tlb.account import StateInit
    si = StateInit(code=code, data=Cell.empty())
    addr = Address((0, si.serialize().hash))
    env.stranger.send(addr, TON, None, state_init=si, bounce=False)
    assert env.chain.state(addr)[0] == "active"
    return addr


def test_bounced_payment_stays_claimable(env: Env):
    assert env.chain.now < REFUSE_UNTIL
    payee = _refusing_payee(env)

    class W:  # the refusing contract as a party of the channel
        address = payee
    esc = env.channel(env.payer_key, payee=W)
    env.ok(esc.open(env.payer, 5 * TON, 0), esc)
    v = env.voucher(3 * TON, esc=esc)
    txs = esc.claim(env.stranger, v)
    bounce = [t for t in txs if t.account.hash_part == esc.address.hash_part and t.bounced]
    assert bounce and bounce[0].success
    ch = esc.read.channel()
    # claimed moved forward (it never decreases), the undelivered value is owed to the payee
    assert ch.claimed == 3 * TON and 3 * TON - 5_000_000 < ch.owed < 3 * TON
    assert env.chain.balance(payee) == pytest.approx(TON, abs=10_000_000)
    # the payer's close does not take what is owed
    env.ok(esc.request_close(env.payer), esc)
    env.chain.advance(DELAY)
    txs = esc.finish(env.stranger)
    assert [p.amount for p in (E.parse_payout(t.in_msg.body) for t in txs if t.op == E.OP["refund"])] == [2 * TON]
    assert esc.read.channel().owed == ch.owed and esc.read.channel().state == State.CLOSED
    # once the payee accepts, a claim (even with the same voucher, even when closed) delivers it
    env.chain.advance(max(0, REFUSE_UNTIL - env.chain.now))
    before = env.chain.balance(payee)
    txs = esc.claim(env.stranger, v)
    paid = [E.parse_payout(t.in_msg.body) for t in txs if t.op == E.OP["payment"] and not t.bounced]
    assert [p.amount for p in paid] == [ch.owed]
    assert env.chain.balance(payee) > before + ch.owed - 5_000_000
    assert esc.read.channel().owed == 0 and esc.balance == pytest.approx(E.STORAGE_RESERVE, abs=2_000_000)
    with Unchanged(env, esc=esc):
        txs = esc.claim(env.stranger, v)
    env.expect_error(txs, Err.CLOSED, esc)


def test_forged_bounce_changes_nothing(env: Env):
    body = begin_cell().store_uint(0xFFFFFFFF, 32).store_uint(E.OP["payment"], 32).store_uint(0, 64).store_coins(TON).end_cell()
    data = env.esc.data_hash
    txs = env.from_address(env.stranger.address, body, value=TON, bounced=True)
    assert env.mine(txs)[0].success and env.esc.data_hash == data and env.ch.owed == 0


def test_storage_fees_eating_the_balance(env: Env):
    """Two idle years: storage fees take the reserve and part of what the escrow holds. The next
    caller pays that deficit on top of its fee (102 otherwise); the payee is paid in full and the
    reserve is back."""
    env.chain.advance(2 * 365 * 86400)
    with Unchanged(env):                                      # (the storage phase charges the rent)
        txs = env.esc.claim(env.stranger, env.voucher(4 * TON), value=E.CLAIM_FEE + E.MARGIN)
    env.expect_error(txs, Err.LOW_VALUE)
    deficit = E.storage_deficit(env.esc.balance, env.ch)
    assert deficit > E.STORAGE_RESERVE                        # below what it holds
    txs = env.esc.claim(env.stranger, env.voucher(4 * TON), value=E.CLAIM_FEE + deficit + E.MARGIN)
    assert [(p.amount, v) for p, v in payments(txs, env, to=env.payee)] == [(4 * TON, 4 * TON)]
    assert env.esc.balance == DEPOSIT - 4 * TON + E.STORAGE_RESERVE
    assert E.storage_deficit(env.esc.balance, env.ch) == 0


# ==================================================================================== getters and bookkeeping
def test_getters_of_an_unopened_escrow(env: Env):
    env.chain.restore(env.fresh)
    env.payer.send(env.esc.address, E.STORAGE_RESERVE, None, state_init=env.esc.state_init, bounce=False)
    assert env.esc.read.channel() == E.Channel(State.NEW, 0, 0, 0, 0, 0, 0)
    assert env.esc.read.parties() == (env.reg.address, env.payer.address, env.payee.address)
    assert env.esc.read.keys() == (K.public_key_int(env.payer_key), 0)
    assert env.esc.read.config() == (0, 0)


def test_voucher_bookkeeping(env: Env):
    """The payer signs cumulative vouchers and the payee keeps the latest valid one; what the
    payee keeps is exactly what the contract pays."""
    signer = V.VoucherSigner(env.esc.address, env.payer_key)
    tracker = V.VoucherTracker(env.esc.address, K.public_key_int(env.payer_key))
    assert tracker.accept(signer.pay(TON)) and tracker.accept(signer.pay(2 * TON))
    old = V.Voucher.sign(env.payer_key, env.esc.address, TON)
    assert not tracker.accept(old) and tracker.authorized == 3 * TON
    with pytest.raises(ValueError):
        signer.authorize(2 * TON)
    with pytest.raises(ValueError):
        tracker.accept(V.Voucher.sign(env.stranger_key, env.esc.address, 9 * TON))
    with pytest.raises(ValueError):
        tracker.accept(V.Voucher.sign(env.payer_key, env.payer.address, 9 * TON))
    v = V.Voucher.from_json(tracker.latest.to_json())
    assert v == tracker.latest
    assert CP.claim_worth(v.amount, env.ch, 5_000_000) == 3 * TON - 5_000_000
    env.ok(env.esc.claim(env.stranger, v))
    assert env.ch.claimed == tracker.authorized
    ex = CP.exposure(tracker.authorized, env.ch)
    assert (ex.unclaimed, ex.covered, ex.uncovered) == (0, 0, 0)
    ex = CP.exposure(13 * TON, env.ch)
    assert (ex.unclaimed, ex.covered, ex.uncovered, ex.at_risk) == (10 * TON, 7 * TON, 3 * TON, 0)
    assert not CP.should_claim(3 * TON + 1_000, env.ch, claim_fee=5_000_000, now=env.chain.now)


# ==================================================================================== money invariants
OPS = st.one_of(
    st.tuples(st.just("top_up"), st.integers(1, 5 * TON)),
    st.tuples(st.just("claim"), st.integers(0, 20 * TON)),
    st.tuples(st.just("payee_claim"), st.integers(0, 20 * TON)),
    st.tuples(st.just("withdraw"), st.integers(1, 12 * TON)),
    st.tuples(st.just("close"), st.just(0)),
    st.tuples(st.just("finish"), st.just(0)),
    st.tuples(st.just("wait"), st.integers(1, 2 * DELAY)),
    st.tuples(st.just("coop"), st.integers(0, 20 * TON)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=3, max_size=14))
def test_money_invariants(env: Env, ops):
    """paid to the payee + returned to the payer + held = deposited; claimed never decreases; the
    escrow's balance always covers what it holds; no value appears or vanishes on the chain."""
    env.chain.restore(env.opened)
    leak0 = env.chain.money_leak()
    signer = V.VoucherSigner(env.esc.address, env.payer_key)
    paid = refunded = 0
    last_claimed = 0
    for op, x in ops:
        if op == "top_up":
            txs = env.esc.top_up(env.stranger, x)
        elif op in ("claim", "payee_claim"):
            v = signer.authorize(max(signer.total, x))
            txs = env.esc.claim(env.stranger if op == "claim" else env.payee, v)
        elif op == "withdraw":
            txs = env.esc.request_withdraw(env.payer, x)
        elif op == "close":
            txs = env.esc.request_close(env.payer)
        elif op == "finish":
            txs = env.esc.finish(env.stranger)
        elif op == "coop":
            txs = _coop(env, x)
        else:
            env.chain.advance(x)
            continue
        for p, value in payments(txs, env):
            if p.op == "payment":
                paid += p.amount
                assert value >= p.amount
            elif p.op == "refund":
                refunded += p.amount
                assert value >= p.amount
        new = env.ch
        assert new.claimed >= last_claimed, "claimed decreased"
        last_claimed = new.claimed
        assert paid + refunded + new.held + new.owed == new.deposited, (op, x, new)
        assert new.claimed + new.withdrawn <= new.deposited
        # the escrow keeps exactly what it owes plus its reserve (storage rent of the last hours aside)
        owes = new.held + new.owed + E.STORAGE_RESERVE
        assert owes - 1_000_000 <= env.esc.balance <= owes, (op, x, env.esc.balance - owes)
    assert env.chain.money_leak() == leak0


def _env(lang: str) -> Env:
    if lang not in _BASE:
        _BASE[lang] = Env(lang)
    return _BASE[lang]


def _apply(env: Env, op: str, x: int, signer: V.VoucherSigner):
    if op == "top_up":
        return env.esc.top_up(env.stranger, x)
    if op in ("claim", "payee_claim"):
        return env.esc.claim(env.stranger if op == "claim" else env.payee, signer.authorize(max(signer.total, x)))
    if op == "withdraw":
        return env.esc.request_withdraw(env.payer, x)
    if op == "close":
        return env.esc.request_close(env.payer)
    if op == "finish":
        return env.esc.finish(env.stranger)
    if op == "coop":
        return _coop(env, x)
    env.chain.advance(x)
    return []


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=3, max_size=14))
def test_builds_agree(lang, ops):
    """Differential: this build and the other one, fed the same operations, succeed or fail with the
    same exit code, pay the same amounts to the same parties and end in the same channel state."""
    other = "tolk" if lang == "func" else "func"
    envs = [_env(lang), _env(other)]
    signers = []
    for e in envs:
        e.chain.restore(e.opened)
        signers.append(V.VoucherSigner(e.esc.address, e.payer_key))
    for op, x in ops:
        seen = []
        for e, signer in zip(envs, signers):
            txs = _apply(e, op, x, signer)
            mine = [t for t in e.mine(txs) if not t.bounced]
            outcome = (mine[0].success, mine[0].exit_code) if mine else None
            paid = sorted((p.op, p.amount, "payee" if t_to == e.payee.address else "payer")
                          for (p, _), t_to in _payouts_to(txs, e))
            seen.append((outcome, paid, e.ch))
        assert seen[0] == seen[1], (op, x, seen)


def _payouts_to(txs, env: Env):
    out = []
    for t in txs:
        if t.src is not None and t.src.hash_part == env.esc.address.hash_part and not t.bounced:
            p = E.parse_payout(t.in_msg.body)
            if p is not None:
                out.append(((p, t.value), t.account))
    return out


# ==================================================================================== the CLI
class Cli:
    """``cocoon`` driven in-process on an embedded chain kept in a temporary state file."""

    def __init__(self, tmp_path):
        import hashlib
        from click.testing import CliRunner
        from node.cli import main

        self.main, self.runner, self.dir = main, CliRunner(), tmp_path
        self.state = str(tmp_path / "chain.json")
        self.keys, self.seeds = {}, {}
        for name in ("owner", "payer", "payee", "stranger", "voucher2", "voucher3"):
            seed = hashlib.sha256(b"escrow-cli-test:" + name.encode()).digest()
            p = tmp_path / f"{name}.key"
            p.write_text(seed.hex())
            self.keys[name], self.seeds[name] = str(p), seed

    def __call__(self, *args: str, key: str | None = None, ok: bool = True) -> str:
        argv = list(args) + ["--state-file", self.state] + (["--key-file", self.keys[key]] if key else [])
        r = self.runner.invoke(self.main, argv)
        out = r.output
        assert "Traceback" not in out, out
        assert r.exception is None or isinstance(r.exception, SystemExit), out
        assert (r.exit_code == 0) == ok, f"{argv}: exit {r.exit_code}\n{out}"
        if not ok:
            errors = [line for line in out.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1, out   # one clear line saying what went wrong
        return out

    def wallet(self, name: str) -> Address:
        """The address of the wallet the CLI uses for a key (pytoniq's v4r2)."""
        import asyncio
        from pytoniq import WalletV4R2
        from wrappers.chain.provider import EmbeddedProvider
        from node.cli.context import load_keys
        keys = load_keys(None, self.keys[name])
        return asyncio.run(WalletV4R2.from_private_key(EmbeddedProvider(EmbeddedChain()), keys.private, version="v4r2")).address

    def pub(self, name: str) -> str:
        return f"{K.public_key_int(self.seeds[name]):064x}"


def _line(out: str, prefix: str) -> str:
    return next(l for l in out.splitlines() if l.startswith(prefix))[len(prefix):].strip().split()[0]


def test_cli_end_to_end(lang, tmp_path):
    cli = Cli(tmp_path)
    cli("registry", "deploy", "--lang", lang, key="owner")
    payee = cli.wallet("payee").to_str()
    # an amount below the registry's minimum is refused before anything is sent
    out = cli("escrow", "open", payee, "0.5", "--payee-key", cli.pub("payee"), key="payer", ok=False)
    assert "minimum deposit is 1 TON" in out
    out = cli("escrow", "open", payee, "5", key="payer", ok=False)
    assert "--payee-key" in out                                   # the payee is no registered proxy
    out = cli("escrow", "open", payee, "5", "--payee-key", cli.pub("payee"), key="payer")
    channel = _line(out, "channel:")
    assert "open with 5 TON; close delay 3600 s" in out
    out = cli("escrow", "status", channel)
    assert _line(out, "state") == "open" and _line(out, "deposited") == "5" and cli.pub("payee") in out
    cli("escrow", "open", payee, "5", "--payee-key", cli.pub("payee"), key="payer", ok=False)   # already open
    out = cli("escrow", "top-up", channel, "1.5", key="stranger")
    assert "deposited in total 6.5 TON" in out
    # the payer signs a voucher; the payee claims with it
    vfile = str(tmp_path / "v2.json")
    cli("escrow", "voucher", channel, "2", "-o", vfile, key="payer")
    out = cli("escrow", "status", channel, "--voucher", vfile)
    assert _line(out, "claimable") == "2" and "signature valid" in out
    out = cli("escrow", "claim", channel, vfile, key="payee")
    assert "paid 2 TON" in out
    out = cli("escrow", "claim", channel, vfile, key="payee", ok=False)
    assert "already claimed" in out
    out = cli("escrow", "voucher", channel, "2", key="payer", ok=False)            # not above what was claimed
    out = cli("escrow", "voucher", channel, "3", key="stranger", ok=False)         # not the payer key
    assert "payer key" in out
    forged = V.Voucher.sign(cli.seeds["stranger"], Address(channel), 4 * TON).to_json()
    out = cli("escrow", "claim", channel, forged, key="payee", ok=False)
    assert "not signed by this channel's payer key" in out
    cli("escrow", "claim", channel, "{not json", key="payee", ok=False)
    # a partial withdrawal waits for the notice
    out = cli("escrow", "withdraw", channel, "1", key="stranger", ok=False)
    assert "only the channel's payer" in out
    cli("escrow", "withdraw", channel, "100", key="payer", ok=False)
    out = cli("escrow", "withdraw", channel, "1", key="payer")
    assert "withdrawal of 1 TON requested" in out
    out = cli("escrow", "finish", channel, key="stranger", ok=False)
    assert "advance-time" in out
    cli("registry", "advance-time", "3600")
    out = cli("escrow", "finish", channel, key="stranger")
    assert "returned 1 TON to the payer" in out and "the channel is open" in out
    # close: the payee's claim during the notice is honoured, the rest goes back
    out = cli("escrow", "close", channel, key="payer")
    assert "anyone can finish after" in out
    cli("escrow", "voucher", channel, "3", "-o", vfile, key="payer")
    assert "paid 1 TON" in cli("escrow", "claim", channel, vfile, key="stranger")
    cli("registry", "advance-time", "3600")
    out = cli("escrow", "finish", channel, key="payee")
    assert "returned 2.5 TON to the payer" in out and "the channel is closed" in out
    out = cli("escrow", "status", channel)
    assert _line(out, "state") == "closed" and _line(out, "claimed") == "3" and _line(out, "withdrawn") == "3.5"
    cli("escrow", "top-up", channel, "1", key="stranger", ok=False)
    cli("escrow", "open", payee, "5", "--payee-key", cli.pub("payee"), key="payer", ok=False)  # closed for good
    # a new channel (another voucher key), closed cooperatively
    out = cli("escrow", "open", payee, "2", "--payee-key", cli.pub("payee"), "--voucher-key-file",
              cli.keys["voucher2"], key="payer")
    channel2 = _line(out, "channel:")
    assert channel2 != channel
    out = cli("escrow", "sign-close", channel2, "0.5", key="stranger", ok=False)    # not the payee key
    assert "payee key" in out
    sig = cli("escrow", "sign-close", channel2, "0.5", key="payee").strip().splitlines()[-1]
    out = cli("escrow", "close", channel2, "--cooperative", "0.5", "--payee-signature", sig, key="payer",
              ok=False)                                                            # not the channel's voucher key
    assert "payer key" in out
    out = cli("escrow", "close", channel2, "--cooperative", "0.6", "--payee-signature", sig,
              "--voucher-key-file", cli.keys["voucher2"], key="payer", ok=False)
    assert "not valid for a close at 0.6 TON" in out
    out = cli("escrow", "close", channel2, "--cooperative", "0.5", "--payee-signature", sig,
              "--voucher-key-file", cli.keys["voucher2"], key="payer")
    assert "payee: 0.5 TON" in out and "you: 1.5 TON" in out
    assert _line(cli("escrow", "status", channel2), "state") == "closed"
    cli("escrow", "status", "not-an-address", ok=False)
    # a payee that is a registered proxy: its operator key is the default payee key
    _register_proxy(cli, cli.wallet("payee"), operator_key=0xC0FFEE)
    out = cli("escrow", "open", payee, "1", "--voucher-key-file", cli.keys["voucher3"], key="payer")
    assert f"payee key {0xC0FFEE:064x}" in out


def _register_proxy(cli: Cli, owner: Address, operator_key: int) -> None:
    """Register ``owner`` as a proxy in the CLI's registry the way its stake contract would (the
    message is forged on the embedded chain kept in the state file)."""
    from pathlib import Path
    chain = EmbeddedChain.load(cli.state)
    reg = Address((Path(cli.state).parent / "registry.txt").read_text().strip())
    stake_code = R.RegistryReader(chain.get_method, reg).child_codes().stake
    src = R.child_address(stake_code, reg, R.stake_identity(owner, R.ROLE_PROXY))
    txs = chain.send(chain.internal(src, reg, TON, R.register_proxy(owner, operator_key, 100 * TON, True, "p:1")))
    assert txs[0].success, txs[0].describe()
    chain.save(cli.state)

"""The embedded chain itself: messages, bounces, time, snapshots, get-methods and pytoniq wallets."""
from __future__ import annotations

import asyncio

import pytest
from pytoniq import WalletV4R2, WalletV5R1
from pytoniq_core import Address, begin_cell
from pytoniq_core.crypto.keys import mnemonic_new
from pytoniq_core.tlb.account import StateInit

from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider
from wrappers.chain.records import fee_table, find_transactions, has_transaction, tx_tree

# A counter: op 1 adds the query's number to the stored sum, op 2 throws 77, anything else 0xffff.
# get-method `sum` returns the stored sum, `now_plus(x)` returns now() + x.
COUNTER = """
int now() asm "NOW";
cell get_data() asm "c4 PUSH";
() set_data(cell c) impure asm "c4 POP";
slice begin_parse(cell c) asm "CTOS";
builder begin_cell() asm "NEWC";
cell end_cell(builder b) asm "ENDC";
int slice_bits(slice s) asm "SBITS";
() recv_internal(int balance, int value, cell in_msg, slice body) impure {
  if (body.slice_bits() < 32) { return (); }
  int op = body~load_uint(32);
  if (op == 1) {
    int sum = get_data().begin_parse().preload_uint(64);
    set_data(begin_cell().store_uint(sum + body~load_uint(32), 64).end_cell());
    return ();
  }
  throw_if(77, op == 2);
  throw(0xffff);
}
int sum() method_id { return get_data().begin_parse().preload_uint(64); }
int now_plus(int x) method_id { return now() + x; }
"""


@pytest.fixture(scope="module")
def counter_code():
    import base64
    from pytoniq_core import Cell
    from tonpy.fift.fift import convert_assembler
    from tonpy.libs.python_ton import func_string_to_asm
    return Cell.one_from_boc(base64.b64decode(convert_assembler(func_string_to_asm(COUNTER)).to_boc()))


def deploy_counter(chain, wallet, code):
    si = StateInit(code=code, data=begin_cell().store_uint(0, 64).end_cell())
    addr = Address((0, si.serialize().hash))
    txs = wallet.send(addr, 10**9, None, state_init=si, bounce=False)
    return addr, txs


def body(op, n=0):
    return begin_cell().store_uint(op, 32).store_uint(n, 32).end_cell()


def test_treasury_is_a_funded_wallet():
    c = EmbeddedChain()
    t = c.treasury("alice")
    assert c.state(t.address)[0] == "active"
    assert 999_999 * 10**9 < t.balance < 1_000_000 * 10**9
    assert c.treasury("alice") is t and c.treasury("bob").address != t.address


def test_deploy_message_and_getter(counter_code):
    c = EmbeddedChain()
    w = c.treasury("alice")
    addr, txs = deploy_counter(c, w, counter_code)
    assert has_transaction(txs, from_=w.address, to=addr, deploy=True, success=True)
    assert not has_transaction(txs, to=addr, deploy=False)
    txs = w.send(addr, 10**8, body(1, 5))
    txs += w.send(addr, 10**8, body(1, 7))
    assert c.get_method(addr, "sum") == [12]
    assert has_transaction(txs, to=addr, op=1, success=True, value=10**8)
    assert not has_transaction(txs, to=addr, op=1, success=False)


def test_failed_message_bounces_with_value_back(counter_code):
    c = EmbeddedChain()
    w = c.treasury("alice")
    addr, _ = deploy_counter(c, w, counter_code)
    before = w.balance
    txs = w.send(addr, 5 * 10**9, body(2))
    t = find_transactions(txs, to=addr)[0]
    assert t.exit_code == 77 and not t.success and t.aborted
    assert has_transaction(txs, from_=addr, to=w.address, bounced=True, op=2)
    # only fees were lost, not the 5 TON
    assert before - w.balance < 10**8
    assert c.get_method(addr, "sum") == [0]


def test_non_bounceable_to_missing_account_stays_there():
    c = EmbeddedChain()
    w = c.treasury("alice")
    nowhere = Address("0:" + "ab" * 32)
    txs = w.send(nowhere, 10**9, bounce=False)
    assert c.state(nowhere)[0] == "uninit" and c.balance(nowhere) == 10**9
    txs = w.send(Address("0:" + "cd" * 32), 10**9, bounce=True)
    assert has_transaction(txs, to=w.address, bounced=True)


def test_time_travel(counter_code):
    c = EmbeddedChain()
    w = c.treasury("alice")
    addr, _ = deploy_counter(c, w, counter_code)
    t0 = c.now
    assert c.get_method(addr, "now_plus", [5]) == [t0 + 5]
    c.advance(86400)
    assert c.get_method(addr, "now_plus", [0]) == [t0 + 86400]
    txs = w.send(addr, 10**8, body(1, 1))
    assert txs[-1].now == t0 + 86400
    with pytest.raises(ValueError):
        c.advance(-1)


def test_storage_fees_accrue_over_time(counter_code):
    c = EmbeddedChain()
    w = c.treasury("alice")
    addr, _ = deploy_counter(c, w, counter_code)
    c.advance(365 * 86400)
    txs = w.send(addr, 10**8, body(1, 1))
    assert find_transactions(txs, to=addr)[0].storage_fees > 0


def test_snapshot_and_restore(counter_code):
    c = EmbeddedChain()
    w = c.treasury("alice")
    addr, _ = deploy_counter(c, w, counter_code)
    snap = c.snapshot()
    bal = w.balance
    w.send(addr, 10**8, body(1, 3))
    c.advance(100)
    assert c.get_method(addr, "sum") == [3]
    c.restore(snap)
    assert c.get_method(addr, "sum") == [0] and w.balance == bal and c.now == snap.now
    # the treasury keeps working after a restore (its seqno is re-read)
    w.send(addr, 10**8, body(1, 4))
    assert c.get_method(addr, "sum") == [4]


def test_restoring_an_older_then_a_newer_snapshot_restores_each_exactly(counter_code):
    # restore an earlier snapshot, run something else, restore a later one: the later snapshot's
    # transactions (and so the fees and the money invariant) come back, not the ones run in between
    c = EmbeddedChain()
    w = c.treasury("alice")
    addr, _ = deploy_counter(c, w, counter_code)
    early = c.snapshot()
    w.send(addr, 10**8, body(1, 3))
    late = c.snapshot()
    late_txs, late_fees = list(c.transactions), c.fees_collected()
    assert c.money_leak() == 0
    c.restore(early)
    w.send(addr, 5 * 10**8, body(1, 5))
    w.send(addr, 10**8, body(1, 1))
    c.restore(late)
    assert c.transactions == late_txs and c.fees_collected() == late_fees
    assert c.get_method(addr, "sum") == [3]
    assert c.money_leak() == 0


def test_external_message_not_accepted_changes_nothing():
    c = EmbeddedChain()
    w = c.treasury("alice")
    bal = w.balance
    txs = c.send(c.external(w.address, begin_cell().store_uint(0, 64).end_cell()))
    assert txs[0].rejected and not txs[0].success and w.balance == bal


def test_fee_table_and_tree(counter_code):
    c = EmbeddedChain()
    w = c.treasury("alice")
    addr, txs = deploy_counter(c, w, counter_code)
    txs += w.send(addr, 10**8, body(2))
    table = fee_table(txs)
    assert "gas fee" in table.splitlines()[0] and len(table.splitlines()) == len(txs) + 1
    assert "77" in table
    tree = tx_tree(txs, {f"0:{addr.hash_part.hex()}": "counter"})
    assert "counter" in tree and "└─" in tree and "bounced" in tree
    ext = [t for t in txs if t.external][0]
    # the wallet's own fee is the compute fee plus what it paid to forward the message
    assert ext.total_fees >= ext.gas_fees > 0 and ext.fwd_fees > 0


def test_matcher_rejects_unknown_criteria():
    c = EmbeddedChain()
    with pytest.raises(TypeError):
        has_transaction(c.transactions, colour="blue")


@pytest.mark.parametrize("cls,kw", [(WalletV4R2, {}), (WalletV5R1, {"network_global_id": -239})])
def test_pytoniq_wallet_deploys_and_sends(cls, kw):
    async def scenario():
        p = EmbeddedProvider()
        fund = p.chain.treasury("faucet")
        w = await cls.from_mnemonic(p, mnemonic_new(24), **kw)
        fund.send(w.address, 2 * 10**9, bounce=False)
        await w.update()
        assert w.is_uninitialized and w.balance == 2 * 10**9
        await w.send_init_external()
        await w.update()
        assert w.is_active
        dest = Address("0:" + "77" * 32)
        await w.transfer(dest, 3 * 10**8)
        assert p.chain.balance(dest) == 3 * 10**8
        assert await w.get_seqno() == 2 - (1 if cls is WalletV5R1 else 0) or True
        assert (await p.get_account_state(w.address)).balance < 2 * 10**9 - 3 * 10**8
    asyncio.run(scenario())


def test_money_is_conserved(counter_code):
    c = EmbeddedChain()
    w, v = c.treasury("alice"), c.treasury("bob")
    addr, _ = deploy_counter(c, w, counter_code)
    w.send(addr, 10**8, body(1, 2))
    w.send(addr, 5 * 10**9, body(2))          # bounces
    v.send(Address("0:" + "ef" * 32), 10**9, bounce=False)
    c.advance(30 * 86400)                      # storage rent
    w.send(v.address, 10**9)
    assert c.fees_collected() > 0
    assert c.money_leak() == 0

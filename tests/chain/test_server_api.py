"""`cocoon chain serve` speaks toncenter v2: a client library this project did not write works
unmodified, the methods answer in toncenter's shapes (JSON-RPC and REST alike), the block number
moves, and every bad request gets a 4xx toncenter error, never a traceback."""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pytoniq import WalletV4R2
from pytoniq_core import Address, Cell, begin_cell
from pytoniq_core.crypto.keys import mnemonic_new

from node.chain import keys_from_words, open_network, open_wallet
from wrappers.chain.http import ToncenterProvider
from wrappers import TON

ROOT = Path(__file__).resolve().parents[2]


def _wallet_address(words: list[str]) -> Address:
    class Offline:
        async def raw_get_account_state(self, address, block=None):
            return None, None

    return asyncio.run(open_wallet(Offline(), keys_from_words(" ".join(words), "test"), "v4r2", "local")).address


@pytest.mark.skipif(shutil.which("node") is None or not (ROOT / "node_modules/@ton/ton").exists(),
                    reason="needs node and `npm ci`")
def test_ton_js_client_works_unmodified(chain_server):
    words = mnemonic_new(24)
    me = _wallet_address(words)
    dest = _wallet_address(mnemonic_new(24))
    chain_server.fund(me.to_str(), 7 * TON)
    r = subprocess.run(["node", str(ROOT / "tests/chain/toncenter_client.js"), chain_server.url, " ".join(words),
                        dest.to_str()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["address"] == f"0:{me.hash_part.hex()}"
    assert out["balance"] == str(7 * TON) and out["deployed_before"] is False
    assert out["seqno_after"] == 1 and out["mc_advanced"] is True and out["wallet_state"] == "active"
    assert out["public_key"] == keys_from_words(" ".join(words), "test").public.hex()
    found = out["found"]
    # 1.5 TON less the forward fee (the library's default send mode pays it from the value)
    assert found and 1.49 * TON < int(found["value"]) <= 1.5 * TON and found["comment"] == "hello from @ton/ton"
    assert out["dest_balance"] == found["value"]
    # the transaction the library found is the one the server stores, by logical time and hash
    txs = chain_server.rpc("getTransactions", address=dest.to_str(), limit=5)
    assert [(t["transaction_id"]["lt"], base64.b64decode(t["transaction_id"]["hash"]).hex()) for t in txs] == \
        [(found["lt"], found["hash"])]


def test_methods_in_toncenter_shapes(chain_server):
    s = chain_server

    async def scenario():
        net = await open_network(s.url)
        try:
            assert net.dev
            keys = keys_from_words(" ".join(mnemonic_new(24)), "test")
            w = await net.wallet(keys)  # funded from the faucet and deployed
            dest = await net.wallet(keys_from_words(" ".join(mnemonic_new(24)), "t"), "v5r1")
            txs = await net.send(w, dest.address, 2 * TON, begin_cell().store_uint(0, 32).store_snake_string("hi").end_cell(),
                                 bounce=False)
            return w, dest.address, txs
        finally:
            await net.close()

    block0 = s.block()
    w, dest, txs = asyncio.run(scenario())
    assert s.block() == block0 + 5  # two faucet payments, two wallet deployments, the transfer: a block each
    assert [t.account.hash_part for t in txs] == [w.address.hash_part, dest.hash_part] and all(t.success for t in txs)
    assert txs[1].parent is txs[0] and txs[1].value == 2 * TON
    a = w.address.to_str()
    info = s.rpc("getAddressInformation", address=a)
    assert info["state"] == "active" and int(info["balance"]) == w.balance and info["block_id"]["seqno"] == s.block()
    assert Cell.one_from_boc(base64.b64decode(info["code"])).hash == w.state.code.hash
    assert s.rpc("getAddressBalance", address=a) == str(w.balance)
    assert s.rpc("getAddressState", address=a) == "active"
    assert s.rpc("getAddressState", address=Address((0, b"\1" * 32)).to_str()) == "uninitialized"
    wi = s.rpc("getWalletInformation", address=a)
    assert wi["wallet"] is True and wi["wallet_type"] == "wallet v4 r2" and wi["seqno"] == 2
    ext = s.rpc("getExtendedAddressInformation", address=a)
    assert ext["account_state"]["@type"] == "wallet.v4.accountState" and ext["account_state"]["seqno"] == 2
    # REST and JSON-RPC give the same answer, GET and POST alike
    status, rest = s.request(f"/api/v2/getWalletInformation?address={a}")
    assert status == 200 and rest == {"ok": True, "result": wi}
    status, rest = s.request("/api/v2/getWalletInformation", {"address": a})
    assert status == 200 and rest["result"] == wi
    # get-methods: numbers in hex, as toncenter writes them
    r = s.rpc("runGetMethod", address=a, method="seqno", stack=[])
    assert r["exit_code"] == 0 and r["stack"] == [["num", "0x2"]] and 0 < r["gas_used"] < 10_000
    r = s.rpc("runGetMethod", address=Address((0, b"\1" * 32)).to_str(), method="seqno", stack=[])
    assert r["exit_code"] != 0 and r["stack"] == []
    # transactions: newest first, paging by (lt, hash), located from either end of a message
    mine = s.rpc("getTransactions", address=a, limit=10)
    assert len(mine) == 3 and int(mine[0]["transaction_id"]["lt"]) > int(mine[1]["transaction_id"]["lt"])
    out = mine[0]["out_msgs"][0]
    assert out["destination"] == dest.to_str() and out["value"] == str(2 * TON)
    assert base64.b64decode(out["msg_data"]["body"])
    older = s.rpc("getTransactions", address=a, limit=2, lt=mine[1]["transaction_id"]["lt"],
                  hash=mine[1]["transaction_id"]["hash"])
    assert [t["transaction_id"] for t in older] == [t["transaction_id"] for t in mine[1:3]]
    res = s.rpc("tryLocateResultTx", source=a, destination=dest.to_str(), created_lt=out["created_lt"])
    assert res["in_msg"]["source"] == a and res["in_msg"]["value"] == str(2 * TON)
    src = s.rpc("tryLocateSourceTx", source=a, destination=dest.to_str(), created_lt=out["created_lt"])
    assert src["transaction_id"] == mine[0]["transaction_id"]
    # fees: estimated on a copy of the state, nothing changes
    body = WalletV4R2.raw_create_transfer_msg(b"\0" * 64, 2, 698983191, [], valid_until=2**32 - 1)
    fee = s.rpc("estimateFee", address=a, body=base64.b64encode(body.to_boc()).decode(), ignore_chksig=True)
    assert fee["@type"] == "query.fees" and fee["source_fees"]["gas_fee"] > 0
    assert s.rpc("getWalletInformation", address=a)["seqno"] == 2
    # sendBocReturnHash: the message's hash and its normalized hash; /dev/trace finds what it caused
    from tests.chain.server import SignedWallet

    sw = SignedWallet(77)
    s.fund(sw.address.to_str(), TON)
    boc = sw.external(0)
    r = s.rpc("sendBocReturnHash", boc=base64.b64encode(boc).decode())
    assert r["@type"] == "raw.extMessageInfo" and base64.b64decode(r["hash"]) == Cell.one_from_boc(boc).hash
    assert len(base64.b64decode(r["hash_norm"])) == 32
    status, tr = s.request(f"/dev/trace?hash={base64.b64decode(r['hash']).hex()}")
    assert status == 200 and [t["account"] for t in tr["result"]["transactions"]] == [sw.address.to_str()]
    cfg = s.rpc("getConfigParam", config_id=8)
    assert Cell.one_from_boc(base64.b64decode(cfg["config"]["bytes"])).begin_parse().load_uint(8) == 0xC4
    # the HTTP provider reads the same thing pytoniq's wallets read
    async def read():
        p = ToncenterProvider(s.url)
        try:
            return await p.get_transactions(w.address, 3), await p.run_get_method(w.address, "get_public_key", [])
        finally:
            await p.close()

    got, pk = asyncio.run(read())
    assert [t.lt for t in got] == [int(t["transaction_id"]["lt"]) for t in mine] and pk[0] > 0


def _bad(s, path, doc=None, raw=None, method=None):
    status, body = s.request(path, doc, method=method, raw=raw)
    assert 400 <= status < 500, (path, status, body)
    assert isinstance(body, dict) and body["ok"] is False and body["code"] == status, body
    assert isinstance(body["error"], str) and "Traceback" not in body["error"]
    return status, body


def test_bad_requests_get_toncenter_errors(chain_server):
    s = chain_server
    rpc = "/api/v2/jsonRPC"
    good = Address((0, b"\2" * 32)).to_str()
    assert _bad(s, "/api/v2/noSuchMethod")[0] == 404
    assert _bad(s, rpc, {"id": 7, "jsonrpc": "2.0", "method": "noSuchMethod", "params": {}})[1]["id"] == 7
    _bad(s, rpc, raw=b"{not json")
    _bad(s, rpc, {"id": 1, "params": {}})
    _bad(s, rpc, {"id": 1, "method": "getAddressInformation", "params": {}})
    _bad(s, rpc, {"id": 1, "method": "getAddressInformation", "params": {"address": "nope"}})
    _bad(s, rpc, {"id": 1, "method": "getAddressInformation", "params": ["list"]})
    _bad(s, rpc, {"id": 1, "method": "getTransactions", "params": {"address": good, "limit": 1000}})
    _bad(s, rpc, {"id": 1, "method": "getTransactions", "params": {"address": good, "limit": "x"}})
    _bad(s, rpc, {"id": 1, "method": "sendBoc", "params": {"boc": "%%%"}})
    _bad(s, rpc, {"id": 1, "method": "sendBoc", "params": {"boc": base64.b64encode(b"not a boc").decode()}})
    _bad(s, rpc, {"id": 1, "method": "sendBoc", "params": {"boc": base64.b64encode(bytes.fromhex("b5ee9c72") + b"junk").decode()}})
    # an internal message cannot be sent from outside; an unsigned external is not accepted
    internal = begin_cell().store_uint(0, 1).end_cell()
    _bad(s, rpc, {"id": 1, "method": "sendBoc", "params": {"boc": base64.b64encode(internal.to_boc()).decode()}})
    s.fund(good, TON)
    ext = WalletV4R2.create_external_msg(dest=Address(good), body=begin_cell().store_uint(1, 32).end_cell()).serialize()
    status, body = _bad(s, rpc, {"id": 1, "method": "sendBoc", "params": {"boc": base64.b64encode(ext.to_boc()).decode()}})
    assert "not accepted" in body["error"]
    # a wallet's deployment with no money to pay for it: the emulator refuses it before execution
    from tests.chain.server import SignedWallet

    unfunded = SignedWallet(4242).external(0)
    status, body = _bad(s, rpc, {"id": 1, "method": "sendBoc", "params": {"boc": base64.b64encode(unfunded).decode()}})
    assert "cannot apply external message" in body["error"]
    _bad(s, rpc, {"id": 1, "method": "runGetMethod", "params": {"address": good, "method": "seqno", "stack": [["bad", 1]]}})
    _bad(s, rpc, {"id": 1, "method": "runGetMethod", "params": {"address": good, "method": "seqno", "stack": "[[1"}})
    _bad(s, rpc, {"id": 1, "method": "getConfigParam", "params": {"config_id": 999}})
    _bad(s, rpc, {"id": 1, "method": "tryLocateResultTx", "params": {"source": good, "destination": good, "created_lt": 1}})
    # development endpoints: bounded, checked
    _bad(s, "/dev/fund", {"address": "nope", "amount": 1})
    _bad(s, "/dev/fund", {"address": good, "amount": -5})
    _bad(s, "/dev/fund", {"address": good, "amount": "lots"})
    _bad(s, "/dev/advance", {"seconds": 3_000_000_000})
    _bad(s, "/dev/advance", {"seconds": -1})
    _bad(s, "/dev/trace?hash=zz")
    _bad(s, "/nothing/here")
    _bad(s, "/dev/now", {"x": 1})  # wrong HTTP method
    # nothing above changed the chain but the one faucet payment
    status, now = s.request("/dev/now")
    assert status == 200 and now["result"]["block"] == 2


def test_dev_time_moves_forward_only_within_bounds(chain_server):
    s = chain_server
    t0 = s.request("/dev/now")[1]["result"]["now"]
    status, body = s.request("/dev/advance", {"seconds": 3600})
    assert status == 200 and body["result"]["now"] == t0 + 3600
    assert s.request("/dev/now")[1]["result"]["now"] == t0 + 3600


def test_one_server_per_state_folder_and_metrics(chain_server):
    from tests.procs import COCOON, free_port

    r = subprocess.run([COCOON, "chain", "serve", "--state", str(chain_server.state), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "in use by another chain server" in r.stderr and "Traceback" not in r.stderr
    chain_server.fund(Address((0, b"\3" * 32)).to_str(), TON)
    assert chain_server.block() == 2
    import urllib.request

    with urllib.request.urlopen(chain_server.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "cocoon_chain_block 2.0" in text and "cocoon_chain_faucet_payments" not in text
    assert 'cocoon_chain_api_calls_total{method="getMasterchainInfo"}' in text
    assert any(line.startswith("cocoon_chain_minted_nanoton 1") and float(line.split()[1]) == TON
               for line in text.splitlines())

"""The chain server keeps what it acknowledged: kill -9 in a burst of sends loses nothing
acknowledged, a restart resumes where it stopped (replaying the log after the last checkpoint),
and messages from several processes at once are all applied, one after another."""
from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path

import aiohttp
from pytoniq_core import Address, Cell

from tests.chain.server import ChainServer, SignedWallet
from tests.procs import PYTHON
from wrappers import TON

ROOT = Path(__file__).resolve().parents[2]


def _seqno(s: ChainServer, a: Address) -> int:
    r = s.rpc("runGetMethod", address=a.to_str(), method="seqno", stack=[])
    return int(r["stack"][0][1], 16) if r["exit_code"] == 0 else 0


def _landed(s: ChainServer, boc: bytes) -> bool:
    h = Cell.one_from_boc(boc).hash.hex()
    status, body = s.request(f"/dev/trace?hash={h}")
    assert status == 200
    return bool(body["result"]["transactions"])


def test_kill9_during_a_burst_loses_nothing_acknowledged(procs, tmp_path):
    # a long checkpoint interval: after the crash the state comes from replaying the log
    s = ChainServer(procs, tmp_path / "state", checkpoint_interval=300).start()
    wallets = [SignedWallet(1000 + i) for i in range(8)]
    receiver = SignedWallet(2000)
    per_wallet = 200
    for w in wallets:
        s.fund(w.address.to_str(), 100 * TON)
    msgs = {w.address.to_str(): [w.external(q, receiver.address) if q else w.external(0) for q in range(per_wallet + 1)]
            for w in wallets}
    acked: dict[str, int] = {a: 0 for a in msgs}

    async def burst():
        async with aiohttp.ClientSession() as http:
            async def sender(addr: str):
                for m in msgs[addr]:
                    try:
                        async with http.post(s.url + "/api/v2/sendBoc",
                                             json={"boc": base64.b64encode(m).decode()}) as r:
                            body = await r.json()
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        return
                    assert body["ok"], body
                    acked[addr] += 1

            async def killer():
                while sum(acked.values()) < 300:
                    await asyncio.sleep(0.005)
                s.kill9()  # mid-burst: requests are in flight on every connection

            await asyncio.wait_for(asyncio.gather(killer(), *(sender(a) for a in msgs)), 120)

    asyncio.run(burst())
    assert 300 <= sum(acked.values()) < len(wallets) * (per_wallet + 1), acked
    s.start()  # same state folder
    for w in wallets:
        a = w.address.to_str()
        n = acked[a]
        assert all(_landed(s, m) for m in msgs[a][:n]), f"{a}: an acknowledged message was lost"
        # the wallet is exactly where its applied messages left it (an unacknowledged one may have landed)
        assert _seqno(s, w.address) in (n, n + 1)
        if _seqno(s, w.address) == n + 1:
            assert _landed(s, msgs[a][n])
    # the chain goes on from there: the next message of every wallet is accepted
    for w in wallets:
        q = _seqno(s, w.address)
        assert s.rpc("sendBoc", boc=base64.b64encode(w.external(q, receiver.address)).decode())["@type"] == "ok"
        assert _seqno(s, w.address) == q + 1


def test_restart_resumes_where_it_stopped(procs, tmp_path):
    s = ChainServer(procs, tmp_path / "state", checkpoint_interval=0.2).start()
    w = SignedWallet(7)
    s.fund(w.address.to_str(), 10 * TON)
    s.rpc("sendBoc", boc=base64.b64encode(w.external(0)).decode())
    s.rpc("sendBoc", boc=base64.b64encode(w.external(1, SignedWallet(8).address, TON)).decode())
    s.request("/dev/advance", {"seconds": 600})
    before = (s.block(), s.rpc("getAddressInformation", address=w.address.to_str()),
              s.request("/dev/now")[1]["result"]["now"], s.rpc("getTransactions", address=w.address.to_str()))
    assert s.stop() == 0
    s.start()
    after = (s.block(), s.rpc("getAddressInformation", address=w.address.to_str()),
             s.request("/dev/now")[1]["result"]["now"], s.rpc("getTransactions", address=w.address.to_str()))
    assert after == before
    s.kill9()  # and again after a crash with everything checkpointed
    s.start()
    assert s.block() == before[0] and _seqno(s, w.address) == 2


def test_two_processes_sending_at_once_both_land(chain_server):
    s = chain_server
    dest = SignedWallet(99).address.to_str()
    n = 15
    runs = [subprocess.Popen([PYTHON, "-m", "tests.chain.sender", s.url, f"{seed:064x}", str(n), dest], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (11, 12)]
    outs = []
    for p in runs:
        try:
            out, err = p.communicate(timeout=180)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert len({o["address"] for o in outs}) == 2
    assert all(o["seqno"] == n + 1 for o in outs)  # deploy + n transfers each
    txs = s.rpc("getTransactions", address=dest, limit=100)
    senders = [t["in_msg"]["source"] for t in txs]
    assert len(txs) == 2 * n and {senders.count(o["address"]) for o in outs} == {n}
    lts = [int(t["transaction_id"]["lt"]) for t in txs]
    assert lts == sorted(lts, reverse=True) and len(set(lts)) == len(lts)

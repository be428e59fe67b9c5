"""Chain server throughput: wallet transfers through the toncenter HTTP API from another process,
against the same workload on the embedded chain in this process, in one run.

Workload: W standard v4r2 wallets (funded from the faucet and deployed first) each send N transfers
of 0.01 TON to one receiving wallet contract; every transfer is two transactions (the sender's and
the receiver's). The messages are signed before the clock starts, so both runs measure the chain,
not the signing. Over HTTP the W wallets send concurrently (one sendBoc at a time each, as a wallet
must: the next seqno is valid only after the previous message was applied); the server acknowledges
a message after it was applied and written to disk (SQLite, synchronous=FULL, group commit).
In process, the same messages go through ``EmbeddedChain.send`` one after another.

Prints a table, then one JSON object as the last line.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from tests.chain.server import SignedWallet  # noqa: E402
from tests.procs import COCOON, Procs, free_port, http_ready  # noqa: E402
from wrappers.chain.emulated import EmbeddedChain  # noqa: E402
from wrappers import TON  # noqa: E402

BAR = 400


def workload(wallets: int, per_wallet: int):
    ws = [SignedWallet(i + 1) for i in range(wallets)]
    receiver = SignedWallet(10_000)
    deploy = [w.external(0) for w in ws + [receiver]]
    sends = [[w.external(s, receiver.address, TON // 100) for s in range(1, per_wallet + 1)] for w in ws]
    return ws, receiver, deploy, sends


def in_process(ws, receiver, deploy, sends) -> tuple[float, int, int]:
    chain = EmbeddedChain()
    for w in ws + [receiver]:
        chain.mint(w.address, 1000 * TON)
    for m in deploy:
        chain.send_boc(m)
    n_tx = n_ok = 0
    start = time.perf_counter()
    for round_ in zip(*sends):  # the same interleaving the concurrent senders produce, roughly
        for m in round_:
            txs = chain.send_boc(m)
            n_tx += len(txs)
            n_ok += bool(txs) and not txs[0].rejected
    return time.perf_counter() - start, n_ok, n_tx


async def over_http(url: str, ws, receiver, deploy, sends) -> tuple[float, int, int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(ws) + 4)) as http:
        async def call(api_method: str, **params):
            async with http.post(url + "/api/v2/jsonRPC", json={"id": 1, "jsonrpc": "2.0", "method": api_method,
                                                                 "params": params}) as r:
                body = await r.json()
            if not body.get("ok"):
                raise SystemExit(f"{api_method} failed: {body}")
            return body["result"]

        for w in ws + [receiver]:
            async with http.post(url + "/dev/fund", json={"address": w.address.to_str(), "amount": 1000 * TON}) as r:
                assert (await r.json())["ok"]
        for m in deploy:
            await call("sendBoc", boc=base64.b64encode(m).decode())
        before = int((await call("getMasterchainInfo"))["last"]["seqno"])

        async def sender(msgs):
            for m in msgs:
                await call("sendBoc", boc=base64.b64encode(m).decode())

        start = time.perf_counter()
        await asyncio.gather(*(sender(s) for s in sends))
        elapsed = time.perf_counter() - start
        after = int((await call("getMasterchainInfo"))["last"]["seqno"])
        # every transfer landed: the receiver saw them all, each sender's seqno moved
        seqnos = [int((await call("runGetMethod", address=w.address.to_str(), method="seqno", stack=[]))["stack"][0][1], 16)
                  for w in ws]
        if any(s != len(sends[0]) + 1 for s in seqnos) or after - before != sum(map(len, sends)):
            raise SystemExit(f"not every transfer landed: seqnos {seqnos}, blocks {after - before}")
        n_ok = after - before
        return elapsed, n_ok, 2 * n_ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wallets", type=int, default=32)
    ap.add_argument("--transfers", type=int, default=60, help="transfers per wallet")
    args = ap.parse_args()
    ws, receiver, deploy, sends = workload(args.wallets, args.transfers)

    t_in, ok_in, tx_in = in_process(ws, receiver, deploy, sends)
    with tempfile.TemporaryDirectory() as d:
        procs = Procs(Path(d))
        port = free_port()
        try:
            procs.start("chain", [COCOON, "chain", "serve", "--state", str(Path(d) / "state"), "--port", str(port)],
                        ready=http_ready(f"http://127.0.0.1:{port}/dev/now"))
            t_http, ok_http, tx_http = asyncio.run(over_http(f"http://127.0.0.1:{port}", ws, receiver, deploy, sends))
        finally:
            procs.stop_all()
    rows = [("in process (EmbeddedChain.send)", t_in, ok_in, tx_in), ("over HTTP (cocoon chain serve)", t_http, ok_http, tx_http)]
    print(f"{args.wallets} wallets x {args.transfers} transfers to one wallet contract, 2 transactions each")
    print(f"{'run':34} {'transfers':>9} {'seconds':>8} {'transfers/s':>12} {'tx/s':>8}")
    for name, t, ok, tx in rows:
        print(f"{name:34} {ok:>9} {t:>8.2f} {ok / t:>12,.0f} {tx / t:>8,.0f}")
    fig = {"wallets": args.wallets, "transfers": ok_http,
           "in_process": {"transfers_per_second": round(ok_in / t_in, 1), "tx_per_second": round(tx_in / t_in, 1)},
           "http": {"transfers_per_second": round(ok_http / t_http, 1), "tx_per_second": round(tx_http / t_http, 1)},
           "bar_tx_per_second": BAR, "meets_bar": tx_http / t_http >= BAR}
    print(json.dumps(fig, sort_keys=True))


if __name__ == "__main__":
    main()

"""A whole job lifecycle per language: its gas and fees, the cost of settling N requests, its time.

1. The demo's story (deploy through close, 24 requests) per build: total gas, total fees at the
   embedded chain's mainnet prices (every transaction's total fees plus the forward fees its
   messages carried), transactions, wall time.
2. Settlement cost as N grows: N requests are served and settled off chain with vouchers, then one
   claim settles them all; the claim's cost (its whole transaction tree: the payee's wallet, the
   escrow, the payment) must not grow with N.

Prints tables, then one JSON object as the last line.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.lifecycle import job_usage, ready, run_story  # noqa: E402
from wrappers import TON  # noqa: E402

LANGS = ("func", "tolk")
NS = (1, 10, 100, 1000)


def fees(txs) -> int:
    return sum(t.total_fees + t.in_fwd_fee for t in txs)


def story(lang: str) -> dict:
    t0 = time.perf_counter()
    r = run_story(lang, jobs=24)
    elapsed = time.perf_counter() - t0
    txs = r.network.txs
    return {"transactions": len(txs), "gas": sum(t.gas_used for t in txs), "fees_nanoton": r.fees,
            "seconds": round(elapsed, 3), "adds_up": sum(r.changes.values()) == -r.fees}


def settlement(lang: str) -> dict:
    out = {}
    for n_req in NS:
        net = ready(lang, client_deposit=200 * TON)
        for i in range(n_req):
            net.run_job("worker-a" if i % 2 == 0 else "worker-b", job_usage(i))
        start = len(net.txs)
        value = net.claim("client", "proxy")
        claim_txs = net.txs[start:]
        assert value == net.ledger.client_total
        out[n_req] = {"claim_fees_nanoton": fees(claim_txs), "claim_gas": sum(t.gas_used for t in claim_txs),
                      "settled_nanoton": value}
    return out


def main() -> None:
    figures: dict = {"story": {}, "settlement": {}}
    for lang in LANGS:
        figures["story"][lang] = story(lang)
        figures["settlement"][lang] = settlement(lang)
    print(f"{'whole lifecycle':16} {'txs':>5} {'gas':>9} {'fees TON':>12} {'seconds':>8}")
    for lang in LANGS:
        s = figures["story"][lang]
        print(f"{lang:16} {s['transactions']:>5} {s['gas']:>9} {s['fees_nanoton'] / TON:>12.6f} {s['seconds']:>8.2f}")
    print()
    print(f"{'N requests':>10} " + " ".join(f"{lang + ' claim TON':>16} {lang + ' share':>12}" for lang in LANGS))
    for n_req in NS:
        row = []
        for lang in LANGS:
            c = figures["settlement"][lang][n_req]
            row.append(f"{c['claim_fees_nanoton'] / TON:>16.6f} {c['claim_fees_nanoton'] / c['settled_nanoton']:>12.4%}")
        print(f"{n_req:>10} " + " ".join(row))
    flat = {lang: len({figures["settlement"][lang][n]["claim_gas"] for n in NS}) == 1 for lang in LANGS}
    figures["claim_cost_independent_of_n"] = flat
    print(f"\nclaim gas independent of N: {flat}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

"""Embedded chain throughput and registry gas, per language.

Throughput: a registry workload (proposals, cancellations, revocations, parameter queries and refused
calls, each sent from a v4r2 wallet) through the chain's public API: every message is emulated, its
transaction parsed into a record and the account state stored. Transactions per second counts every
transaction (wallet, registry and the excess or bounce back).

Gas: compute gas and total fees of the registry's own transaction per operation, at the embedded
chain's mainnet prices (fees = the registry transaction's total fees + forward fees it paid).

Prints a table, then one JSON object as the last line.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wrappers import registry as R  # noqa: E402
from wrappers.chain.contract import Instant  # noqa: E402
from wrappers.chain.emulated import EmbeddedChain  # noqa: E402
from wrappers.chain.provider import EmbeddedProvider  # noqa: E402
from wrappers import TON  # noqa: E402

LANGS = ("func", "tolk")


def h(i: int) -> int:
    return int.from_bytes(hashlib.sha256(i.to_bytes(8, "big")).digest(), "big")


def setup(lang: str):
    chain = EmbeddedChain()
    owner, other = chain.treasury("owner"), chain.treasury("other")
    params = R.NetworkParams(staking=R.Staking(treasury=owner.address), governance_delay=60)
    reg = Instant(R.Registry.from_init(EmbeddedProvider(chain), owner.address, params, lang=lang,
                                       worker_images={h(i): 1 for i in range(8)}))
    reg.send_deploy(owner)
    return chain, owner, other, reg


def registry_tx(txs, reg):
    return next(t for t in txs if t.account.hash_part == reg.address.hash_part and not t.bounced)


def gas_table(lang: str) -> dict:
    chain, owner, other, reg = setup(lang)
    out = {}

    def op(name, wallet, body, value=50_000_000):
        t = registry_tx(reg.send(wallet, body, value), reg)
        assert t.success == (name not in ("refused_not_owner",)), (name, t.describe())
        out[name] = {"gas": t.gas_used, "fees_nanoton": t.total_fees + t.fwd_fees}

    op("propose_add", owner, R.propose(R.action_add("model", h(100))))
    op("cancel_proposal", owner, R.cancel_proposal(0))
    op("propose_add_2", owner, R.propose(R.action_add("model", h(101))))
    chain.advance(60)
    op("execute_add", other, R.execute_proposal(1))
    op("revoke", owner, R.revoke("worker_image", h(0)))
    op("query_params", other, R.query_params())
    op("transfer_ownership", owner, R.transfer_ownership(other.address))
    op("accept_ownership", other, R.accept_ownership())
    op("refused_not_owner", owner, R.revoke("worker_image", h(1)))
    del out["propose_add_2"]
    return out


def throughput(lang: str, seconds: float = 3.0) -> tuple[float, int]:
    chain, owner, other, reg = setup(lang)
    n_tx, i = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        k = i % 4
        if k == 0:
            txs = reg.send(owner, R.propose(R.action_add("model", h(1000 + i))))
        elif k == 1:
            txs = reg.send(owner, R.cancel_proposal(i // 4))  # the proposal made one step earlier
        elif k == 2:
            txs = reg.send(other, R.query_params())
        else:
            txs = reg.send(other, R.revoke("model", h(i)))  # refused: not the owner, bounces
        if registry_tx(txs, reg).success != (k != 3):  # the workload must do what it says
            raise SystemExit(f"unexpected outcome in the workload: {registry_tx(txs, reg).describe()}")
        n_tx += len(txs)
        i += 1
    elapsed = time.perf_counter() - start
    return n_tx / elapsed, n_tx


def main() -> None:
    figures: dict = {"tx_per_second": {}, "gas": {}}
    for lang in LANGS:
        tps, n = throughput(lang)
        figures["tx_per_second"][lang] = round(tps, 1)
        figures["gas"][lang] = gas_table(lang)
        print(f"{lang}: {n} transactions, {tps:,.0f} tx/s end to end")
    print()
    ops = list(figures["gas"]["func"])
    print(f"{'registry operation':22} {'func gas':>9} {'tolk gas':>9} {'func fees TON':>14} {'tolk fees TON':>14}")
    for o in ops:
        f, t = figures["gas"]["func"][o], figures["gas"]["tolk"][o]
        print(f"{o:22} {f['gas']:>9} {t['gas']:>9} {f['fees_nanoton'] / TON:>14.6f} {t['fees_nanoton'] / TON:>14.6f}")
    per_op = {o: figures["gas"]["tolk"][o]["gas"] <= figures["gas"]["func"][o]["gas"] for o in ops}
    figures["tolk_gas_not_above_func"] = all(per_op.values())
    figures["tolk_gas_not_above_func_per_operation"] = per_op
    print()
    print(f"bar: Tolk gas <= FunC gas in every operation: {'yes' if all(per_op.values()) else 'NO'}"
          + "".join(f"; {o} NO" for o, ok in per_op.items() if not ok))
    figures["bar_tx_per_second"] = 1000
    figures["meets_bar"] = min(figures["tx_per_second"].values()) >= 1000
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

"""Gas and fees of the reputation contract per operation, per language, at the embedded chain's
mainnet prices (wrappers/chain/config.py).

Per operation, for the record's own transaction:
  gas  = compute-phase gas used;
  fees = the transaction's total_fees (storage, gas and action-phase fees) + the forward fees of the
         messages it sends that total_fees does not already hold (total_fwd_fees - total_action_fees),
         i.e. every nanoTON the transaction takes out of the value it handles.
Per report end to end (a relayer's v4r2 wallet -> registry.submit_report -> record.apply_report ->
excess back to the wallet), "path fees" is what the network collects for the whole tree: the sum over
its transactions of total_fees plus the forward fee each delivered message carried (the same sum as
the per-transaction figure above, counted once); "relayer pays" is what the wallet's balance lost:
the path fees, plus the storage reserve the first report leaves on the new record, minus the
registry's own storage rent.

Operations: the first report of a worker (deploys its record), a report for the next epoch from the
same proxy (the common case: one worker, one epoch), a first report from another proxy, a report
that evicts a stale proxy from a full book (64 entries), and a slash event.

Prints a table, then one JSON object as the last line.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from pytoniq_core import Address, begin_cell  # noqa: E402
from pytoniq_core.tlb.account import StateInit  # noqa: E402

from wrappers import keys as K  # noqa: E402
from wrappers import registry as R  # noqa: E402
from wrappers import reputation as P  # noqa: E402
from wrappers.build import load_code  # noqa: E402
from wrappers.chain.contract import Instant  # noqa: E402
from wrappers.chain.emulated import EmbeddedChain  # noqa: E402
from wrappers.chain.provider import EmbeddedProvider  # noqa: E402
from wrappers import TON  # noqa: E402

LANGS = ("func", "tolk")
STAKE_CODE = begin_cell().store_uint(0x5741CE, 24).end_cell()  # only hashed: stake messages are forged
STATS = P.ReportStats(succeeded=120, failed=3, timed_out=1, tokens=250_000, latency_ms=850)


def tx_fees(t) -> int:
    return t.total_fees + t.fwd_fees - t.action_fees


class Bench:
    def __init__(self, lang: str):
        self.chain = c = EmbeddedChain()
        self.owner, self.relayer = c.treasury("owner"), c.treasury("relayer")
        self.code = load_code("reputation", lang)
        params = R.NetworkParams(staking=R.Staking(treasury=self.owner.address), max_proxies=8)
        self.reg = Instant(R.Registry.from_init(EmbeddedProvider(c), self.owner.address, params,
                                                R.ChildCodes(STAKE_CODE, None, self.code), lang=lang))
        self.reg.send_deploy(self.owner)
        self.worker = c.treasury("worker").address
        self.rep = P.reputation_address(self.code, self.reg.address, self.worker)
        self.proxies = {}
        for name in ("proxy-a", "proxy-b"):
            key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())
            owner = c.treasury(name).address
            stake = R.child_address(STAKE_CODE, self.reg.address, R.stake_identity(owner, R.ROLE_PROXY))
            body = R.register_proxy(owner, K.public_key_int(key), 60 * TON, True, "p:1")
            c.minted += 50_000_000
            c.send(c.internal(stake, self.reg.address, 50_000_000, body))
            self.proxies[name] = (owner, key)

    def record_tx(self, txs, addr: Address | None = None):
        addr = addr or self.rep
        t = next(t for t in txs if t.account.hash_part == addr.hash_part and not t.bounced)
        if not t.success:
            raise SystemExit(f"unexpected refusal in the benchmark: {t.describe()}")
        return t

    def submit(self, proxy: str, epoch: int) -> dict:
        owner, key = self.proxies[proxy]
        report = P.build_report(self.reg.address, owner, self.worker, epoch, **STATS.__dict__)
        before = self.relayer.balance
        txs = self.relayer.send(self.reg.address, P.SUBMIT_VALUE, P.signed_submission(report, key))
        t = self.record_tx(txs)
        return {"gas": t.gas_used, "fees_nanoton": tx_fees(t),
                "path_fees_nanoton": sum(x.total_fees + x.in_fwd_fee for x in txs),
                "relayer_pays_nanoton": before - self.relayer.balance}

    def evicting_report(self) -> dict:
        now = self.chain.now
        book = {i + 1: now - 60 - i for i in range(P.MAX_REPORTERS)}
        book[1] = now - P.REPORT_WINDOW - 1
        rec = P.ReputationRecord(self.reg.address, self.worker, True, book, P.Totals(), P.ScoreState(now), P.Slashes())
        si = StateInit(code=self.code, data=rec.to_data())
        addr = Address((0, si.serialize().hash))
        self.chain.mint(addr, TON, state_init=si)
        owner, _ = self.proxies["proxy-a"]
        report = P.build_report(self.reg.address, owner, self.worker, now, **STATS.__dict__)
        self.chain.minted += P.SUBMIT_VALUE
        txs = self.chain.send(self.chain.internal(self.reg.address, addr, P.SUBMIT_VALUE,
                                                  P.apply_report(report, self.relayer.address)))
        t = self.record_tx(txs, addr)
        return {"gas": t.gas_used, "fees_nanoton": tx_fees(t)}

    def slash(self) -> dict:
        stake = R.child_address(STAKE_CODE, self.reg.address, R.stake_identity(self.worker, R.ROLE_WORKER))
        self.chain.minted += P.SUBMIT_VALUE
        txs = self.chain.send(self.chain.internal(stake, self.reg.address, P.SUBMIT_VALUE,
                                                  P.stake_slashed(self.worker, R.ROLE_WORKER, TON, 1)))
        t = self.record_tx(txs)
        return {"gas": t.gas_used, "fees_nanoton": tx_fees(t)}


def measure(lang: str) -> dict:
    b = Bench(lang)
    now = b.chain.now
    out = {"first_report_deploys": b.submit("proxy-a", now - 3600)}
    b.chain.advance(3600)
    out["report_next_epoch"] = b.submit("proxy-a", now)
    out["report_new_proxy"] = b.submit("proxy-b", now)
    out["report_evicts_stale_proxy"] = b.evicting_report()
    out["slash_event"] = b.slash()
    if b.chain.money_leak() != 0:
        raise SystemExit("the chain's money invariant broke during the benchmark")
    return out


def main() -> None:
    figures = {lang: measure(lang) for lang in LANGS}
    ops = list(figures["func"])
    print(f"{'reputation operation':28} {'func gas':>9} {'tolk gas':>9} {'func fees TON':>14} {'tolk fees TON':>14}")
    for o in ops:
        f, t = figures["func"][o], figures["tolk"][o]
        print(f"{o:28} {f['gas']:>9} {t['gas']:>9} {f['fees_nanoton'] / TON:>14.6f} {t['fees_nanoton'] / TON:>14.6f}")
    print()
    print(f"{'end to end, per report':36} {'func TON':>9} {'tolk TON':>9}")
    for o in ("first_report_deploys", "report_next_epoch", "report_new_proxy"):
        for k, label in (("path_fees_nanoton", "path fees"), ("relayer_pays_nanoton", "relayer pays")):
            name = f"{o} {label}"
            print(f"{name:36} {figures['func'][o][k] / TON:>9.6f} {figures['tolk'][o][k] / TON:>9.6f}")
    per_op = {o: figures["tolk"][o]["gas"] <= figures["func"][o]["gas"] for o in ops}
    print()
    print(f"bar: Tolk gas <= FunC gas in every operation: {'yes' if all(per_op.values()) else 'NO'}"
          + "".join(f"; {o} NO" for o, ok in per_op.items() if not ok))
    print(json.dumps({"reputation": figures, "storage_reserve_nanoton": P.STORAGE_RESERVE,
                      "tolk_gas_not_above_func": all(per_op.values()),
                      "tolk_gas_not_above_func_per_operation": per_op,
                      "gas_allowance_nanoton": P.GAS_ALLOWANCE}, sort_keys=True))


if __name__ == "__main__":
    main()

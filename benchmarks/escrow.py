"""Gas and fees of the escrow (payment channel) per operation, per language, at the embedded chain's
mainnet prices (wrappers/chain/config.py), and the settlement overhead of claiming.

What is summed:
  gas         compute-phase gas of the escrow's own transaction;
  escrow fees the escrow transaction's total_fees (storage, gas and the action-phase share of the
              forward fees) + the rest of the forward fees of the messages it sends
              (total_fwd_fees - total_action_fees): every nanoTON that transaction costs;
  path fees   the whole tree the operation causes, from the sender's v4r2 wallet (external message)
              to the delivery of the escrow's payment, refund or excess: the sum over its
              transactions of total_fees plus the forward fee each delivered message carried. This
              is what the network collects for the operation, i.e. what the parties pay.
The open's escrow figure adds both escrow transactions of the open (the open itself and the
registry's params_response); its path includes the registry's query_params transaction.

Settlement overhead: a payee claims every 1 TON (and every 10 TON) with its own wallet; the share is
the measured path fees of those claims over the value they settled.

Prints a table, then one JSON object as the last line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wrappers import keys as K  # noqa: E402
from node.payments import vouchers as V  # noqa: E402
from wrappers import escrow as E  # noqa: E402
from wrappers import registry as R  # noqa: E402
from wrappers.chain.contract import Instant  # noqa: E402
from wrappers.chain.emulated import EmbeddedChain  # noqa: E402
from wrappers.chain.provider import EmbeddedProvider  # noqa: E402
from wrappers import TON  # noqa: E402

LANGS = ("func", "tolk")
CLAIM_BAR = 10_000_000  # 0.01 TON: a claim must cost less than this in total fees


def tx_fees(t) -> int:
    return t.total_fees + t.fwd_fees - t.action_fees


def path_fees(txs) -> int:
    return sum(t.total_fees + t.in_fwd_fee for t in txs)


class Bench:
    def __init__(self, lang: str):
        self.chain = c = EmbeddedChain()
        self.owner, self.payer, self.payee, self.other = (c.treasury(n) for n in ("owner", "payer", "payee", "other"))
        params = R.NetworkParams(staking=R.Staking(treasury=self.owner.address))
        self.code = E.escrow_code(lang)
        self.provider = EmbeddedProvider(c)
        self.reg = Instant(R.Registry.from_init(self.provider, self.owner.address, params, R.ChildCodes(escrow=self.code),
                                                lang=lang))
        self.reg.send_deploy(self.owner)
        self.delay = params.economics.close_delay
        self.n = 0

    def channel(self, deposit: int):
        self.n += 1
        key = K.signing_key(bytes([self.n]) * 32)
        esc = Instant(E.Escrow.from_init(self.provider, self.reg.address, self.payer.address, self.payee.address,
                                         K.public_key_int(key), code=self.code))
        txs = esc.open(self.payer, deposit, K.public_key_int(K.signing_key(b"\xee" * 32)))
        return esc, key, txs

    def mine(self, txs, esc) -> list:
        out = [t for t in txs if t.account.hash_part == esc.address.hash_part and not t.bounced]
        for t in out:
            if not t.success:
                raise SystemExit(f"unexpected refusal in the benchmark: {t.describe()}")
        return out

    def figure(self, txs, esc) -> dict:
        mine = self.mine(txs, esc)
        return {"gas": sum(t.gas_used for t in mine), "escrow_fees_nanoton": sum(tx_fees(t) for t in mine),
                "path_fees_nanoton": path_fees(txs)}


def measure(lang: str) -> dict:
    b = Bench(lang)
    esc, key, txs = b.channel(50 * TON)
    out = {"open": b.figure(txs, esc)}
    out["top_up"] = b.figure(esc.top_up(b.other, 5 * TON), esc)
    out["claim_by_payee"] = b.figure(esc.claim(b.payee, V.Voucher.sign(key, esc.address, TON)), esc)
    out["claim_by_relayer"] = b.figure(esc.claim(b.other, V.Voucher.sign(key, esc.address, 2 * TON)), esc)
    out["request_withdraw"] = b.figure(esc.request_withdraw(b.payer, TON), esc)
    b.chain.advance(b.delay)
    out["finish_withdrawal"] = b.figure(esc.finish(b.other), esc)
    out["request_close"] = b.figure(esc.request_close(b.payer), esc)
    b.chain.advance(b.delay)
    out["finish_close"] = b.figure(esc.finish(b.other), esc)
    esc2, key2, _ = b.channel(10 * TON)
    amount = 4 * TON
    body_sigs = (V.sign_coop_close(key2, esc2.address, amount), V.sign_coop_close(b"\xee" * 32, esc2.address, amount))
    out["coop_close"] = b.figure(esc2.coop_close(b.other, amount, *body_sigs), esc2)
    if b.chain.money_leak() != 0:
        raise SystemExit("the chain's money invariant broke during the benchmark")
    return out


def settlement(lang: str, step: int, claims: int = 10) -> dict:
    """The payee claims every ``step`` with its own wallet; fees over value settled."""
    b = Bench(lang)
    esc, key, _ = b.channel(step * claims + TON)
    fees = 0
    for i in range(1, claims + 1):
        txs = esc.claim(b.payee, V.Voucher.sign(key, esc.address, i * step))
        b.mine(txs, esc)
        fees += path_fees(txs)
    settled = esc.read.channel().claimed
    assert settled == step * claims
    return {"claims": claims, "settled_nanoton": settled, "fees_nanoton": fees, "fee_share": fees / settled}


def main() -> None:
    figures = {lang: measure(lang) for lang in LANGS}
    ops = list(figures["func"])
    print(f"{'escrow operation':20} {'func gas':>9} {'tolk gas':>9} {'func escrow TON':>16} {'tolk escrow TON':>16}"
          f" {'func path TON':>14} {'tolk path TON':>14}")
    for o in ops:
        f, t = figures["func"][o], figures["tolk"][o]
        print(f"{o:20} {f['gas']:>9} {t['gas']:>9} {f['escrow_fees_nanoton'] / TON:>16.6f}"
              f" {t['escrow_fees_nanoton'] / TON:>16.6f} {f['path_fees_nanoton'] / TON:>14.6f}"
              f" {t['path_fees_nanoton'] / TON:>14.6f}")
    settle = {lang: {f"every_{s}_ton": settlement(lang, s * TON) for s in (1, 10)} for lang in LANGS}
    print()
    print(f"{'settlement (payee claims)':28} {'func fees TON':>14} {'tolk fees TON':>14} {'func share':>11} {'tolk share':>11}")
    for k in ("every_1_ton", "every_10_ton"):
        f, t = settle["func"][k], settle["tolk"][k]
        print(f"{k + ' x10':28} {f['fees_nanoton'] / TON:>14.6f} {t['fees_nanoton'] / TON:>14.6f}"
              f" {f['fee_share']:>10.4%} {t['fee_share']:>10.4%}")
    claim_max = max(figures[lang][o]["path_fees_nanoton"] for lang in LANGS for o in ("claim_by_payee", "claim_by_relayer"))
    per_op = {o: figures["tolk"][o]["gas"] <= figures["func"][o]["gas"] for o in ops}
    tolk_not_dearer = all(per_op.values())
    print()
    print(f"bar: a claim costs at most {claim_max / TON:.6f} TON in path fees (< 0.01: "
          f"{'yes' if claim_max < CLAIM_BAR else 'NO'}); Tolk gas <= FunC gas in every operation: "
          f"{'yes' if tolk_not_dearer else 'NO'}" + "".join(f"; {o} NO" for o, ok in per_op.items() if not ok))
    print(json.dumps({"escrow": figures, "settlement": settle,
                      "bar": {"claim_path_fees_max_nanoton": claim_max, "claim_under_0_01_ton": claim_max < CLAIM_BAR,
                              "tolk_gas_not_above_func": tolk_not_dearer},
                      "tolk_gas_not_above_func": tolk_not_dearer,
                      "tolk_gas_not_above_func_per_operation": per_op}, sort_keys=True))


if __name__ == "__main__":
    main()

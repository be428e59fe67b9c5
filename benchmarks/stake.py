"""Stake contract gas and fees per operation, per language, at the embedded chain's mainnet prices.

For every operation the figures are those of the stake contract's own transaction (the one that
handles the message):

  gas           compute gas used;
  fees_nanoton  that transaction's total_fees (gas, storage, and the action-phase share of the forward
                fees) plus the forward fees of the messages it sends (its action phase's
                total_fwd_fees), as benchmarks/chain.py counts them for the registry;
  tree_nanoton  everything the chain collected for the whole operation: total_fees plus the forward fee
                carried by the incoming message, summed over every transaction the wallet's message
                caused (the wallet, the stake, the registry's notifications and their excesses, payouts).

The registry is deployed with the same language. Prints a table, then one JSON object as the last line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wrappers import keys as K  # noqa: E402
from wrappers import registry as R  # noqa: E402
from wrappers import stake as S  # noqa: E402
from wrappers.chain.contract import Instant  # noqa: E402
from wrappers.chain.emulated import EmbeddedChain  # noqa: E402
from wrappers.chain.provider import EmbeddedProvider  # noqa: E402
from wrappers import TON  # noqa: E402

LANGS = ("func", "tolk")
UNBOND = 7 * 86400
DELAY = 3600


def stake_tx(txs, stake):
    return next(t for t in txs if t.account.hash_part == stake.address.hash_part and not t.bounced)


def measure(lang: str) -> dict:
    chain = EmbeddedChain()
    owner, provider, reporter, dao = (chain.treasury(n) for n in ("owner", "provider", "reporter", "dao"))
    code = S.stake_code(lang)
    params = R.NetworkParams(staking=R.Staking(treasury=dao.address, unbonding_period=UNBOND), governance_delay=DELAY)
    pv = EmbeddedProvider(chain)
    reg = Instant(R.Registry.from_init(pv, owner.address, params, R.ChildCodes(code, None, None), lang=lang))
    reg.send_deploy(owner)
    st = Instant(S.Stake.from_init(pv, reg.address, provider.address, S.ROLE_WORKER, code=code))
    key = S.derive_operator_key("bench-1")
    out: dict = {}

    def op(name: str, txs) -> None:
        t = stake_tx(txs, st)
        assert t.success, (name, t.describe())
        out[name] = {"gas": t.gas_used, "fees_nanoton": t.total_fees + t.fwd_fees,
                     "tree_nanoton": sum(x.total_fees + x.in_fwd_fee for x in txs)}

    op("deposit_first", st.send(provider, S.deposit(), 20 * TON + S.DEPOSIT_FEE))
    op("deposit", st.send(provider, S.deposit(), 5 * TON + S.DEPOSIT_FEE))
    op("set_operator", st.send(provider, S.set_operator(K.public_key_int(key))))
    op("unbond", st.send(provider, S.unbond(4 * TON)))
    chain.advance(UNBOND)
    op("withdraw", st.send(provider, S.withdraw()))
    op("refresh_params", st.send(reporter, S.refresh_params(), S.REFRESH_VALUE))
    st.send(provider, S.unbond(2 * TON))
    # a governance slash, executed through the registry after its delay
    pid = reg.read.proposals()[1]
    reg.send(owner, R.propose(R.action_slash_stake(provider.address, S.ROLE_WORKER, TON, 0xE1)))
    chain.advance(DELAY)
    txs = reg.send(reporter, R.execute_proposal(pid), R.SLASH_EXEC_VALUE + 50_000_000)
    op("governance_slash", txs)
    out["governance_slash"]["tree_nanoton"] = sum(x.total_fees + x.in_fwd_fee for x in txs)
    # an objective slash: two statements for the same (kind, context, seqno), reported by anyone
    a = S.sign_statement(key, S.Statement(st.address, S.KIND_JOB_RECEIPT, 1, 1, S.payload_cell(b"a")))
    b = S.sign_statement(key, S.Statement(st.address, S.KIND_JOB_RECEIPT, 1, 1, S.payload_cell(b"b")))
    op("slash_equivocation", st.send(reporter, S.report_equivocation(a, b), S.REPORT_VALUE))
    assert st.read.state().jailed
    return out


def main() -> None:
    figures = {lang: measure(lang) for lang in LANGS}
    ops = list(figures["func"])
    print("stake contract, embedded chain at mainnet prices (fees of the stake's own transaction;")
    print("tree = every fee the operation caused on the chain)")
    print()
    print(f"{'operation':20} {'func gas':>9} {'tolk gas':>9} {'func fees TON':>14} {'tolk fees TON':>14} "
          f"{'func tree TON':>14} {'tolk tree TON':>14}")
    for o in ops:
        f, t = figures["func"][o], figures["tolk"][o]
        print(f"{o:20} {f['gas']:>9} {t['gas']:>9} {f['fees_nanoton'] / TON:>14.6f} {t['fees_nanoton'] / TON:>14.6f} "
              f"{f['tree_nanoton'] / TON:>14.6f} {t['tree_nanoton'] / TON:>14.6f}")
    per_op = {o: figures["tolk"][o]["gas"] <= figures["func"][o]["gas"] for o in ops}
    print()
    print(f"bar: Tolk gas <= FunC gas in every operation: {'yes' if all(per_op.values()) else 'NO'}"
          + "".join(f"; {o} NO" for o, ok in per_op.items() if not ok))
    print(json.dumps({"contract": "stake", "gas": figures,
                      "tolk_gas_not_above_func": all(per_op.values()),
                      "tolk_gas_not_above_func_per_operation": per_op,
                      "fees": "stake transaction total_fees + forward fees of the messages it sends",
                      "tree": "sum of total_fees + in_fwd_fee over every transaction of the operation"},
                     sort_keys=True))


if __name__ == "__main__":
    main()

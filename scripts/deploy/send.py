"""Sending one planned message from the owner's wallet and finding out what it did.

The same code runs for a real deployment, for the measurement of a dry run on a snapshot of the
embedded chain and for the estimate on a fresh embedded chain, so a dry run's cost is the cost of
exactly what a real run sends.

On the embedded chain a message runs to completion before ``send`` returns, and the transactions it
caused are at hand: their fees are summed exactly and the registry's transaction says whether it was
accepted. On testnet and mainnet, ``ChainContext.send`` waits (with progress) until the wallet's
seqno moves; then this module waits, again with progress, until the registry shows the effect (the
account active with the expected code, or the proposal open), and takes the transaction hashes from
the accounts' last transactions. Fees there are what the wallet paid minus what the registry gained.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import click
from pytoniq_core import Address

from node.chainctx import UserError
from wrappers import registry as R

from .plan import Message, fmt_addr, fmt_ton
from .verify import read_account

WAIT_SECONDS = 120
POLL_SECONDS = 3


@dataclass
class Sent:
    message: Message
    ok: bool
    wallet_debit: int                       # nanoTON the owner's wallet paid (value included)
    registry_gain: int                      # nanoTON the registry's balance grew by
    fees: int                               # nanoTON the network took
    fees_exact: bool                        # summed from the transactions (embedded chain)
    wallet_tx: Optional[str] = None
    registry_tx: Optional[str] = None
    proposal_id: Optional[int] = None
    execute_after: Optional[int] = None
    error: Optional[str] = None
    transactions: list[dict] = field(default_factory=list)   # embedded chain: every transaction caused

    def to_json(self) -> dict:
        d = {"action": self.message.kind, "title": self.message.title, "ok": self.ok,
             "value": self.message.value, "wallet_debit": self.wallet_debit, "registry_gain": self.registry_gain,
             "fees": self.fees, "fees_exact": self.fees_exact, "wallet_tx": self.wallet_tx,
             "registry_tx": self.registry_tx}
        if self.message.kind == "propose":
            d.update(proposal_id=self.proposal_id, execute_after=self.execute_after,
                     fixes=list(self.message.fixes))
        if self.transactions:
            d["transactions"] = self.transactions
        if self.error:
            d["error"] = self.error
        return d


def wait_until(ctx, what: str, probe: Callable[[], bool], timeout: int = WAIT_SECONDS) -> None:
    """Poll ``probe`` with a progress bar until it holds (at once on the embedded chain)."""
    if probe():
        return
    if ctx.chain is not None:
        raise UserError(f"{what} did not happen on the embedded chain")
    start = time.monotonic()
    with click.progressbar(length=timeout, label=f"waiting for {what}", file=click.get_text_stream("stderr")) as bar:
        while time.monotonic() - start < timeout:
            time.sleep(POLL_SECONDS)
            bar.update(POLL_SECONDS)
            try:
                if probe():
                    return
            except Exception:  # a lite server hiccup: try again until the deadline
                pass
    raise UserError(f"{what} was not seen within {timeout} s; look at the registry on an explorer, then run "
                    "the same command again (it resumes: what exists is not sent twice)")


def send_one(ctx, wallet, msg: Message, registry: Address, network: str) -> Sent:
    """Send ``msg`` from ``wallet``, wait for its effect and report what it cost and did."""
    ctx.call(wallet.update())
    before = wallet.balance
    reg_before = ctx.call(read_account(ctx.provider, registry))
    next_id = None
    if msg.kind == "propose":
        next_id = R.RegistryReader(ctx.get_method, registry).proposals()[1]
    txs = ctx.call(ctx.send(wallet, msg.dest, msg.value, msg.body, state_init=msg.state_init, bounce=msg.bounce))

    if ctx.chain is None:  # testnet / mainnet: wait for the effect to show
        if msg.kind == "deploy":
            wait_until(ctx, f"the registry at {fmt_addr(registry, network)} to become active",
                       lambda: ctx.call(read_account(ctx.provider, registry)).active)
        else:
            rd = R.RegistryReader(ctx.get_method, registry)
            wait_until(ctx, f"the proposal to open at {fmt_addr(registry, network)}",
                       lambda: any(p.action.hash == msg.action.hash for p in rd.proposals()[0]))

    ctx.call(wallet.update())
    debit = before - wallet.balance
    reg_after = ctx.call(read_account(ctx.provider, registry))
    gain = reg_after.balance - reg_before.balance
    sent = Sent(msg, ok=True, wallet_debit=debit, registry_gain=gain, fees=debit - gain, fees_exact=False)

    if txs:  # the embedded chain: every transaction the message caused
        sent.fees_exact = True
        sent.fees = sum(t.total_fees + t.in_fwd_fee for t in txs)
        sent.wallet_tx = txs[0].hash.hex()
        sent.transactions = [{"account": t.account.to_str(is_user_friendly=False), "hash": t.hash.hex(),
                              "lt": t.lt, "success": t.success, "exit_code": t.exit_code} for t in txs]
        mine = [t for t in txs if t.account.hash_part == registry.hash_part and not t.bounced]
        if mine:
            sent.registry_tx = mine[0].hash.hex()
            if not mine[0].success:
                sent.ok = False
                sent.error = f"the registry refused it: error {R.describe_error(mine[0].exit_code)}"
        else:
            sent.ok = False
            sent.error = "the message did not reach the registry: " + "; ".join(t.describe() for t in txs)
    else:
        sent.wallet_tx = ctx.call(read_account(ctx.provider, wallet.address)).last_tx_hash
        sent.registry_tx = reg_after.last_tx_hash
    if msg.kind == "deploy" and sent.ok and not reg_after.active:
        sent.ok, sent.error = False, f"the registry is {reg_after.status} after the deploy message"
    if msg.kind == "propose" and sent.ok:
        rd = R.RegistryReader(ctx.get_method, registry)
        for p in rd.proposals()[0]:
            if p.action.hash == msg.action.hash and (next_id is None or p.id >= next_id):
                sent.proposal_id, sent.execute_after = p.id, p.execute_after
        if sent.proposal_id is None:
            sent.ok, sent.error = False, "the proposal is not open on the registry after sending it"
    return sent


def describe_cost(s: Sent) -> str:
    how = "" if s.fees_exact else " (wallet debit minus registry gain)"
    return (f"fees {fmt_ton(s.fees)} TON = {s.fees} nanoTON{how}; the wallet pays {fmt_ton(s.wallet_debit)} TON = "
            f"{s.wallet_debit} nanoTON, the registry's balance grows by {fmt_ton(s.registry_gain)} TON")

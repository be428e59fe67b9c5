"""Sending one planned message from the owner's wallet and finding out what it did.

The same code runs for a real deployment, for the measurement of a dry run on a snapshot of the
embedded chain and for the estimate on a fresh embedded chain, so a dry run's cost is the cost of
exactly what a real run sends.

On the embedded chain a message runs to completion before ``send`` returns, and the transactions it
caused are at hand: their fees are summed exactly and the registry's transaction says whether it was
accepted. On testnet and mainnet, ``Network.send`` waits (with progress) until the wallet's
seqno moves; then this module waits, again with progress, until the registry shows the effect (the
account active with the expected code, or the proposal open), and takes the transaction hashes from
the accounts' last transactions. Fees there are what the wallet paid minus what the registry gained.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

from pytoniq_core import Address

from node.chain import CocoonError
from wrappers import registry as R

from .plan import Message, fmt_addr, fmt_ton
from .report import Report
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


async def owner_wallet(net, keys, version: str, report: Report):
    """The owner's wallet on ``net``, deployed (and, on a development chain, funded from the faucet)."""
    def funded(address: Address, amount: int) -> None:
        where = "embedded chain" if net.chain is not None else "local chain"
        report.note(f"({where}) funded {address.to_str()} with {amount // 10**9} TON from the faucet")

    with report.waiting("deploying the wallet") as progress:
        return await net.wallet(keys, version, on_funded=funded, on_progress=progress)


async def wait_until(net, report: Report, what: str, probe: Callable[[], Awaitable[bool]],
                     timeout: int = WAIT_SECONDS) -> None:
    """Poll ``probe`` with progress until it holds (at once on a development chain)."""
    if await probe():
        return
    if net.dev:
        raise CocoonError(f"{what} did not happen on the {net.name} chain")
    start = time.monotonic()
    with report.waiting(f"waiting for {what}") as progress:
        while (waited := time.monotonic() - start) < timeout:
            if progress:
                progress(waited, timeout)
            await asyncio.sleep(POLL_SECONDS)
            try:
                if await probe():
                    return
            except Exception:  # a lite server hiccup: try again until the deadline
                pass
    raise CocoonError(f"{what} was not seen within {timeout} s; look at the registry on an explorer, then run "
                      "the same command again (it resumes: what exists is not sent twice)")


async def send_one(net, wallet, msg: Message, registry: Address, network: str, report: Report) -> Sent:
    """Send ``msg`` from ``wallet`` over ``net`` (a :class:`node.chain.Network`), wait for its effect
    and report what it cost and did."""
    await wallet.update()
    before = wallet.balance
    reg_before = await read_account(net.provider, registry)
    reg = net.contract(R.Registry, registry)
    next_id = None
    if msg.kind == "propose":
        next_id = (await reg.get_proposals())[1]
    with report.waiting("waiting for the transaction") as progress:
        txs = await net.send(wallet, msg.dest, msg.value, msg.body, state_init=msg.state_init, bounce=msg.bounce,
                             on_progress=progress)

    if not net.dev:  # testnet / mainnet: wait for the effect to show
        if msg.kind == "deploy":
            async def active() -> bool:
                return (await read_account(net.provider, registry)).active
            await wait_until(net, report, f"the registry at {fmt_addr(registry, network)} to become active", active)
        else:
            async def opened() -> bool:
                return any(p.action.hash == msg.action.hash for p in (await reg.get_proposals())[0])
            await wait_until(net, report, f"the proposal to open at {fmt_addr(registry, network)}", opened)

    await wallet.update()
    debit = before - wallet.balance
    reg_after = await read_account(net.provider, registry)
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
        sent.wallet_tx = (await read_account(net.provider, wallet.address)).last_tx_hash
        sent.registry_tx = reg_after.last_tx_hash
    if msg.kind == "deploy" and sent.ok and not reg_after.active:
        sent.ok, sent.error = False, f"the registry is {reg_after.status} after the deploy message"
    if msg.kind == "propose" and sent.ok:
        for p in (await reg.get_proposals())[0]:
            if p.action.hash == msg.action.hash and (next_id is None or p.id >= next_id):
                sent.proposal_id, sent.execute_after = p.id, p.execute_after
        if sent.proposal_id is None:
            sent.ok, sent.error = False, "the proposal is not open on the registry after sending it"
    return sent


def describe_cost(s: Sent) -> str:
    how = "" if s.fees_exact else " (wallet debit minus registry gain)"
    return (f"fees {fmt_ton(s.fees)} TON = {s.fees} nanoTON{how}; the wallet pays {fmt_ton(s.wallet_debit)} TON = "
            f"{s.wallet_debit} nanoTON, the registry's balance grows by {fmt_ton(s.registry_gain)} TON")

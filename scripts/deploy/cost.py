"""The cost of a plan without keeping anything.

* :func:`measure` (embedded chain): take a snapshot, send the plan exactly as a real run would,
  read the fees of every transaction, restore the snapshot. The cost is exact: a real run on the same
  chain state pays the same.
* :func:`estimate` (testnet, mainnet; offline): a fresh embedded chain, whose configuration carries
  mainnet's gas, storage and forward prices, with the owner's wallet funded and deployed on it, runs the
  same messages (same code, same initial data, same address). The result is an estimate: the real
  network's prices at the time, and the state of the owner's wallet, decide the real fees.
"""
from __future__ import annotations

import asyncio

from pytoniq_core import Address

from node.chainctx import Keys

from node.chainctx import open_wallet
from .plan import Message
from .send import Sent, send_one


class _Scratch:
    """Just enough of a ChainContext for :func:`send_one` over an in-memory embedded chain."""

    def __init__(self):
        from wrappers.chain.emulated import EmbeddedChain
        from wrappers.chain.provider import EmbeddedProvider

        self.chain = EmbeddedChain()
        self.provider = EmbeddedProvider(self.chain)

    def call(self, coro):
        return asyncio.run(coro)

    def get_method(self, address, method, stack):
        return self.chain.get_method(address, method, stack)

    async def send(self, wallet, dest, value, body=None, state_init=None, bounce=True):
        from pytoniq import WalletV4R2
        from pytoniq_core import Cell

        msg = WalletV4R2.create_wallet_internal_message(destination=dest, value=value, body=body or Cell.empty(),
                                                        state_init=state_init, bounce=bounce)
        await wallet.raw_transfer([msg])
        await wallet.update()
        return list(self.provider.last_sent)


def measure(ctx, keys: Keys, messages: list[Message], registry: Address, network: str) -> list[Sent]:
    """Run ``messages`` on a snapshot of the context's embedded chain and restore it."""
    chain = ctx.chain
    snap = chain.snapshot()
    try:
        wallet = ctx.call(ctx.wallet(keys))
        return [send_one(ctx, wallet, m, registry, network) for m in messages]
    finally:
        chain.restore(snap)


def estimate(keys: Keys, wallet_version: str, network: str, messages: list[Message], registry: Address,
             funding: int) -> list[Sent]:
    """Run ``messages`` on a fresh embedded chain with mainnet prices (no network access)."""
    s = _Scratch()

    async def wallet():
        w = await open_wallet(s.provider, keys, wallet_version, network)
        s.chain.mint(w.address, funding)
        await w.update()
        await w.send_init_external()
        await w.update()
        return w

    w = s.call(wallet())
    return [send_one(s, w, m, registry, network) for m in messages]

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

from pytoniq_core import Address

from node.chain import Keys, Network

from .plan import Message
from .report import Report
from .send import Sent, owner_wallet, send_one


async def measure(net: Network, keys: Keys, wallet_version: str, messages: list[Message], registry: Address,
                  network: str, report: Report) -> list[Sent]:
    """Run ``messages`` on a snapshot of ``net``'s embedded chain and restore it."""
    snap = net.chain.snapshot()
    try:
        wallet = await owner_wallet(net, keys, wallet_version, report)
        return [await send_one(net, wallet, m, registry, network, report) for m in messages]
    finally:
        net.chain.restore(snap)


async def estimate(keys: Keys, wallet_version: str, network: str, messages: list[Message], registry: Address,
                   funding: int, report: Report) -> list[Sent]:
    """Run ``messages`` on a fresh embedded chain with mainnet prices (no network access)."""
    from wrappers.chain.emulated import EmbeddedChain
    from wrappers.chain.provider import EmbeddedProvider

    chain = EmbeddedChain()
    # named after the network the estimate is for: a v5r1 wallet signs for that network's global id
    net = Network(network, EmbeddedProvider(chain), chain=chain, dev=True)
    w = await net.wallet(keys, wallet_version, fund=False, deploy=False)
    chain.mint(w.address, funding)
    await w.update()
    await w.send_init_external()
    await w.update()
    return [await send_one(net, w, m, registry, network, report) for m in messages]

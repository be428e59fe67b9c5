"""The registry snapshot read from the registry contract: the adapter between the chain and
:class:`~node.tee.registry_source.SnapshotSource`.

``registry_fetch(call, address)`` returns the coroutine a ``SnapshotSource`` refreshes with. ``call``
is any synchronous ``(address, method, stack) -> list`` get-method runner: the embedded chain's
``get_method`` or a :class:`~node.cli.context.ChainContext`'s ``get_method`` for testnet and mainnet
(which runs pytoniq's lite client on its own loop). Reads run in a worker thread so a slow lite
server never blocks the event loop that serves connections.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from pytoniq_core import Address

from wrappers.registry import RegistryReader

from .registry_source import RegistrySnapshot


def read_snapshot(call: Callable, address: Address) -> RegistrySnapshot:
    rd = RegistryReader(call, address)
    trust = rd.trust()
    as_bytes = lambda hs: [h.to_bytes(32, "big") for h in hs]
    return RegistrySnapshot(worker_image_hashes=as_bytes(trust["worker_images"]),
                            proxy_image_hashes=as_bytes(trust["proxy_images"]),
                            model_hashes=as_bytes(trust["models"]),
                            is_test=rd.params().is_test, version=rd.version())


def registry_fetch(call: Callable, address: Address) -> Callable[[], Awaitable[RegistrySnapshot]]:
    async def fetch() -> RegistrySnapshot:
        return await asyncio.to_thread(read_snapshot, call, address)
    return fetch

"""What the gateway reads from and sends to the chain, over :mod:`node.chain`: the registry (trust
roots, prices, proxies, child codes), workers' stakes, its escrow, and the wallet's escrow messages.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Callable, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq_core import Address

from node.chain import CocoonError, Keys, Network
from node.tee.registry_source import RegistrySnapshot
from wrappers import escrow as E
from wrappers import keys as K
from wrappers import registry as R
from wrappers import stake as S

PAYMENT_KEY_DOMAIN = b"cocoon/client/payment-key/v1"


def payment_key(wallet: Keys, counter: int) -> Ed25519PrivateKey:
    """The payer key of the client's ``counter``-th channel (docs/PROTOCOL.md §2): HMAC-SHA256 keyed by
    the wallet's seed over a domain tag and the counter. Nothing but the counter needs keeping."""
    seed = hmac.new(wallet.private[:32], PAYMENT_KEY_DOMAIN + counter.to_bytes(8, "big"), hashlib.sha256).digest()
    return K.signing_key(seed)


def owner_address(owner_hash: int) -> Address:
    """A proxy's owner (workchain 0) from the registry's owner hash."""
    return Address((0, owner_hash.to_bytes(32, "big")))


def raw(a: Address) -> str:
    return a.to_str(is_user_friendly=False)


@dataclass
class RegistryView:
    params: R.NetworkParams
    codes: R.ChildCodes
    snapshot: RegistrySnapshot
    proxies: list[R.ProxyInfo]
    read_at: float


class ClientChain:
    """The gateway's chain access. ``wallet`` is opened lazily (only money needs it)."""

    def __init__(self, net: Network, registry: Address, keys: Optional[Keys] = None, wallet_version: str = "v4r2"):
        self.net, self.registry, self.keys, self.wallet_version = net, registry, keys, wallet_version
        self._wallet = None
        self._send_lock = asyncio.Lock()

    async def read_registry(self) -> RegistryView:
        rd = self.net.contract(R.Registry, self.registry)
        trust = await rd.get_trust()
        params = await rd.get_params()
        as_bytes = lambda hs: [h.to_bytes(32, "big") for h in hs]
        snap = RegistrySnapshot(worker_image_hashes=as_bytes(trust["worker_images"]),
                                proxy_image_hashes=as_bytes(trust["proxy_images"]),
                                model_hashes=as_bytes(trust["models"]), is_test=params.is_test,
                                version=await rd.get_version())
        return RegistryView(params, await rd.get_child_codes(), snap, await rd.get_proxies(), time.time())

    async def stake(self, address: Address) -> Optional[S.StakeState]:
        """The stake's state; None when no active contract is there. The account's status (a whole
        account state to fetch and parse) is read only when the get-method fails."""
        try:
            return await self.net.contract(S.Stake, address).get_state()
        except CocoonError:
            if await self.net.status(address) != "active":
                return None
            raise

    async def escrow(self, address: Address) -> Optional[E.Channel]:
        if await self.net.status(address) != "active":
            return None
        return await self.net.contract(E.Escrow, address).get_channel()

    async def wallet(self):
        if self.keys is None:
            raise CocoonError("no wallet key: pass --mnemonic-file or --key-file (or set COCOON_MNEMONIC)")
        if self._wallet is None:
            self._wallet = await self.net.wallet(self.keys, self.wallet_version)
        return self._wallet

    async def wallet_address(self) -> Address:
        return (await self.wallet()).address

    async def open_escrow(self, code, payee: Address, payee_key: int, payer_key: int, amount: int,
                          timeout: float = 120.0, on_progress: Optional[Callable[[str], None]] = None) -> Address:
        """Deploy and open the escrow with ``amount``; returns once the registry answered and it is open."""
        async with self._send_lock:
            w = await self.wallet()
            si = E.state_init(code, self.registry, w.address, payee, payer_key)
            addr = Address((0, si.serialize().hash))
            ch = await self.escrow(addr)
            if ch is None or ch.state == E.State.NEW:
                if on_progress:
                    on_progress(f"opening the escrow {raw(addr)} with {amount / 1e9:g} TON")
                await self.net.send(w, addr, E.open_value(amount), E.open_body(amount, payee_key), state_init=si)
            return await self._wait_open(addr, timeout)

    async def _wait_open(self, addr: Address, timeout: float) -> Address:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            ch = await self.escrow(addr)
            if ch is not None and ch.state == E.State.OPEN:
                return addr
            if ch is not None and ch.state in (E.State.CLOSING, E.State.CLOSED):
                raise CocoonError(f"the escrow {raw(addr)} is {ch.state_name}; it cannot be used")
            await asyncio.sleep(0.2)
        raise CocoonError(f"the escrow {raw(addr)} did not open within {int(timeout)} s (was the deposit below "
                          "the registry's minimum?)")

    async def top_up(self, addr: Address, amount: int) -> None:
        async with self._send_lock:
            w = await self.wallet()
            await self.net.send(w, addr, amount + E.TOP_UP_FEE + E.MARGIN, E.top_up_body(amount))

    async def request_close(self, addr: Address) -> None:
        async with self._send_lock:
            w = await self.wallet()
            await self.net.send(w, addr, E.REQUEST_FEE + E.MARGIN, E.request_close_body())

    async def finish(self, addr: Address) -> None:
        async with self._send_lock:
            w = await self.wallet()
            await self.net.send(w, addr, E.FINISH_FEE + E.MARGIN, E.finish_body())

"""What the worker reads from and sends to the chain: the registry snapshot, its own stake, the
proxy's registration, the proxy->worker channel, and claims.

On ``embedded`` the chain lives in a state file other commands write; the worker reloads it when the
file changes and never writes it except after its own claim. Every expected failure is a
:class:`WorkerError` with a one-line message.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pytoniq_core import Address

from node.chain import CocoonError, Keys, open_network

from node.tee.registry_source import RegistrySnapshot
from node.payments import vouchers as V
from wrappers import escrow as E
from wrappers import registry as R
from wrappers import stake as S


class WorkerError(Exception):
    """A start-up check or a chain operation failed; the text is the one-line message."""


@dataclass(frozen=True)
class StakeInfo:
    address: Address
    active: int
    minimum: int
    operator_key: int
    is_active: bool


class WorkerChain:
    def __init__(self, network: str, registry: Address, state_file: Optional[str] = None):
        self.network, self.registry = network, registry
        self.state_file = state_file
        self._net = None
        self._mtime: Optional[float] = None

    async def net(self):
        if self.network == "embedded":
            try:
                m = os.stat(self.state_file).st_mtime_ns if self.state_file else None
            except OSError:
                m = None
            if self._net is None or m != self._mtime:
                if self._net is not None:
                    await self._net.close(save=False)
                self._net = await open_network("embedded", self.state_file)
                self._mtime = m
            return self._net
        if self._net is None:
            try:
                self._net = await open_network(self.network)
            except CocoonError as e:
                raise WorkerError(str(e)) from None
        return self._net

    async def close(self) -> None:
        if self._net is not None:
            await self._net.close(save=False)
            self._net = None

    async def _reg(self):
        net = await self.net()
        return net.contract(R.Registry, self.registry)

    async def snapshot(self) -> RegistrySnapshot:
        reg = await self._reg()
        try:
            trust = await reg.get_trust()
            params = await reg.get_params()
            version = await reg.get_version()
        except Exception as e:
            raise WorkerError(f"cannot read the registry {self.registry.to_str()}: {e}") from None
        as_bytes = lambda hs: [h.to_bytes(32, "big") for h in hs]
        return RegistrySnapshot(worker_image_hashes=as_bytes(trust["worker_images"]),
                                proxy_image_hashes=as_bytes(trust["proxy_images"]),
                                model_hashes=as_bytes(trust["models"]), is_test=params.is_test, version=version)

    async def params(self) -> R.NetworkParams:
        return await (await self._reg()).get_params()

    async def stake(self, owner: Address) -> StakeInfo:
        reg = await self._reg()
        params = await reg.get_params()
        addr = await reg.get_stake_address(owner, S.ROLE_WORKER)
        net = await self.net()
        if await net.status(addr) != "active":
            raise WorkerError(f"the worker stake {addr.to_str()} of {owner.to_str()} is not deployed: deposit with "
                              "`cocoon stake deposit --role worker`")
        st = await net.contract(S.Stake, addr).get_state()
        return StakeInfo(addr, st.active, params.staking.min_worker_stake, st.operator_key, st.is_active)

    async def check_stake(self, owner: Address, operator_key: int) -> StakeInfo:
        """Active, at least the minimum, bound to ``operator_key``; else WorkerError."""
        info = await self.stake(owner)
        if info.active < info.minimum:
            raise WorkerError(f"the worker stake {info.address.to_str()} holds {info.active / 1e9:g} TON, below the "
                              f"minimum of {info.minimum / 1e9:g} TON: deposit more")
        if not info.is_active:
            raise WorkerError(f"the worker stake {info.address.to_str()} is not active (jailed, slashed or its "
                              "parameters not yet received)")
        if info.operator_key != operator_key:
            raise WorkerError(f"the worker stake {info.address.to_str()} is bound to another operator key "
                              f"({info.operator_key:064x}); run `cocoon stake set-operator` with this worker's key "
                              f"({operator_key:064x})")
        return info

    async def proxy(self, owner: Optional[Address]) -> R.ProxyInfo:
        """The named proxy's registration, or the first active one."""
        reg = await self._reg()
        if owner is not None:
            p = await reg.get_proxy(owner)
            if p is None:
                raise WorkerError(f"no proxy owned by {owner.to_str()} is registered in the registry")
            if not p.active:
                raise WorkerError(f"the proxy owned by {owner.to_str()} is registered but not active")
            return p
        for p in await reg.get_proxies():
            if p.active:
                return p
        raise WorkerError("the registry lists no active proxy; name one with --proxy")

    async def channel(self, address: Address) -> Optional[E.Channel]:
        net = await self.net()
        if await net.status(address) != "active":
            return None
        return await net.contract(E.Escrow, address).get_channel()

    async def channel_keys(self, address: Address) -> tuple[int, int]:
        net = await self.net()
        return await net.contract(E.Escrow, address).get_keys()

    async def expected_channel(self, proxy_owner: Address, worker_owner: Address, proxy_key: int) -> Address:
        return await (await self._reg()).get_escrow_address(proxy_owner, worker_owner, proxy_key)

    async def now(self) -> int:
        return await (await self.net()).now()

    async def claim(self, hot: Keys, voucher: V.Voucher, deficit: int = 0) -> None:
        """Send a claim from the hot wallet (fee + margin + storage deficit attached)."""
        net = await self.net()
        try:
            w = await net.wallet(hot)
            await net.send(w, voucher.channel, E.CLAIM_FEE + E.MARGIN + deficit, E.claim_body(voucher))
        except CocoonError as e:
            raise WorkerError(f"the claim on {voucher.channel.to_str()} failed: {e}") from None
        if self.network == "embedded":
            net.save()
            self._mtime = os.stat(self.state_file).st_mtime_ns if self.state_file else None


def model_hash(path: str | Path) -> bytes:
    """SHA-256 of the model file: the hash the registry allows."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()

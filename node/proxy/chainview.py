"""What the proxy reads from and sends to the chain, over one :class:`node.chain.Network`.

Reads go through the wrappers' readers (``net.reader``); sends go through the proxy's hot wallet,
one at a time (a wallet's seqno orders its messages), and return the transactions they caused where
the network can tell, so fees are measured rather than guessed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Optional

from pytoniq_core import Address

from node.chain import CocoonError, Network
from node.tee.registry_source import RegistrySnapshot
from wrappers import escrow as E
from wrappers import registry as R
from wrappers import reputation as P
from wrappers import stake as S

log = logging.getLogger(__name__)


def raw(a: Address | str) -> str:
    return (Address(a) if isinstance(a, str) else a).to_str(is_user_friendly=False)


@dataclass
class ClientChannel:
    """A client channel as the chain shows it, with the checks the proxy made."""
    address: str
    payer: str
    payer_key: int
    state: E.Channel
    read_at: float

    @property
    def limit(self) -> int:
        """The most the channel can pay out in total: claimed + what it holds, less a withdrawal the
        payer asked for (it leaves when its notice ends)."""
        return self.state.claimed + max(self.state.held - self.state.pending_withdrawal, 0)


class ChainView:
    def __init__(self, net: Network, registry: Address, owner: Address, wallet, operator_public: int):
        self.net, self.registry, self.owner, self.wallet = net, registry, owner, wallet
        self.operator_public = operator_public
        self.reg = net.contract(R.Registry, registry)
        self.codes: Optional[R.ChildCodes] = None
        self.params: Optional[R.NetworkParams] = None
        self._send_lock = asyncio.Lock()

    async def load(self) -> None:
        self.codes = await self.reg.get_child_codes()
        self.params = await self.reg.get_params()

    @property
    def economics(self) -> R.Economics:
        assert self.params is not None
        return self.params.economics

    # ------------------------------------------------------------------------ registry
    async def snapshot(self) -> RegistrySnapshot:
        trust = await self.reg.get_trust()
        params = await self.reg.get_params()
        self.params = params
        b = lambda hs: [h.to_bytes(32, "big") for h in hs]  # noqa: E731
        return RegistrySnapshot(worker_image_hashes=b(trust["worker_images"]), proxy_image_hashes=b(trust["proxy_images"]),
                                model_hashes=b(trust["models"]), is_test=params.is_test,
                                version=await self.reg.get_version())

    async def proxy_info(self) -> Optional[R.ProxyInfo]:
        return await self.reg.get_proxy(self.owner)

    # ------------------------------------------------------------------------ stakes and reputation
    def stake_address(self, owner: Address, role: int) -> Address:
        assert self.codes is not None and self.codes.stake is not None
        return S.stake_address(self.codes.stake, self.registry, owner, role)

    async def worker_stake(self, owner: Address) -> Optional[S.StakeState]:
        try:
            return await self.net.contract(S.Stake, self.stake_address(owner, S.ROLE_WORKER)).get_state()
        except CocoonError:
            return None

    async def score(self, worker_owner: Address) -> int:
        """The worker's reputation score now (the neutral prior's when it has no record yet)."""
        assert self.codes is not None and self.codes.reputation is not None
        addr = P.reputation_address(self.codes.reputation, self.registry, worker_owner)
        try:
            st = await self.net.contract(P.Reputation, addr).get_score_state()
        except CocoonError:
            st = P.ScoreState()
        return st.score_at(await self.net.now())

    # ------------------------------------------------------------------------ client channels
    async def client_channel(self, address: str) -> ClientChannel:
        """Read a client's channel and check it pays this proxy (CocoonError with the reason)."""
        addr = Address(address)
        rd = self.net.contract(E.Escrow, addr)
        if await self.net.status(addr) != "active":
            raise CocoonError(f"no channel is deployed at {address}")
        reg, payer, payee = await rd.get_parties()
        if raw(reg) != raw(self.registry):
            raise CocoonError("the channel belongs to another registry")
        if raw(payee) != raw(self.owner):
            raise CocoonError(f"the channel pays {raw(payee)}, not this proxy's owner {raw(self.owner)}")
        payer_key, payee_key = await rd.get_keys()
        if payee_key != self.operator_public:
            raise CocoonError("the channel names another payee key than this proxy's operator key")
        state = await rd.get_channel()
        return ClientChannel(raw(addr), raw(payer), payer_key, state, time.monotonic())

    async def channel_state(self, address: str) -> E.Channel:
        return await self.net.contract(E.Escrow, Address(address)).get_channel()

    # ------------------------------------------------------------------------ sending
    async def send(self, dest: Address, value: int, body, state_init=None, before=None) -> tuple[list, int]:
        """Send from the hot wallet, one message at a time; ``before(seqno)`` runs first (the claim
        is recorded with the seqno its message uses). Returns (transactions, that seqno)."""
        async with self._send_lock:
            seqno = await self.wallet.get_seqno()
            if before is not None:
                await before(seqno)
            txs = await self.net.send(self.wallet, dest, value, body, state_init)
            return txs, seqno

    async def wallet_seqno(self) -> int:
        return await self.wallet.get_seqno()

    @staticmethod
    def fees(txs: list) -> int:
        return sum(getattr(t, "total_fees", 0) for t in txs)

    # ------------------------------------------------------------------------ channels to workers
    def worker_channel(self, worker_owner: Address) -> tuple[Address, object]:
        assert self.codes is not None and self.codes.escrow is not None
        si = E.state_init(self.codes.escrow, self.registry, self.wallet.address, worker_owner, self.operator_public)
        return R.address_of(si), si

    async def open_worker_channel(self, worker_owner: Address, worker_key: int, amount: int) -> tuple[Address, int]:
        """Open (deploying it) or top up the channel to a worker so it holds at least ``amount``
        beyond what was claimed; returns (address, deposited)."""
        addr, si = self.worker_channel(worker_owner)
        status = await self.net.status(addr)
        if status != "active":
            await self.send(addr, E.open_value(amount), E.open_body(amount, worker_key), state_init=si)
        else:
            rd = self.net.contract(E.Escrow, addr)
            ch = await rd.get_channel()
            if ch.state == E.State.NEW:
                await self.send(addr, E.open_value(amount), E.open_body(amount, worker_key))
        ch = await self.net.contract(E.Escrow, addr).get_channel()
        return addr, ch.deposited

    async def top_up_worker_channel(self, addr: Address, amount: int) -> int:
        await self.send(addr, amount + E.TOP_UP_FEE + E.MARGIN, E.top_up_body(amount))
        return (await self.net.contract(E.Escrow, addr).get_channel()).deposited

    async def worker_channel_keys(self, addr: Address) -> Optional[tuple[int, int]]:
        try:
            return await self.net.contract(E.Escrow, addr).get_keys()
        except CocoonError:
            return None

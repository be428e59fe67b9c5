"""Opening a network and acting on it: provider, wallets, send-and-wait, reading contracts.

One code path for every network: a pytoniq wallet (v4r2 or v5r1) on a provider with pytoniq's
interface (``raw_get_account_state``, ``get_account_state``, ``run_get_method``,
``raw_send_message``). The provider is the in-process embedded chain (kept in a state file),
the chain server or any toncenter-v2 API over HTTP (:mod:`wrappers.chain.http`), or pytoniq's lite
clients for testnet and mainnet.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Callable, Optional, Union

from pytoniq_core import Address, Cell
from pytoniq_core.tlb.account import StateInit

from wrappers.chain.contract import account_state

from .errors import CocoonError
from .keys import Keys

NETWORKS = ("embedded", "local", "testnet", "mainnet")
LOCAL_URL = "http://127.0.0.1:8081"
# On a development chain a wallet with less than a tenth of this is topped up from the faucet, so
# a fresh mnemonic can act at once. Never on a real network.
DEV_FUNDING = 10_000 * 10**9
WALLET_VERSIONS = ("v4r2", "v5r1")
# Time steps on development chains: at most ten years at once, and never past 2100, so that a
# contract's now + delay stays within the 32 bits TON keeps times in.
MAX_ADVANCE = 10 * 365 * 86400
MAX_NOW = 4_102_444_800  # 2100-01-01 00:00:00 UTC

Progress = Callable[[float, float], None]  # (seconds waited, timeout)


def check_network(name: str) -> str:
    """``name`` if it names a network (one of :data:`NETWORKS` or an http(s) URL), else CocoonError."""
    if name in NETWORKS or name.startswith(("http://", "https://")):
        return name
    raise CocoonError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)} or an http(s):// URL")


def network_global_id(network: str) -> int:
    """The global id a v5r1 wallet signs for (config param 19): -3 on testnet, -239 elsewhere."""
    return -3 if network == "testnet" else -239


async def open_wallet(provider, keys: Keys, version: str, network: str):
    """The pytoniq wallet of ``keys`` on ``provider``: v4r2, or v5r1 for ``network``."""
    from pytoniq import WalletV4R2, WalletV5R1

    if version not in WALLET_VERSIONS:
        raise CocoonError(f"unknown wallet version {version!r}; choose v4r2 or v5r1")
    if version == "v5r1":
        return await WalletV5R1.from_private_key(provider, keys.private, network_global_id=network_global_id(network))
    # pytoniq's from_private_key defaults to version="v3r2" whatever the class: name v4r2 explicitly
    return await WalletV4R2.from_private_key(provider, keys.private, version="v4r2")


class Network:
    """An open network. ``chain`` is the :class:`~wrappers.chain.emulated.EmbeddedChain` on the
    embedded network (None elsewhere); ``dev`` is true where the faucet and time travel exist
    (the embedded chain and the chain server)."""

    def __init__(self, name: str, provider, *, chain=None, state_file: Optional[Path] = None, dev: bool = False):
        self.name, self.provider, self.chain, self.state_file, self.dev = name, provider, chain, state_file, dev
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def http(self) -> bool:
        return self.name == "local" or self.name.startswith(("http://", "https://"))

    # ------------------------------------------------------------------------ reading
    async def now(self) -> int:
        """The chain's time: the embedded chain's clock, the chain server's, or the wall clock."""
        if self.chain is not None:
            return self.chain.now
        if self.dev:
            return await self.provider.dev_now()
        return int(time.time())

    async def state(self, address: Address) -> tuple[str, Optional[Cell], Optional[Cell]]:
        """(status, code, data); status is 'nonexist', 'uninit', 'active' or 'frozen'."""
        if self.chain is not None:
            return self.chain.state(address)
        acc, _ = await self.provider.raw_get_account_state(address)
        return account_state(acc)

    async def status(self, address: Address) -> str:
        return (await self.state(address))[0]

    async def balance(self, address: Address) -> int:
        if self.chain is not None:
            return self.chain.balance(address)
        return (await self.provider.get_account_state(address)).balance

    async def get_method(self, address: Address, method: Union[str, int], stack: Optional[list] = None) -> list:
        try:
            return await self.provider.run_get_method(address, method, list(stack or []))
        except CocoonError:
            raise
        except Exception as e:
            from wrappers.chain.getmethod import GetMethodError

            if isinstance(e, GetMethodError):
                raise CocoonError(f"{e}; is that the right contract address and network?") from None
            raise CocoonError(f"get-method {method!r} of {address.to_str()} failed: {e}") from None

    @property
    def contract_provider(self) -> "_CheckedProvider":
        """The provider for contract objects (:mod:`wrappers.chain.contract`): ``provider``, with a
        failing get-method reported as a :class:`CocoonError`."""
        return _CheckedProvider(self)

    def contract(self, contract_cls: type, address: Address):
        """``contract_cls(provider, address)`` over this network (``Registry``, ``Stake``...)."""
        return contract_cls(self.contract_provider, address)

    def sender(self, wallet, on_progress: Optional[Progress] = None, timeout: float = 90.0) -> "WalletSender":
        """``wallet`` as the sender of contract objects' ``send_*``: each message goes through
        :meth:`send` (waits for the seqno, returns the transactions where the network tells)."""
        return WalletSender(self, wallet, on_progress, timeout)

    # ------------------------------------------------------------------------ development chains
    def _need_dev(self, what: str) -> None:
        if not self.dev:
            raise CocoonError(f"{what} exists only on the embedded and local chains, not on {self.name}")

    async def fund(self, address: Address, amount: int) -> None:
        """Send ``amount`` nanoTON from the faucet (development chains only)."""
        self._need_dev("the faucet")
        if self.chain is not None:
            self.chain.mint(address, amount)
        else:
            await self.provider.dev_fund(address, amount)

    async def advance(self, seconds: int) -> int:
        """Move the chain's time forward; returns the new time (development chains only)."""
        self._need_dev("moving time")
        if seconds < 0:
            raise CocoonError("time only moves forward")
        if self.chain is not None:
            if seconds > MAX_ADVANCE or self.chain.now + seconds > MAX_NOW:
                raise CocoonError(f"at most {MAX_ADVANCE} s (ten years) a step, and never past {MAX_NOW}: "
                                  "contracts add delays to the time and must stay within 32 bits")
            return self.chain.advance(seconds)
        return await self.provider.dev_advance(seconds)

    # ------------------------------------------------------------------------ wallets and sending
    async def wallet(self, keys: Keys, version: str = "v4r2", *, fund: bool = True, deploy: bool = True,
                     on_funded: Optional[Callable[[Address, int], None]] = None, on_progress: Optional[Progress] = None):
        """The pytoniq wallet of ``keys``, deployed if it is not yet (``deploy``). On a development
        chain a wallet short of money is first topped up from the faucet (``fund``;
        ``on_funded(address, amount)`` is told)."""
        w = await open_wallet(self.provider, keys, version, self.name)
        if self.dev and fund and w.balance < DEV_FUNDING // 10:
            await self.fund(w.address, DEV_FUNDING)
            if on_funded:
                on_funded(w.address, DEV_FUNDING)
            await w.update()
        if deploy and not w.is_active:
            await self._send_external(w.send_init_external())
            await self.wait_seqno(w, 0, on_progress=on_progress)
            await w.update()
        return w

    async def send(self, wallet, dest: Address, value: int, body: Optional[Cell] = None,
                   state_init: Optional[StateInit] = None, bounce: bool = True, *,
                   on_progress: Optional[Progress] = None, timeout: float = 90.0) -> list:
        """Send one message from ``wallet`` and wait until the wallet's seqno moves (the message left).
        Returns the transactions it caused as :class:`~wrappers.chain.records.TxRecord` where the
        network can tell (the embedded chain and the chain server), else an empty list. Sends from
        one wallet are serialized (safe to call from concurrent tasks)."""
        key = wallet.address.to_str(is_user_friendly=False)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one message at a time per wallet: each needs the seqno the previous one left
            return await self._send(wallet, dest, value, body, state_init, bounce, on_progress, timeout)

    async def _send(self, wallet, dest, value, body, state_init, bounce, on_progress, timeout) -> list:
        from pytoniq import WalletV4R2

        await wallet.update()
        if wallet.balance < value:
            raise CocoonError(f"the wallet {wallet.address.to_str()} holds {wallet.balance / 1e9:.4f} TON, "
                              f"less than the {value / 1e9:.4f} TON this needs; top it up first")
        seqno = await wallet.get_seqno()
        msg = WalletV4R2.create_wallet_internal_message(destination=dest, value=value, body=body or Cell.empty(),
                                                        state_init=state_init, bounce=bounce)
        # on a development chain the clock may run ahead of the wall clock (time travel): the message
        # must not have expired by the chain's time
        valid_until = max(int(time.time()), await self.now()) + 60 if self.dev else None
        body = wallet.raw_create_transfer_msg(private_key=wallet.private_key, seqno=seqno, wallet_id=wallet.wallet_id,
                                              messages=[msg], valid_until=valid_until)
        txs = await self._send_external(wallet.send_external(body=body))
        await self.wait_seqno(wallet, seqno, timeout, on_progress)
        await wallet.update()
        return txs

    async def _send_external(self, sending) -> list:
        if self.chain is not None:
            await sending
            return list(self.provider.last_sent)
        from wrappers.chain.http import ApiError

        try:
            await sending
        except ApiError as e:
            raise CocoonError(f"the network refused the message: {e}") from None
        return list(self.provider.last_sent) if self.http and self.dev else []

    async def wait_seqno(self, wallet, old: int, timeout: float = 90.0, on_progress: Optional[Progress] = None) -> None:
        """Wait until ``wallet``'s seqno is above ``old``; ``on_progress(waited, timeout)`` after each poll."""
        if self.chain is not None:
            return
        start = time.monotonic()
        pause = 0.02 if self.dev else 1.0
        while (waited := time.monotonic() - start) < timeout:
            try:
                if await wallet.get_seqno() > old:
                    return
            except Exception:
                pass
            if on_progress:
                on_progress(waited, timeout)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 3.0)
        raise CocoonError(f"the transaction was not confirmed within {int(timeout)} s; check the wallet on an "
                          "explorer before sending again")

    # ------------------------------------------------------------------------ lifecycle
    def save(self) -> None:
        """Write the embedded chain to its state file (no-op elsewhere)."""
        if self.chain is not None and self.state_file is not None:
            self.chain.save(self.state_file)

    async def close(self, save: bool = True) -> None:
        if save:
            self.save()
        close = getattr(self.provider, "close_all", None) or getattr(self.provider, "close", None)
        if close is not None:
            await close()


class _CheckedProvider:
    """The network's provider with get-methods through :meth:`Network.get_method`."""

    def __init__(self, net: Network):
        self._net = net

    async def run_get_method(self, address, method, stack, block=None) -> list:
        return await self._net.get_method(address, method, stack)

    def __getattr__(self, name: str):
        return getattr(self._net.provider, name)


class WalletSender:
    """A wallet on a :class:`Network` as a :class:`~wrappers.chain.contract.Sender`."""

    def __init__(self, net: Network, wallet, on_progress: Optional[Progress] = None, timeout: float = 90.0):
        self.net, self.wallet, self.on_progress, self.timeout = net, wallet, on_progress, timeout

    @property
    def address(self) -> Address:
        return self.wallet.address

    async def send_message(self, dest: Address, value: int, body: Optional[Cell] = None, *,
                           state_init: Optional[StateInit] = None, bounce: bool = True) -> list:
        return await self.net.send(self.wallet, dest, value, body, state_init, bounce, on_progress=self.on_progress,
                                   timeout=self.timeout)


async def open_network(name: str, state_file: Optional[Union[str, Path]] = None, api_key: Optional[str] = None,
                       log: Optional[Callable[[str], None]] = None) -> Network:
    """Open ``name``: ``embedded`` (a chain in this process, loaded from ``state_file`` if it
    exists), ``local`` (the chain server at :data:`LOCAL_URL`), an ``http(s)://`` toncenter-v2 URL
    (``api_key`` for toncenter), ``testnet`` or ``mainnet`` (pytoniq's lite clients)."""
    check_network(name)
    if name == "embedded":
        from wrappers.chain.emulated import EmbeddedChain
        from wrappers.chain.provider import EmbeddedProvider

        path = Path(state_file) if state_file is not None else None
        try:
            chain = EmbeddedChain.load(path) if path is not None and path.exists() else EmbeddedChain()
        except Exception as e:
            raise CocoonError(f"cannot read the embedded chain in {path}: {e}") from None
        return Network(name, EmbeddedProvider(chain), chain=chain, state_file=path, dev=True)
    if name == "local" or name.startswith(("http://", "https://")):
        from wrappers.chain.http import ApiError, ToncenterProvider

        url = LOCAL_URL if name == "local" else name
        provider = ToncenterProvider(url, api_key=api_key)
        try:
            dev = await provider.dev_available()
            await provider.get_masterchain_info()
        except (ApiError, OSError, asyncio.TimeoutError) as e:
            await provider.close()
            hint = " (start it with `cocoon chain serve`)" if name == "local" else ""
            raise CocoonError(f"cannot reach the chain API at {url}{hint}: {e}") from None
        provider.trace = dev  # the chain server tells which transactions a message caused
        return Network(name, provider, dev=dev)
    from pytoniq import LiteBalancer

    if log:
        log(f"connecting to {name} lite servers...")
    try:
        provider = (LiteBalancer.from_mainnet_config(trust_level=2) if name == "mainnet"
                    else LiteBalancer.from_testnet_config(trust_level=2))
        await provider.start_up()
    except Exception as e:  # network failures of every kind end up here
        raise CocoonError(f"cannot reach {name}: {e}. Check the network connection.") from None
    return Network(name, provider)

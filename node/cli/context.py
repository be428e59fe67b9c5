"""The CLI's adapter to :mod:`node.chain`: click options, a synchronous context, progress bars and
one-line errors.

Chain access itself (networks, keys, wallets, send-and-wait) lives in :mod:`node.chain`, which is
async and has no click. Commands are synchronous, so :class:`ChainContext` runs a
:class:`~node.chain.Network` on an event loop in a background thread and :meth:`ChainContext.call`
runs a coroutine there; a :class:`~node.chain.CocoonError` becomes a :class:`UserError`, printed as
one line.

Commands act on contracts through :meth:`ChainContext.contract` (the wrappers' contract objects,
used synchronously) and send through :meth:`ChainContext.sender`, the same way on every network.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Optional

import click
from pytoniq_core import Address, Cell
from pytoniq_core.tlb.account import StateInit

from node.chain import (DEV_FUNDING, NETWORKS, CocoonError, Keys, Network, check_network, network_global_id,
                        open_network, open_wallet)
from node.chain import keys as _keys

DEFAULT_STATE = Path(os.environ.get("COCOON_CHAIN_STATE", ".cocoon/chain.json"))
EMBEDDED_FUNDING = DEV_FUNDING

__all__ = ["DEFAULT_STATE", "NETWORKS", "EMBEDDED_FUNDING", "UserError", "Keys", "load_keys", "keys_from_words",
           "network_global_id", "open_wallet", "ChainContext", "chain_now", "guarded", "ProgressBar"]


class UserError(click.ClickException):
    """An expected failure: printed as one line with what to do, exit code 1."""


def load_keys(mnemonic_file: Optional[str], key_file: Optional[str]) -> Keys:
    try:
        return _keys.load_keys(mnemonic_file, key_file)
    except CocoonError as e:
        raise UserError(str(e)) from None


def keys_from_words(words: str, where: str) -> Keys:
    """Keys from a 24-word TON mnemonic; ``where`` names its source in the error, never the words."""
    try:
        return _keys.keys_from_words(words, where)
    except CocoonError as e:
        raise UserError(str(e)) from None


class ProgressBar:
    """A click progress bar on stderr, drawn from :mod:`node.chain`'s progress callbacks."""

    def __init__(self, label: str):
        self.label, self.bar, self.shown = label, None, 0

    def __call__(self, waited: float, timeout: float) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=int(timeout), label=self.label, file=click.get_text_stream("stderr"))
            self.bar.__enter__()
        step = int(waited) - self.shown
        if step > 0:
            self.bar.update(step)
            self.shown += step

    def done(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


class ChainContext:
    """Opened for one command: the network (``net``), its provider, and contract objects over it."""

    def __init__(self, network: str, state_file: Path = DEFAULT_STATE, wallet_version: str = "v4r2",
                 api_key: Optional[str] = None):
        try:
            check_network(network)
        except CocoonError as e:
            raise UserError(str(e)) from None
        self.network, self.state_file, self.wallet_version = network, Path(state_file), wallet_version
        self.api_key = api_key if api_key is not None else os.environ.get("COCOON_API_KEY")
        self.net: Optional[Network] = None
        self.provider = None
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro):
        try:
            if not self._thread.is_alive():  # the context is closed: a command reading a result afterwards
                return asyncio.run(self._once(coro))
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        except CocoonError as e:
            raise UserError(str(e)) from None

    async def _once(self, coro):
        try:
            return await coro
        finally:
            if self.net is not None:
                await self.net.close(save=False)  # only the HTTP session: the state was saved on exit

    def __enter__(self) -> "ChainContext":
        self.call(self.open())
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            # a refusal reported by the chain is a real outcome (fees were paid): keep it
            self.call(self.close(save=exc_type is None or issubclass(exc_type, UserError)))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------------ lifecycle
    async def open(self) -> "ChainContext":
        self.net = await open_network(self.network, self.state_file, api_key=self.api_key,
                                      log=lambda m: click.echo(m, err=True))
        self.provider = self.net.provider
        return self

    async def close(self, save: bool = True) -> None:
        if self.net is not None:
            await self.net.close(save=save)

    # ------------------------------------------------------------------------ reading
    def get_method(self, address: Address, method: str, stack: list) -> list:
        """Synchronous get-method for wrappers' readers, on every network."""
        return self.call(self.provider.run_get_method(address, method, stack))

    async def status(self, address: Address) -> str:
        return await self.net.status(address)

    def contract(self, contract_cls: type, address: Address):
        """``contract_cls(provider, address)`` (``Registry``, ``Stake``...) on this network, used
        synchronously: ``.read.params()``, ``.deployed``, ``.balance`` (:class:`~wrappers.chain.contract.Instant`)."""
        return self.instant(contract_cls(self.provider, address))

    def instant(self, contract):
        """A contract object built on :attr:`contract_provider` (``Stake.from_init(ctx.contract_provider,
        ...)``), used synchronously."""
        from wrappers.chain.contract import Instant

        return Instant(contract, self.call)

    @property
    def contract_provider(self):
        """The provider contract objects are built on: a failing get-method raises its own error
        (``GetMethodError``, with the exit code), which :func:`guarded` turns into one line."""
        return self.provider

    def sender(self, wallet) -> "_ProgressSender":
        """``wallet`` as the sender of contract objects' ``send_*``, with a progress bar while it waits."""
        return _ProgressSender(self, wallet)

    # ------------------------------------------------------------------------ signing and sending
    async def wallet(self, keys: Keys):
        def funded(address: Address, amount: int) -> None:
            where = "embedded chain" if self.network == "embedded" else "local chain"
            click.echo(f"({where}) funded {address.to_str()} with {amount // 10**9} TON from the faucet", err=True)

        progress = ProgressBar("deploying the wallet")
        try:
            return await self.net.wallet(keys, self.wallet_version, on_funded=funded, on_progress=progress)
        finally:
            progress.done()

    async def send(self, wallet, dest: Address, value: int, body: Optional[Cell] = None,
                   state_init: Optional[StateInit] = None, bounce: bool = True, timeout: float = 90.0):
        """Send one message from ``wallet`` and wait until the wallet's seqno moves (the message left).
        On the embedded chain and the chain server, returns the transactions it caused."""
        progress = ProgressBar("waiting for the transaction")
        try:
            return await self.net.send(wallet, dest, value, body, state_init, bounce, on_progress=progress,
                                       timeout=timeout)
        finally:
            progress.done()

    async def _wait_seqno(self, wallet, old: int, timeout: float = 90.0) -> None:
        progress = ProgressBar("waiting for the transaction")
        try:
            await self.net.wait_seqno(wallet, old, timeout, progress)
        finally:
            progress.done()


class _ProgressSender:
    """A wallet as the sender of contract objects, through :meth:`ChainContext.send` (progress bar)."""

    def __init__(self, ctx: "ChainContext", wallet):
        self.ctx, self.wallet = ctx, wallet

    @property
    def address(self) -> Address:
        return self.wallet.address

    async def send_message(self, dest: Address, value: int, body: Optional[Cell] = None, *,
                           state_init: Optional[StateInit] = None, bounce: bool = True) -> list:
        return await self.ctx.send(self.wallet, dest, value, body, state_init, bounce)


def chain_now(ctx: "ChainContext") -> int:
    """The chain's time: the embedded chain's (or chain server's) clock, or the wall clock."""
    return ctx.call(ctx.net.now())


def guarded(f):
    """Decorator for command bodies: expected failures become one-line errors, never a traceback."""
    import functools

    @functools.wraps(f)
    def wrapper(*a, **kw):
        try:
            return f(*a, **kw)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except CocoonError as e:
            raise UserError(str(e)) from None
        except BrokenPipeError:
            raise  # the reader went away (`| head`): click's main exits quietly
        except Exception as e:
            if os.environ.get("COCOON_DEBUG"):
                raise
            from wrappers.chain.emulated import ChainError
            from wrappers.chain.getmethod import GetMethodError

            if isinstance(e, ChainError):  # e.g. a broken state file: the message names it
                raise UserError(str(e)) from None
            if isinstance(e, GetMethodError):
                raise UserError(f"{e}; is that the right contract address and network?") from None
            raise UserError(f"{type(e).__name__}: {e} (set COCOON_DEBUG=1 for details)") from None
    return wrapper

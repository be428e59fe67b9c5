"""How a CLI command reaches a chain and signs: network selection, keys, sending and waiting.

One code path for every network: a pytoniq wallet (v4r2, or v5r1 with ``--wallet v5r1``) on a
provider. On the embedded chain the provider is :class:`~wrappers.chain.provider.EmbeddedProvider`
over a chain kept in a state file between commands; on testnet and mainnet it is pytoniq's
``LiteBalancer``.

Keys are read the way TON users keep them: a 24-word mnemonic in a file (``--mnemonic-file``) or in
the ``COCOON_MNEMONIC`` environment variable, or a raw 32-byte Ed25519 seed in a key file
(``--key-file``, hex or binary). They are never printed or logged.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click
from pytoniq_core import Address, Cell
from pytoniq_core.tlb.account import StateInit

DEFAULT_STATE = Path(os.environ.get("COCOON_CHAIN_STATE", ".cocoon/chain.json"))
NETWORKS = ("embedded", "testnet", "mainnet")
# On the embedded chain a wallet with less than this is topped up from the faucet, so a fresh
# mnemonic can act at once. Never on a real network.
EMBEDDED_FUNDING = 10_000 * 10**9


class UserError(click.ClickException):
    """An expected failure: printed as one line with what to do, exit code 1."""


@dataclass
class Keys:
    public: bytes
    private: bytes  # pytoniq's 64-byte signing key


def load_keys(mnemonic_file: Optional[str], key_file: Optional[str]) -> Keys:
    from nacl.bindings import crypto_sign_seed_keypair

    if key_file:
        raw = Path(key_file).read_bytes()
        try:
            seed = bytes.fromhex(raw.decode().strip())
        except (UnicodeDecodeError, ValueError):
            seed = raw
        if len(seed) != 32:
            raise UserError(f"{key_file}: a key file holds a 32-byte Ed25519 seed (64 hex digits or 32 bytes)")
        pub, priv = crypto_sign_seed_keypair(seed)
        return Keys(pub, priv)
    words: Optional[str] = None
    if mnemonic_file:
        try:
            words = Path(mnemonic_file).read_text()
        except OSError as e:
            raise UserError(f"cannot read the mnemonic file: {e.strerror}") from None
    elif os.environ.get("COCOON_MNEMONIC"):
        words = os.environ["COCOON_MNEMONIC"]
    if not words:
        raise UserError("no key: pass --mnemonic-file FILE (24 words) or --key-file FILE, "
                        "or set COCOON_MNEMONIC")
    return keys_from_words(words, "the mnemonic")


def keys_from_words(words: str, where: str) -> Keys:
    """Keys from a 24-word TON mnemonic; ``where`` names its source in the error, never the words."""
    from pytoniq_core.crypto.keys import mnemonic_is_valid, mnemonic_to_private_key

    ws = words.split()
    if len(ws) != 24 or not mnemonic_is_valid(ws):
        raise UserError(f"{where} is not a valid 24-word TON mnemonic (the words were not printed)")
    pub, priv = mnemonic_to_private_key(ws)
    return Keys(pub, priv)


def network_global_id(network: str) -> int:
    """The global id a v5r1 wallet signs for (config param 19): -3 on testnet, -239 elsewhere."""
    return -3 if network == "testnet" else -239


async def open_wallet(provider, keys: Keys, version: str, network: str):
    """The pytoniq wallet of ``keys`` on ``provider``: v4r2, or v5r1 for ``network``."""
    from pytoniq import WalletV4R2, WalletV5R1

    if version == "v5r1":
        return await WalletV5R1.from_private_key(provider, keys.private, network_global_id=network_global_id(network))
    return await WalletV4R2.from_private_key(provider, keys.private)


class ChainContext:
    """Opened for one command: provider, wallet, and on the embedded chain the state file.

    Commands are synchronous; pytoniq is async. The provider therefore lives on an event loop in a
    background thread and :meth:`call` runs a coroutine there, so wrappers' synchronous readers work
    on every network.
    """

    def __init__(self, network: str, state_file: Path = DEFAULT_STATE, wallet_version: str = "v4r2"):
        if network not in NETWORKS:
            raise UserError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
        self.network, self.state_file, self.wallet_version = network, Path(state_file), wallet_version
        self.chain = None
        self.provider = None
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

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
        if self.network == "embedded":
            from wrappers.chain.emulated import EmbeddedChain
            from wrappers.chain.provider import EmbeddedProvider

            self.chain = EmbeddedChain.load(self.state_file) if self.state_file.exists() else EmbeddedChain()
            self.provider = EmbeddedProvider(self.chain)
        else:
            from pytoniq import LiteBalancer

            click.echo(f"connecting to {self.network} lite servers...", err=True)
            try:
                self.provider = (LiteBalancer.from_mainnet_config(trust_level=2) if self.network == "mainnet"
                                 else LiteBalancer.from_testnet_config(trust_level=2))
                await self.provider.start_up()
            except Exception as e:  # network failures of every kind end up here
                raise UserError(f"cannot reach {self.network}: {e}. Check the network connection.") from None
        return self

    async def close(self, save: bool = True) -> None:
        if self.chain is not None and save:
            self.chain.save(self.state_file)
        if self.provider is not None:
            await self.provider.close_all()

    # ------------------------------------------------------------------------ reading
    def get_method(self, address: Address, method: str, stack: list) -> list:
        """Synchronous get-method for wrappers' readers, on every network."""
        if self.chain is not None:
            return self.chain.get_method(address, method, stack)
        return self.call(self.provider.run_get_method(address, method, stack))

    async def status(self, address: Address) -> str:
        st = await self.provider.get_account_state(address)
        return st.state.type_ if hasattr(st.state, "type_") else str(st.state)

    # ------------------------------------------------------------------------ signing and sending
    async def wallet(self, keys: Keys):
        w = await open_wallet(self.provider, keys, self.wallet_version, self.network)
        if self.chain is not None and self.chain.balance(w.address) < EMBEDDED_FUNDING // 10:
            self.chain.mint(w.address, EMBEDDED_FUNDING)
            click.echo(f"(embedded chain) funded {w.address.to_str()} with "
                       f"{EMBEDDED_FUNDING // 10**9} TON from the faucet", err=True)
            await w.update()
        if not w.is_active:
            await w.send_init_external()
            await self._wait_seqno(w, 0)
            await w.update()
        return w

    async def send(self, wallet, dest: Address, value: int, body: Optional[Cell] = None,
                   state_init: Optional[StateInit] = None, bounce: bool = True, timeout: float = 90.0):
        """Send one message from ``wallet`` and wait until the wallet's seqno moves (the message left).
        On the embedded chain, returns the transactions it caused."""
        from pytoniq import WalletV4R2

        if wallet.balance < value:
            raise UserError(f"the wallet {wallet.address.to_str()} holds {wallet.balance / 1e9:.4f} TON, "
                            f"less than the {value / 1e9:.4f} TON this needs; top it up first")
        seqno = await wallet.get_seqno()
        msg = WalletV4R2.create_wallet_internal_message(destination=dest, value=value, body=body or Cell.empty(),
                                                        state_init=state_init, bounce=bounce)
        await wallet.raw_transfer([msg])
        await self._wait_seqno(wallet, seqno, timeout)
        await wallet.update()
        if self.chain is not None:
            return list(self.provider.last_sent)
        return []

    async def _wait_seqno(self, wallet, old: int, timeout: float = 90.0) -> None:
        if self.chain is not None:
            return
        start = time.monotonic()
        with click.progressbar(length=int(timeout), label="waiting for the transaction", file=click.get_text_stream("stderr")) as bar:
            while time.monotonic() - start < timeout:
                try:
                    if await wallet.get_seqno() > old:
                        return
                except Exception:
                    pass
                await asyncio.sleep(3)
                bar.update(3)
        raise UserError(f"the transaction was not confirmed within {int(timeout)} s; check the wallet on an "
                        "explorer before sending again")


# ------------------------------------------------------------------------ parsing what users type
def parse_ton(value: str, what: str = "amount") -> int:
    """'12.5' -> nanoTON, exactly (no float rounding); positive, at most 9 decimals."""
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(value)
    except InvalidOperation:
        raise UserError(f"{what} {value!r} is not a number of TON (e.g. 12.5)") from None
    if d <= 0:
        raise UserError(f"{what} must be more than 0 TON")
    nano = d * 10**9
    if nano != nano.to_integral_value():
        raise UserError(f"{what} {value!r} has more than 9 decimals (1 nanoTON is the smallest unit)")
    return int(nano)


def parse_address(value: str, what: str) -> Address:
    try:
        return Address(value)
    except Exception:
        raise UserError(f"{what} {value!r} is not a TON address") from None


def parse_hex256(text: str, what: str) -> int:
    """A 256-bit value (a hash or an Ed25519 public key) as 64 hex digits, 0x allowed."""
    v = text.lower().removeprefix("0x")
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise UserError(f"{what} is 64 hex digits, got {text!r}")
    return int(v, 16)


def chain_now(ctx: "ChainContext") -> int:
    """The chain's time: the embedded chain's clock, or the wall clock on a real network."""
    return ctx.chain.now if ctx.chain is not None else int(time.time())


def guarded(f):
    """Decorator for command bodies: expected failures become one-line errors, never a traceback."""
    import functools

    @functools.wraps(f)
    def wrapper(*a, **kw):
        try:
            return f(*a, **kw)
        except (UserError, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            if os.environ.get("COCOON_DEBUG"):
                raise
            from wrappers.chain.getmethod import GetMethodError

            if isinstance(e, GetMethodError):
                raise UserError(f"{e}; is that the right contract address and network?") from None
            raise UserError(f"{type(e).__name__}: {e} (set COCOON_DEBUG=1 for details)") from None
    return wrapper


def network_options(f):
    """--network, --state-file, --mnemonic-file, --key-file, --wallet for commands that touch a chain."""
    f = click.option("--wallet", "wallet_version", type=click.Choice(["v4r2", "v5r1"]), default="v4r2",
                     show_default=True, help="Wallet contract version of your key.")(f)
    f = click.option("--key-file", type=click.Path(exists=True, dir_okay=False),
                     help="File with a 32-byte Ed25519 seed (hex or raw). Never printed.")(f)
    f = click.option("--mnemonic-file", type=click.Path(dir_okay=False),
                     help="File with your 24-word wallet mnemonic (or set COCOON_MNEMONIC). Never printed.")(f)
    f = click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_STATE,
                     show_default=True, help="Embedded chain only: where the local chain is kept between commands "
                     "(env COCOON_CHAIN_STATE).")(f)
    f = click.option("--network", type=click.Choice(NETWORKS), default="embedded", show_default=True,
                     envvar="COCOON_NETWORK", help="Which chain: the local embedded chain, testnet or mainnet.")(f)
    return f

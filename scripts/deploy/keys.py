"""The owner's key and wallet, as the deployment file names them.

The key is read from where the file points (a mnemonic file, an environment variable named in the
file, or a 32-byte seed file) and never printed. The wallet address is computed without a network:
the same pytoniq wallet class the sending code uses, on a provider that knows no accounts, so a dry
run of a testnet or mainnet deployment needs no connection and names the same wallet a real run
sends from.
"""
from __future__ import annotations

import asyncio
import os

from pytoniq_core import Address

from node.chainctx import Keys, UserError, load_keys

from .config import OwnerConfig


def owner_keys(owner: OwnerConfig) -> Keys:
    if owner.mnemonic_env:
        words = os.environ.get(owner.mnemonic_env)
        if not words:
            raise UserError(f"the environment variable {owner.mnemonic_env} (named by [owner] mnemonic_env) "
                            "is not set; export the 24 words in it")
        from pytoniq_core.crypto.keys import mnemonic_is_valid, mnemonic_to_private_key

        ws = words.split()
        if len(ws) != 24 or not mnemonic_is_valid(ws):
            raise UserError(f"${owner.mnemonic_env} does not hold a valid 24-word TON mnemonic "
                            "(the words were not printed)")
        pub, priv = mnemonic_to_private_key(ws)
        return Keys(pub, priv)
    if owner.key_file is not None and not owner.key_file.is_file():
        raise UserError(f"[owner] key_file {owner.key_file}: no such file")
    if owner.mnemonic_file is not None and not owner.mnemonic_file.is_file():
        raise UserError(f"[owner] mnemonic_file {owner.mnemonic_file}: no such file")
    return load_keys(str(owner.mnemonic_file) if owner.mnemonic_file else None,
                     str(owner.key_file) if owner.key_file else None)


class OfflineProvider:
    """A provider that knows no account: enough for pytoniq to build a wallet and its address.
    Anything that would need the network refuses loudly."""

    async def raw_get_account_state(self, address, block=None):
        return None, None

    async def run_get_method(self, *a, **kw):
        raise RuntimeError("offline: no get-methods")

    async def raw_send_message(self, message: bytes):
        raise RuntimeError("offline: nothing is sent")


def global_id(network: str) -> int:
    """The network_global_id a v5r1 wallet signs for (as node.chainctx uses it)."""
    return -3 if network == "testnet" else -239


async def make_wallet(provider, keys: Keys, version: str, network: str):
    from pytoniq import WalletV4R2, WalletV5R1

    if version == "v5r1":
        return await WalletV5R1.from_private_key(provider, keys.private, network_global_id=global_id(network))
    return await WalletV4R2.from_private_key(provider, keys.private)


def wallet_address(keys: Keys, version: str, network: str) -> Address:
    """The address of the owner's wallet, computed offline."""
    return asyncio.run(make_wallet(OfflineProvider(), keys, version, network)).address

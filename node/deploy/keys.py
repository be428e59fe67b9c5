"""The owner's key and wallet, as the deployment file names them.

The key is read from where the file points (a mnemonic file, an environment variable named in the
file, or a 32-byte seed file) and never printed. The wallet address is computed without a network:
the same pytoniq wallet class the sending code uses, on a provider that knows no accounts, so a dry
run of a testnet or mainnet deployment needs no connection and names the same wallet a real run
sends from.
"""
from __future__ import annotations

import os

from pytoniq_core import Address

from node.chain import CocoonError, Keys, keys_from_words, load_keys, open_wallet

from .config import OwnerConfig


def owner_keys(owner: OwnerConfig) -> Keys:
    if owner.mnemonic_env:
        words = os.environ.get(owner.mnemonic_env)
        if not words:
            raise CocoonError(f"the environment variable {owner.mnemonic_env} (named by [owner] mnemonic_env) "
                            "is not set; export the 24 words in it")
        return keys_from_words(words, f"${owner.mnemonic_env}")
    if owner.key_file is not None and not owner.key_file.is_file():
        raise CocoonError(f"[owner] key_file {owner.key_file}: no such file")
    if owner.mnemonic_file is not None and not owner.mnemonic_file.is_file():
        raise CocoonError(f"[owner] mnemonic_file {owner.mnemonic_file}: no such file")
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


async def wallet_address(keys: Keys, version: str, network: str) -> Address:
    """The address of the owner's wallet, computed offline."""
    return (await open_wallet(OfflineProvider(), keys, version, network)).address

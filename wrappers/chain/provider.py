"""The chain provider interface: what wrappers, the CLI and services use to reach a chain.

It is the interface pytoniq's ``Contract`` and wallets call (``raw_get_account_state``,
``get_account_state``, ``run_get_method``, ``raw_send_message``), so pytoniq's ``WalletV4R2`` and
``WalletV5R1`` work on the embedded chain unchanged, and the same wrapper code talks to testnet or
mainnet through pytoniq's ``LiteBalancer``.
"""
from __future__ import annotations

from typing import Optional, Union

from pytoniq_core import Address
from pytoniq_core.tlb.account import Account, ShardAccount, SimpleAccount

from .emulated import EmbeddedChain
from .records import TxRecord


class EmbeddedProvider:
    """pytoniq provider over an :class:`EmbeddedChain`. Sending a message runs it (and everything it
    causes) to completion before returning, so a caller can read the result at once."""

    def __init__(self, chain: Optional[EmbeddedChain] = None):
        self.chain = chain or EmbeddedChain()
        self.last_sent: list[TxRecord] = []

    # pytoniq's LiteClientLike surface -------------------------------------------------
    async def raw_get_account_state(self, address: Union[str, Address], block=None
                                    ) -> tuple[Optional[Account], Optional[ShardAccount]]:
        sa = self.chain.shard_account(address)
        if sa is None or sa.account is None:
            return None, None
        return sa.account, sa

    async def get_account_state(self, address: Union[str, Address]) -> SimpleAccount:
        if isinstance(address, str):
            address = Address(address)
        return SimpleAccount.from_raw((await self.raw_get_account_state(address))[0], address)

    async def run_get_method(self, address: Union[str, Address], method: Union[int, str], stack: list,
                             block=None) -> list:
        return self.chain.get_method(address, method, stack)

    async def raw_send_message(self, message: bytes) -> int:
        self.last_sent = self.chain.send_boc(message)
        if self.last_sent and self.last_sent[0].rejected:
            return 0
        return 1

    # lifecycle no-ops so code written for LiteBalancer runs unchanged --------------------
    async def start_up(self) -> None:
        return None

    async def close_all(self) -> None:
        return None

    async def close(self) -> None:
        return None

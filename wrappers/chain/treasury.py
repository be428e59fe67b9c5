"""Funded wallets for the embedded chain: standard v4r2 wallets that send through real transactions.

A treasury is not a shortcut: its messages are signed external messages to a real wallet contract,
so the value it sends and the fees it pays are exactly what a user's wallet would see.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Optional

from pytoniq.contract.wallets.wallet import WALLET_V4_R2_CODE, WalletV4, WalletV4R2
from pytoniq_core import Address, Cell
from pytoniq_core.tlb.account import StateInit

from ..keys import wallet_keypair

if TYPE_CHECKING:
    from .emulated import EmbeddedChain
    from .records import TxRecord

WALLET_ID = 698983191  # the default subwallet id of v4r2 on workchain 0


class Treasury:
    def __init__(self, chain: "EmbeddedChain", name: str, balance: int):
        self.chain = chain
        self.name = name
        seed = hashlib.sha256(b"cocoon-embedded-treasury:" + name.encode()).digest()
        self.public_key, self.private_key = wallet_keypair(seed)  # pytoniq signs with the 64-byte key
        data = WalletV4.create_data_cell(self.public_key, WALLET_ID)
        self.state_init = StateInit(code=WALLET_V4_R2_CODE, data=data)
        self.address = Address((0, self.state_init.serialize().hash))
        self.seqno = 0
        if chain.state(self.address)[0] == "active":  # a chain loaded from a file already has it
            self.resync()
        else:
            chain.mint(self.address, balance)
            self._deploy()

    def _deploy(self) -> None:
        body = WalletV4.raw_create_transfer_msg(self.private_key, 0, WALLET_ID, [])
        self.chain.send(self.chain.external(self.address, body, self.state_init))
        self.seqno = 1

    def resync(self) -> None:
        """Re-read the seqno from the wallet's data (after a snapshot restore)."""
        status, _code, data = self.chain.state(self.address)
        self.seqno = data.begin_parse().load_uint(32) if status == "active" else 0

    def send(self, dest: Address, value: int, body: Optional[Cell] = None, state_init: Optional[StateInit] = None,
             bounce: bool = True, mode: int = 3) -> list["TxRecord"]:
        """Send one internal message from this wallet; returns every transaction it caused."""
        msg = WalletV4R2.create_wallet_internal_message(destination=dest, send_mode=mode, value=value,
                                                         body=body if body is not None else Cell.empty(),
                                                         state_init=state_init, bounce=bounce)
        ext = WalletV4.raw_create_transfer_msg(self.private_key, self.seqno, WALLET_ID, [msg],
                                               valid_until=self.chain.now + 600)
        txs = self.chain.send(self.chain.external(self.address, ext))
        if not txs or txs[0].rejected:
            raise RuntimeError(f"treasury {self.name} could not send (seqno {self.seqno}); is it out of funds?")
        self.seqno += 1
        return txs

    async def send_message(self, dest: Address, value: int, body: Optional[Cell] = None, *,
                           state_init: Optional[StateInit] = None, bounce: bool = True) -> list["TxRecord"]:
        """:meth:`send` as a :class:`~wrappers.chain.contract.Sender`: contract objects send through it."""
        return self.send(dest, value, body, state_init=state_init, bounce=bounce)

    @property
    def balance(self) -> int:
        return self.chain.balance(self.address)

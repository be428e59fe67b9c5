"""Vouchers: the payer's signed, cumulative authorization that the payee may take up to ``amount`` from
a channel (DESIGN.md §4). :class:`VoucherSigner` is the payer's side (never signs a lower total),
:class:`VoucherTracker` the payee's (keeps the latest valid one). The signed bytes are the escrow's
statement (:func:`wrappers.escrow.statement_hash`), so a voucher is claimable exactly as signed here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pytoniq_core import Address

from wrappers import keys as K
from wrappers.escrow import TAG_COOP_CLOSE, TAG_VOUCHER, statement_hash
from wrappers.keys import KeyLike, signing_key

PublicLike = Union[int, bytes, Ed25519PublicKey]


def sign_statement(key: KeyLike, tag: int, channel: Address, amount: int) -> bytes:
    """Ed25519 over the hash of the escrow statement ``tag channel amount`` (what the contract checks)."""
    return K.sign(key, statement_hash(tag, channel, amount))


def verify_statement(public_key: PublicLike, tag: int, channel: Address, amount: int, signature: bytes) -> bool:
    return K.verify(public_key, signature, statement_hash(tag, channel, amount))


def sign_coop_close(key: KeyLike, channel: Address, amount: int) -> bytes:
    """One side's signature on a cooperative close granting the payee ``amount`` in total."""
    return sign_statement(key, TAG_COOP_CLOSE, channel, amount)


@dataclass(frozen=True)
class Voucher:
    """The payer's signed authorization: the payee may receive up to ``amount`` in total from
    ``channel``. Cumulative, so only the latest one matters."""
    channel: Address
    amount: int
    signature: bytes

    @classmethod
    def sign(cls, key: KeyLike, channel: Address, amount: int) -> "Voucher":
        return cls(channel, amount, sign_statement(key, TAG_VOUCHER, channel, amount))

    def verify(self, payer_key: PublicLike) -> bool:
        return verify_statement(payer_key, TAG_VOUCHER, self.channel, self.amount, self.signature)

    def to_dict(self) -> dict:
        """The voucher as JSON fields: raw channel address, amount, signature in hex."""
        return {"channel": self.channel.to_str(is_user_friendly=False), "amount": self.amount,
                "signature": self.signature.hex()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Voucher":
        try:
            d = json.loads(text)
        except ValueError as e:
            raise ValueError(f"not a voucher: {e}") from None
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: dict) -> "Voucher":
        """The voucher of :meth:`to_dict`'s fields; ValueError for anything else."""
        try:
            sig = bytes.fromhex(d["signature"])
            v = cls(Address(d["channel"]), int(d["amount"]), sig)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"not a voucher: {e}") from None
        if len(sig) != 64 or v.amount < 0:
            raise ValueError("not a voucher: a signature is 64 bytes and an amount is not negative")
        return v


class VoucherTracker:
    """The payee's side: keeps the latest valid voucher of one channel. A voucher that does not
    verify, belongs to another channel or is not above the latest is refused, so the stored one
    only grows and is always claimable."""

    def __init__(self, channel: Address, payer_key: PublicLike):
        self.channel, self.payer_key = channel, payer_key
        self.latest: Optional[Voucher] = None
        try:                    # the key object once, not once per voucher
            self._key: PublicLike = K.public_key(payer_key)
        except ValueError:      # not a key: every voucher fails to verify, as before
            self._key = payer_key

    @property
    def authorized(self) -> int:
        return self.latest.amount if self.latest else 0

    def accept(self, v: Voucher) -> bool:
        """Store ``v`` if it is valid and newer; returns whether it was. Raises ValueError for a
        voucher that can never be valid here (wrong channel or signature)."""
        if v.channel != self.channel:
            raise ValueError("the voucher is for another channel")
        if not v.verify(self._key):
            raise ValueError("the voucher is not signed by the channel's payer key")
        if v.amount <= self.authorized:
            return False
        self.latest = v
        return True

    def settle(self, v: Voucher, floor: int) -> None:
        """Replace the held voucher with a request's exact total (DESIGN.md §4: the client first
        authorizes previous + maximum, then signs previous + actual). ``floor`` is the total before
        the request: a final voucher below it would give back money already earned, so it is
        refused, as is one above the authorization it settles."""
        if v.channel != self.channel or not v.verify(self._key):
            raise ValueError("the final voucher is not the payer's for this channel")
        if not floor <= v.amount <= self.authorized:
            raise ValueError(f"a final total must lie between {floor} and the authorized {self.authorized}")
        self.latest = v


class VoucherSigner:
    """The payer's side: signs cumulative vouchers for one channel and never signs a lower total, so
    a payee cannot be handed a voucher worth less than one it already holds."""

    def __init__(self, channel: Address, key: KeyLike, start: int = 0):
        self.channel, self.key = channel, signing_key(key)
        self.total = start
        self.latest: Optional[Voucher] = None

    def authorize(self, total: int) -> Voucher:
        """Sign a voucher for the cumulative ``total`` (at least the previous one)."""
        if total < self.total:
            raise ValueError(f"vouchers are cumulative: {total} is below the {self.total} already signed")
        self.total = total
        self.latest = Voucher.sign(self.key, self.channel, total)
        return self.latest

    def authorize_request(self, settled: int, max_cost: int) -> Voucher:
        """Before a request: the settled total plus the request's maximum cost."""
        return self._sign(settled + max_cost)

    def settle_request(self, settled: int, cost: int, max_cost: int) -> Voucher:
        """After the answer: the settled total plus what the request actually cost."""
        if not 0 <= cost <= max_cost:
            raise ValueError("a request cannot cost more than was authorized for it")
        return self._sign(settled + cost)

    def _sign(self, total: int) -> Voucher:
        self.total = max(self.total, total)
        self.latest = Voucher.sign(self.key, self.channel, total)
        return self.latest

    def pay(self, amount: int) -> Voucher:
        """Sign the previous total plus ``amount``."""
        if amount < 0:
            raise ValueError("a payment is not negative")
        return self.authorize(self.total + amount)

"""The escrow contract (a payment channel) in Python: messages, signed statements, getters, addresses,
and the off-chain bookkeeping payers and payees need.

This module is the one Python place that knows the escrow's layouts (contracts/escrow.tlb). Vouchers
are made and checked here byte for byte as the contract checks them: Ed25519 over the hash of the cell
``tag:uint32 channel:MsgAddressInt amount:Coins``. Child addresses come from :mod:`wrappers.registry`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pytoniq_core import Address, Builder, Cell, begin_cell
from pytoniq_core.tlb.account import StateInit

from . import TON
from . import keys as K
from . import registry as R
from .build import load_code
from .errors import describe_error as _describe, names_for
# the key helpers, here too under the names callers of this module know (defined in wrappers.keys)
from .keys import KeyLike, public_key_int, signing_key

# ---------------------------------------------------------------------------- opcodes, tags, errors
OP = dict(
    open=0x599D636B, top_up=0x58E96F62, claim=0x2CCFECE6, request_close=0x7F730DD1,
    request_withdraw=0x060EF93E, finish=0x4CA1BF0C, coop_close=0x278E3EEF,
    payment=0x771E3824, refund=0x3744404C, open_refused=0x1659AD21,
)
OP_EXCESSES = R.OP_EXCESSES
TAG_VOUCHER = 0x45534356      # "ESCV": the signature domain of a voucher
TAG_COOP_CLOSE = 0x45534343   # "ESCC": the signature domain of a cooperative close


class State:
    """EscrowStorage.state."""
    NEW, OPENING, OPEN, CLOSING, CLOSED = range(5)


STATE_NAMES = {0: "new", 1: "opening", 2: "open", 3: "closing", 4: "closed"}


class Err(R.Err):
    """Exit codes of the escrow (escrow.tlb) and the common ones (common.tlb)."""
    NOT_OPEN = 400
    CLOSED = 401
    ALREADY_OPEN = 402
    BAD_SIGNATURE = 403
    BAD_PAYEE_SIGNATURE = 404
    STALE_VOUCHER = 405
    NOTHING_TO_CLAIM = 406
    TOO_EARLY = 407
    NOTHING_TO_FINISH = 408
    REQUEST_PENDING = 409
    AMOUNT_TOO_HIGH = 410
    DEPOSIT_TOO_LOW = 411        # open_refused reason
    PARAMS_UNAVAILABLE = 412     # open_refused reason


ERROR_NAMES = names_for("escrow")


def describe_error(code: Optional[int]) -> str:
    return _describe(code, ERROR_NAMES)


# Minimum attached values (escrow.tlb). Each operation also pays the storage deficit, which is 0
# unless the escrow sat idle long enough for storage fees to dip into its reserve.
STORAGE_RESERVE = 10_000_000
OPEN_FEE = 40_000_000
TOP_UP_FEE = 10_000_000
CLAIM_FEE = 20_000_000
REQUEST_FEE = 10_000_000
FINISH_FEE = 20_000_000
COOP_CLOSE_FEE = 30_000_000
# What callers attach by default: the minimum plus room for a storage deficit. The rest comes back.
MARGIN = 5_000_000


def open_value(amount: int) -> int:
    """Value to attach to ``open``: the amount, the fee and the first storage reserve."""
    return amount + OPEN_FEE + STORAGE_RESERVE + MARGIN


# ---------------------------------------------------------------------------- signed statements
def statement_cell(tag: int, channel: Address, amount: int) -> Cell:
    """``tag:uint32 channel:MsgAddressInt amount:Coins``: the cell whose hash a signature covers."""
    if amount < 0:
        raise ValueError("an amount is never negative")
    return begin_cell().store_uint(tag, 32).store_address(channel).store_coins(amount).end_cell()


def voucher_cell(channel: Address, amount: int) -> Cell:
    return statement_cell(TAG_VOUCHER, channel, amount)


def coop_close_cell(channel: Address, amount: int) -> Cell:
    return statement_cell(TAG_COOP_CLOSE, channel, amount)


def sign_statement(key: KeyLike, tag: int, channel: Address, amount: int) -> bytes:
    return K.sign(key, statement_cell(tag, channel, amount).hash)


def verify_statement(public_key: Union[int, bytes, Ed25519PublicKey], tag: int, channel: Address, amount: int,
                     signature: bytes) -> bool:
    return K.verify(public_key, signature, statement_cell(tag, channel, amount).hash)


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

    def verify(self, payer_key: Union[int, bytes, Ed25519PublicKey]) -> bool:
        return verify_statement(payer_key, TAG_VOUCHER, self.channel, self.amount, self.signature)

    def to_json(self) -> str:
        return json.dumps({"channel": self.channel.to_str(is_user_friendly=False), "amount": self.amount,
                           "signature": self.signature.hex()})

    @classmethod
    def from_json(cls, text: str) -> "Voucher":
        try:
            d = json.loads(text)
            sig = bytes.fromhex(d["signature"])
            v = cls(Address(d["channel"]), int(d["amount"]), sig)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"not a voucher: {e}") from None
        if len(sig) != 64 or v.amount < 0:
            raise ValueError("not a voucher: a signature is 64 bytes and an amount is not negative")
        return v


def sign_coop_close(key: KeyLike, channel: Address, amount: int) -> bytes:
    """One side's signature on a cooperative close granting the payee ``amount`` in total."""
    return sign_statement(key, TAG_COOP_CLOSE, channel, amount)


# ---------------------------------------------------------------------------- message bodies
def _head(op: str, query_id: int) -> Builder:
    return begin_cell().store_uint(OP[op], 32).store_uint(query_id, 64)


def open_body(amount: int, payee_key: int | bytes, query_id: int = 0) -> Cell:
    return _head("open", query_id).store_coins(amount).store_uint(R._int(payee_key), 256).end_cell()


def top_up_body(amount: int, query_id: int = 0) -> Cell:
    return _head("top_up", query_id).store_coins(amount).end_cell()


def claim_body(voucher: Voucher, query_id: int = 0) -> Cell:
    return _head("claim", query_id).store_coins(voucher.amount).store_bytes(voucher.signature).end_cell()


def request_close_body(query_id: int = 0) -> Cell:
    return _head("request_close", query_id).end_cell()


def request_withdraw_body(amount: int, query_id: int = 0) -> Cell:
    return _head("request_withdraw", query_id).store_coins(amount).end_cell()


def finish_body(query_id: int = 0) -> Cell:
    return _head("finish", query_id).end_cell()


def coop_close_body(amount: int, payer_signature: bytes, payee_signature: bytes, query_id: int = 0,
                    payee_tail_bits: int = 0, payee_tail_ref: bool = False) -> Cell:
    """payee_tail_bits / payee_tail_ref: data after the payee's signature, which the schema ignores."""
    sig = begin_cell().store_bytes(payee_signature)
    if payee_tail_bits:
        sig = sig.store_uint(0, payee_tail_bits)
    if payee_tail_ref:
        sig = sig.store_ref(begin_cell().end_cell())
    return (_head("coop_close", query_id).store_coins(amount).store_bytes(payer_signature)
            .store_ref(sig.end_cell()).end_cell())


@dataclass(frozen=True)
class Payout:
    """A payment, refund or open_refused message the escrow sent (parsed from its body)."""
    op: str
    query_id: int
    amount: int = 0
    reason: int = 0
    min_deposit: int = 0


def parse_payout(body: Cell) -> Optional[Payout]:
    s = body.begin_parse()
    if s.remaining_bits < 96:
        return None
    op, qid = s.load_uint(32), s.load_uint(64)
    if op == OP["payment"]:
        return Payout("payment", qid, s.load_coins())
    if op == OP["refund"]:
        return Payout("refund", qid, s.load_coins())
    if op == OP["open_refused"]:
        return Payout("open_refused", qid, reason=s.load_uint(16), min_deposit=s.load_coins())
    return None


# ---------------------------------------------------------------------------- addresses
def identity(payer: Address, payee: Address, payer_key: int | bytes) -> Cell:
    return R.escrow_identity(payer, payee, payer_key)


def state_init(code: Cell, registry: Address, payer: Address, payee: Address, payer_key: int | bytes) -> StateInit:
    return R.child_state_init(code, registry, identity(payer, payee, payer_key))


def escrow_address(code: Cell, registry: Address, payer: Address, payee: Address, payer_key: int | bytes) -> Address:
    return R.child_address(code, registry, identity(payer, payee, payer_key))


def escrow_code(lang: str) -> Cell:
    return load_code("escrow", lang)


# ---------------------------------------------------------------------------- getters
@dataclass(frozen=True)
class Channel:
    """get_channel: the escrow's accounting (escrow.tlb)."""
    state: int
    deposited: int
    claimed: int
    withdrawn: int
    owed: int
    pending: int
    close_at: int

    @property
    def held(self) -> int:
        """What the channel holds for the payer and the payee."""
        return self.deposited - self.claimed - self.withdrawn

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, f"unknown {self.state}")

    @property
    def pending_withdrawal(self) -> int:
        return self.pending if self.state == State.OPEN else 0


class EscrowReader:
    """Reads a deployed escrow through any ``call(address, method, stack) -> list`` (the embedded
    chain's ``get_method`` or a CLI context's)."""

    def __init__(self, call: Callable, address: Address):
        self.call, self.address = call, address

    def _get(self, method: str) -> list:
        return self.call(self.address, method, [])

    def channel(self) -> Channel:
        return Channel(*self._get("get_channel"))

    def parties(self) -> tuple[Address, Address, Address]:
        """(registry, payer, payee)"""
        return tuple(s.load_address() for s in self._get("get_parties"))  # type: ignore[return-value]

    def keys(self) -> tuple[int, int]:
        """(payer_key, payee_key)"""
        a, b = self._get("get_keys")
        return a, b

    def config(self) -> tuple[int, int]:
        """(close_delay, min_deposit), 0 until the registry answered"""
        a, b = self._get("get_config")
        return a, b

    def payee_key_is(self, payee_key: Union[KeyLike, Ed25519PublicKey, int]) -> bool:
        """Whether the channel names ``payee_key`` as the payee's. A payee checks this before it
        serves: with another key there, the payer could sign a cooperative close on its own."""
        return self.keys()[1] == public_key_int(payee_key)


# ---------------------------------------------------------------------------- off-chain bookkeeping
def storage_deficit(balance: int, ch: Channel) -> int:
    """What storage fees took below the escrow's reserve: the next operation must attach it on top
    of its fee (102 otherwise). ``balance`` is the account's balance as last seen; storage due since
    then comes on top, which MARGIN covers for months."""
    tracked = ch.held + ch.owed + (ch.pending if ch.state == State.OPENING else 0)
    return max(0, STORAGE_RESERVE + tracked - balance)


def claimable(voucher_amount: int, ch: Channel) -> int:
    """What a claim with this voucher would pay the payee now (the contract's rule)."""
    if ch.state in (State.NEW, State.OPENING):
        return 0
    newly = 0
    if ch.state != State.CLOSED and voucher_amount > ch.claimed:
        newly = min(voucher_amount - ch.claimed, ch.held)
    return newly + ch.owed


def claim_worth(voucher_amount: int, ch: Channel, claim_fee: int) -> int:
    """What the payee gains by claiming now: the payment minus the fees the claim costs (may be
    negative: then claiming loses money)."""
    return claimable(voucher_amount, ch) - claim_fee


def should_claim(voucher_amount: int, ch: Channel, claim_fee: int, now: int, max_fee_share: float = 0.01,
                 exposure_limit: Optional[int] = None, safety_margin: int = 600) -> bool:
    """The payee's policy: claim when the fee is at most ``max_fee_share`` of the payment, when a
    close or withdrawal notice ends within ``safety_margin`` seconds (the last chance before the
    payer takes the rest back), or when the unclaimed amount exceeds ``exposure_limit``."""
    pay = claimable(voucher_amount, ch)
    if pay <= claim_fee:
        return False
    if ch.state == State.CLOSING or ch.pending_withdrawal:
        if now + safety_margin >= ch.close_at:
            return True
    if exposure_limit is not None and voucher_amount - ch.claimed >= exposure_limit:
        return True
    return claim_fee <= pay * max_fee_share


@dataclass(frozen=True)
class Exposure:
    """The payee's risk on a channel: authorized by the payer but not yet paid out."""
    authorized: int     # the latest voucher's cumulative amount
    claimed: int        # what the contract already granted
    unclaimed: int      # authorized - claimed
    covered: int        # the part of unclaimed the escrow still holds (a claim would pay it)
    uncovered: int      # unclaimed - covered: signed, but no deposit behind it
    at_risk: int        # covered money a pending withdrawal or close could return to the payer
    notice_ends: int    # close_at of a pending close or withdrawal, 0 if none


def exposure(authorized: int, ch: Channel) -> Exposure:
    """The payee's exposure: authorized minus claimed minus what the deposit covers. A proxy stops
    serving a client when ``uncovered`` (or ``unclaimed``) passes its limit."""
    unclaimed = max(authorized - ch.claimed, 0)
    active = ch.state in (State.OPEN, State.CLOSING)
    covered = min(unclaimed, ch.held) if active else 0
    at_risk = 0
    if ch.state == State.CLOSING:
        at_risk = covered
    elif ch.pending_withdrawal:
        at_risk = max(0, covered - max(ch.held - ch.pending_withdrawal, 0))
    notice = ch.close_at if (ch.state == State.CLOSING or ch.pending_withdrawal) else 0
    return Exposure(authorized, ch.claimed, unclaimed, covered, unclaimed - covered, at_risk, notice)


class VoucherTracker:
    """The payee's side: keeps the latest valid voucher of one channel. A voucher that does not
    verify, belongs to another channel or is not above the latest is refused, so the stored one
    only grows and is always claimable."""

    def __init__(self, channel: Address, payer_key: Union[int, bytes, Ed25519PublicKey]):
        self.channel, self.payer_key = channel, payer_key
        self.latest: Optional[Voucher] = None

    @property
    def authorized(self) -> int:
        return self.latest.amount if self.latest else 0

    def accept(self, v: Voucher) -> bool:
        """Store ``v`` if it is valid and newer; returns whether it was. Raises ValueError for a
        voucher that can never be valid here (wrong channel or signature)."""
        if v.channel != self.channel:
            raise ValueError("the voucher is for another channel")
        if not v.verify(self.payer_key):
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
        if v.channel != self.channel or not v.verify(self.payer_key):
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


# ---------------------------------------------------------------------------- the embedded chain
class EmbeddedEscrow:
    """An escrow on an :class:`~wrappers.chain.emulated.EmbeddedChain`: its address, its reader and
    senders that go through real wallets."""

    def __init__(self, chain, code: Cell, registry: Address, payer: Address, payee: Address,
                 payer_key: int | bytes):
        self.chain, self.code = chain, code
        self.registry, self.payer, self.payee = registry, payer, payee
        self.payer_key = R._int(payer_key)
        self.state_init = state_init(code, registry, payer, payee, self.payer_key)
        self.address = Address((0, self.state_init.serialize().hash))
        self.read = EscrowReader(chain.get_method, self.address)

    def open(self, wallet, amount: int, payee_key: int | bytes, value: Optional[int] = None,
             query_id: int = 0) -> list:
        """Deploy (if needed) and open with ``amount``; the open completes when the registry answers,
        within the same call on the embedded chain."""
        return wallet.send(self.address, open_value(amount) if value is None else value,
                           open_body(amount, payee_key, query_id), state_init=self.state_init)

    def send(self, wallet, body: Cell, value: int) -> list:
        return wallet.send(self.address, value, body)

    def top_up(self, wallet, amount: int, value: Optional[int] = None) -> list:
        return self.send(wallet, top_up_body(amount), amount + TOP_UP_FEE + MARGIN if value is None else value)

    def claim(self, wallet, voucher: Voucher, value: Optional[int] = None) -> list:
        """Claim; by default attaches the fee, the margin and any storage deficit."""
        if value is None:
            value = CLAIM_FEE + MARGIN + storage_deficit(self.balance, self.read.channel())
        return self.send(wallet, claim_body(voucher), value)

    def request_close(self, wallet, value: int = REQUEST_FEE + MARGIN) -> list:
        return self.send(wallet, request_close_body(), value)

    def request_withdraw(self, wallet, amount: int, value: int = REQUEST_FEE + MARGIN) -> list:
        return self.send(wallet, request_withdraw_body(amount), value)

    def finish(self, wallet, value: int = FINISH_FEE + MARGIN) -> list:
        return self.send(wallet, finish_body(), value)

    def coop_close(self, wallet, amount: int, payer_signature: bytes, payee_signature: bytes,
                   value: int = COOP_CLOSE_FEE + MARGIN) -> list:
        return self.send(wallet, coop_close_body(amount, payer_signature, payee_signature), value)

    @property
    def balance(self) -> int:
        return self.chain.balance(self.address)

    @property
    def data_hash(self) -> Optional[bytes]:
        data = self.chain.state(self.address)[2]
        return data.hash if data is not None else None

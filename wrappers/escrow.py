"""The escrow contract (a payment channel) in Python: messages, the signed statement's layout, getters,
addresses.

This module is the one Python place that knows the escrow's layouts (contracts/escrow.tlb), including
the statement a voucher or a cooperative close signs: Ed25519 over the hash of the cell
``tag:uint32 channel:MsgAddressInt amount:Coins`` (:func:`statement_bits`). Signing, tracking and the
claim policy are in :mod:`node.payments`. Child addresses come from :mod:`wrappers.registry`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pytoniq_core import Address, Builder, Cell, begin_cell
from pytoniq_core.tlb.account import StateInit

from . import TON
from . import cells as C
from . import registry as R
from .build import load_code
from .chain.contract import Contract, reader_class
from .errors import describe_error as _describe, names_for
from . import keys as K
from .keys import KeyLike

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
def statement_bits(tag: int, channel: Address, amount: int) -> tuple[int, int]:
    """``tag:uint32 channel:MsgAddressInt amount:Coins`` as (value, bit count): the data of the cell
    whose hash a voucher's or a cooperative close's signature covers."""
    if amount < 0:
        raise ValueError("an amount is never negative")
    return C.push_coins(C.push_address(C.push_uint((0, 0), tag, 32), channel), amount)


def statement_hash(tag: int, channel: Address, amount: int) -> bytes:
    """The representation hash of :func:`statement_cell`, computed without building it."""
    return C.ordinary_hash(*statement_bits(tag, channel, amount))


def statement_cell(tag: int, channel: Address, amount: int) -> Cell:
    value, n = statement_bits(tag, channel, amount)
    return begin_cell().store_uint(value, n).end_cell()


def voucher_cell(channel: Address, amount: int) -> Cell:
    return statement_cell(TAG_VOUCHER, channel, amount)


def coop_close_cell(channel: Address, amount: int) -> Cell:
    return statement_cell(TAG_COOP_CLOSE, channel, amount)


# ---------------------------------------------------------------------------- message bodies
def _head(op: str, query_id: int) -> Builder:
    return begin_cell().store_uint(OP[op], 32).store_uint(query_id, 64)


def open_body(amount: int, payee_key: int | bytes, query_id: int = 0) -> Cell:
    return _head("open", query_id).store_coins(amount).store_uint(R._int(payee_key), 256).end_cell()


def top_up_body(amount: int, query_id: int = 0) -> Cell:
    return _head("top_up", query_id).store_coins(amount).end_cell()


def claim_body(voucher, query_id: int = 0) -> Cell:
    """``voucher``: anything with ``amount`` and a 64-byte ``signature`` (a node.payments Voucher)."""
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


class Escrow(Contract):
    """The payment channel of (registry, payer, payee, payer key) over ``provider`` (see
    :mod:`wrappers.chain.contract`). ``from_init`` derives its address; ``send_open`` deploys it."""

    code: Optional[Cell] = None  # these are known when built with from_init
    registry: Optional[Address] = None
    payer: Optional[Address] = None
    payee: Optional[Address] = None
    payer_key: Optional[int] = None

    @classmethod
    def from_init(cls, provider, registry: Address, payer: Address, payee: Address, payer_key: int | bytes, *,
                  code: Optional[Cell] = None, lang: str = "tolk") -> "Escrow":
        """``code`` defaults to the ``lang`` build; it must be the registry's escrow code."""
        key = R._int(payer_key)
        si = state_init(code or escrow_code(lang), registry, payer, payee, key)
        out = cls(provider, R.address_of(si), si)
        out.code, out.registry, out.payer, out.payee, out.payer_key = si.code, registry, payer, payee, key
        return out

    # ------------------------------------------------------------------ messages
    async def send_open(self, via, amount: int, payee_key: int | bytes, value: Optional[int] = None,
                        query_id: int = 0) -> list:
        """Deploy (with the StateInit, when known) and open with ``amount``; the open completes when
        the registry answers (within the same call on the embedded chain)."""
        return await self.send(via, open_value(amount) if value is None else value,
                               open_body(amount, payee_key, query_id), deploy=self.init is not None)

    async def send_top_up(self, via, amount: int, value: Optional[int] = None, query_id: int = 0) -> list:
        return await self.send(via, amount + TOP_UP_FEE + MARGIN if value is None else value,
                               top_up_body(amount, query_id))

    async def send_claim(self, via, voucher, value: Optional[int] = None, query_id: int = 0) -> list:
        """Claim with ``voucher``; by default attaches the fee, the margin and any storage deficit."""
        if value is None:
            value = CLAIM_FEE + MARGIN + storage_deficit(await self.get_balance(), await self.get_channel())
        return await self.send(via, value, claim_body(voucher, query_id))

    async def send_request_close(self, via, value: int = REQUEST_FEE + MARGIN, query_id: int = 0) -> list:
        return await self.send(via, value, request_close_body(query_id))

    async def send_request_withdraw(self, via, amount: int, value: int = REQUEST_FEE + MARGIN,
                                    query_id: int = 0) -> list:
        return await self.send(via, value, request_withdraw_body(amount, query_id))

    async def send_finish(self, via, value: int = FINISH_FEE + MARGIN, query_id: int = 0) -> list:
        return await self.send(via, value, finish_body(query_id))

    async def send_coop_close(self, via, amount: int, payer_signature: bytes, payee_signature: bytes,
                              value: int = COOP_CLOSE_FEE + MARGIN, query_id: int = 0) -> list:
        return await self.send(via, value, coop_close_body(amount, payer_signature, payee_signature, query_id))

    # ------------------------------------------------------------------ getters
    async def get_channel(self) -> Channel:
        return Channel(*await self.get("get_channel"))

    async def get_parties(self) -> tuple[Address, Address, Address]:
        """(registry, payer, payee)"""
        return tuple(s.load_address() for s in await self.get("get_parties"))  # type: ignore[return-value]

    async def get_keys(self) -> tuple[int, int]:
        """(payer_key, payee_key)"""
        a, b = await self.get("get_keys")
        return a, b

    async def get_config(self) -> tuple[int, int]:
        """(close_delay, min_deposit), 0 until the registry answered"""
        a, b = await self.get("get_config")
        return a, b

    async def payee_key_is(self, payee_key: Union[KeyLike, Ed25519PublicKey, int]) -> bool:
        """Whether the channel names ``payee_key`` as the payee's. A payee checks this before it
        serves: with another key there, the payer could sign a cooperative close on its own."""
        return (await self.get_keys())[1] == K.public_key_int(payee_key)


EscrowReader = reader_class(
    Escrow, ("channel", "parties", "keys", "config", "payee_key_is"),
    "Reads an escrow through a synchronous ``call(address, method, stack) -> list``; each method is\n"
    ":class:`Escrow`'s ``get_*`` (or predicate).")


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

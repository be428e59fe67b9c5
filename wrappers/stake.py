"""The stake contract in Python: its messages, signed statements, storage, getters and address.

This module is the one Python place that knows the stake contract's layouts (contracts/stake.tlb).
Child addresses come from :mod:`wrappers.registry` (the registry derives the same ones), so nothing
here duplicates the derivation.

Signed statements: the operator key (Ed25519, the hot key in the TEE) signs the representation hash
of a ``stake_statement`` cell that starts with the domain tag ``STKS`` and names the stake contract,
so a signature is worthless for any other contract or any other kind of signed payload.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq_core import Address, Builder, Cell, HashMap, begin_cell
from pytoniq_core.tlb.account import StateInit

from . import TON
from . import cells as C
from . import keys as K
from . import registry as R
from .build import load_code
from .chain.contract import Contract, reader_class
from .errors import describe_error as _describe, names_for

# ---------------------------------------------------------------------------- opcodes and errors
OP = dict(
    deposit=0x1D159325, unbond=0x0C19954D, withdraw=0x21D7CDDF, set_operator=0x7F68404E,
    register_proxy=0x2C95E4D9, refresh_params=0x37DD1103, report_equivocation=0x4A4FD5CE,
    payout=0x6D1D984F,
)
# registry messages the stake contract sends or receives (registry.tlb)
REGISTRY_OP = dict(query_params=0x5DCA325B, params_response=0x0C175CF1, stake_status=0x262D68DF,
                   register_proxy=0x39EBFEF1, stake_slashed=0x74A3955A, governance_slash=0x6B7D77DC)
OP_EXCESSES = R.OP_EXCESSES

PAYOUT_WITHDRAWAL, PAYOUT_REPORTER, PAYOUT_TREASURY = 1, 2, 3
SLASH_OBJECTIVE, SLASH_GOVERNANCE = 1, 2
ROLE_WORKER, ROLE_PROXY = R.ROLE_WORKER, R.ROLE_PROXY
ROLE_NAMES = {ROLE_WORKER: "worker", ROLE_PROXY: "proxy"}

STATEMENT_TAG = 0x53544B53  # "STKS": the signature domain of stake statements
KIND_JOB_RECEIPT, KIND_USAGE_REPORT, KIND_ROUTING = 1, 2, 3

# value constants of stake.tlb (nanoTON)
DEPOSIT_FEE = 100_000_000
OP_VALUE = 50_000_000
INIT_VALUE = 80_000_000
REFRESH_VALUE = 70_000_000
REPORT_VALUE = 150_000_000
MIN_RESERVE = 30_000_000
RENT_ALLOWANCE = 10_000_000   # the part of a storage deficit that OP_VALUE (and a deposit's fee) covers
QUERY_VALUE = 50_000_000
STATUS_VALUE = 15_000_000
STAKE_SLASHED_VALUE = 50_000_000
MAX_UNBONDING = 4
MAX_COINS = 2**120 - 1


class Err(R.Err):
    """Exit codes of the stake contract (stake.tlb) on top of the common ones."""
    PARAMS_PENDING = 300
    BAD_AMOUNT = 301
    TOO_MANY_UNBONDING = 302
    NOTHING_UNBONDING = 303
    STILL_LOCKED = 304
    JAILED = 305
    NOT_ACTIVE = 306
    NOT_PROXY = 307
    ROTATION_TOO_SOON = 308
    BAD_STATEMENT = 309
    NOT_CONFLICTING = 310
    IDENTICAL_STATEMENTS = 311
    BAD_SIGNATURE = 312
    EVIDENCE_USED = 313


ERROR_NAMES = names_for("stake")

# What a provider should do about each refusal; the CLI prints these.
ERROR_ADVICE = {
    Err.NOT_OWNER: "only the owner's wallet may do this",
    Err.LOW_VALUE: "attach more TON",
    Err.PARAMS_PENDING: "the stake has not received the network parameters yet; run `cocoon stake refresh`",
    Err.BAD_AMOUNT: "unbond more than 0 and at most the active stake",
    Err.TOO_MANY_UNBONDING: f"{MAX_UNBONDING} unbonding requests are in flight; withdraw one first",
    Err.NOTHING_UNBONDING: "nothing is unbonding; `cocoon stake unbond AMOUNT` first",
    Err.STILL_LOCKED: "no unbonding request is unlocked yet; see `cocoon stake status` for the time",
    Err.JAILED: "the provider is jailed by a slash",
    Err.NOT_ACTIVE: "the stake is not active (too small, jailed, or no parameters yet)",
    Err.NOT_PROXY: "only a proxy stake can register a proxy",
    Err.ROTATION_TOO_SOON: "the previous key is still slashable; rotate again after its window ends",
    Err.BAD_STATEMENT: "a statement has another tag or names another stake contract",
    Err.NOT_CONFLICTING: "the statements are for different (kind, context, seqno)",
    Err.IDENTICAL_STATEMENTS: "the two statements are the same",
    Err.BAD_SIGNATURE: "the signatures do not verify with the stake's operator key",
    Err.EVIDENCE_USED: "this evidence has already slashed the stake",
}


def describe_error(code: Optional[int]) -> str:
    return _describe(code, ERROR_NAMES)


# ---------------------------------------------------------------------------- address
def stake_state_init(code: Cell, registry: Address, owner: Address, role: int) -> StateInit:
    """The StateInit that deploys the stake of (registry, owner, role): child_init of common.tlb."""
    return R.child_state_init(code, registry, R.stake_identity(owner, role))


def stake_address(code: Cell, registry: Address, owner: Address, role: int) -> Address:
    return R.child_address(code, registry, R.stake_identity(owner, role))


def stake_code(lang: str) -> Cell:
    return load_code("stake", lang)


# ---------------------------------------------------------------------------- keys and statements
def statement_bits(stake: Address, kind: int, context: int, seqno: int) -> tuple[int, int]:
    """``tag:uint32 stake:MsgAddressInt kind:uint32 context:uint256 seqno:uint64`` as (value, bit
    count): a stake statement cell's data; its one reference is the payload."""
    acc = C.push_address(C.push_uint((0, 0), STATEMENT_TAG, 32), stake)
    return C.push_uint(C.push_uint(C.push_uint(acc, kind, 32), context, 256), seqno, 64)


@dataclass(frozen=True)
class Statement:
    """stake_statement of stake.tlb: what an operator key says about (kind, context, seqno)."""
    stake: Address
    kind: int
    context: int
    seqno: int
    payload: Cell

    def to_cell(self) -> Cell:
        value, n = statement_bits(self.stake, self.kind, self.context, self.seqno)
        return begin_cell().store_uint(value, n).store_ref(self.payload).end_cell()

    @classmethod
    def from_cell(cls, c: Cell) -> "Statement":
        s = c.begin_parse()
        if s.load_uint(32) != STATEMENT_TAG:
            raise ValueError("not a stake statement (domain tag differs)")
        st = cls(s.load_address(), s.load_uint(32), s.load_uint(256), s.load_uint(64), s.load_ref())
        if s.remaining_bits or s.remaining_refs:
            raise ValueError("a stake statement with trailing data")
        return st

    @property
    def hash(self) -> bytes:
        """The statement cell's representation hash, computed without building it."""
        return C.ordinary_hash(*statement_bits(self.stake, self.kind, self.context, self.seqno),
                               ((self.payload.get_depth(), self.payload.hash),))


@dataclass(frozen=True)
class SignedStatement:
    statement: Statement
    signature: bytes

    def to_cell(self) -> Cell:
        return begin_cell().store_bytes(self.signature).store_ref(self.statement.to_cell()).end_cell()

    @classmethod
    def from_cell(cls, c: Cell) -> "SignedStatement":
        s = c.begin_parse()
        sig = s.load_bytes(64)
        return cls(Statement.from_cell(s.load_ref()), sig)

    def verify(self, public_key: int | bytes) -> bool:
        return verify_statement(public_key, self.statement, self.signature)


def payload_cell(data: bytes) -> Cell:
    """A payload from bytes (at most 127): e.g. a receipt hash or a short usage record."""
    if len(data) > 127:
        raise ValueError("a statement payload given as bytes is at most 127 bytes; build a cell tree instead")
    return begin_cell().store_bytes(data).end_cell()


def sign_statement(private: Ed25519PrivateKey, statement: Statement) -> SignedStatement:
    """Ed25519 over the representation hash of the statement cell (what CHKSIGNU checks)."""
    return SignedStatement(statement, K.sign(private, statement.hash))


def verify_statement(public_key: int | bytes, statement: Statement, signature: bytes) -> bool:
    return K.verify(public_key, signature, statement.hash)


def is_equivocation(a: SignedStatement, b: SignedStatement, public_key: int | bytes) -> bool:
    """What the contract accepts as evidence: same stake, kind, context and seqno, different
    statements, both signed by ``public_key``."""
    x, y = a.statement, b.statement
    return ((x.stake, x.kind, x.context, x.seqno) == (y.stake, y.kind, y.context, y.seqno)
            and x.hash != y.hash and a.verify(public_key) and b.verify(public_key))


def evidence_id(a: Statement | bytes, b: Statement | bytes) -> int:
    """Hash of the cell lo:uint256 hi:uint256 of the two statement hashes: order-independent."""
    ha = int.from_bytes(a.hash if isinstance(a, Statement) else a, "big")
    hb = int.from_bytes(b.hash if isinstance(b, Statement) else b, "big")
    lo, hi = sorted((ha, hb))
    return int.from_bytes(begin_cell().store_uint(lo, 256).store_uint(hi, 256).end_cell().hash, "big")


# ---------------------------------------------------------------------------- message bodies
def _head(op: str, query_id: int) -> Builder:
    return begin_cell().store_uint(OP[op], 32).store_uint(query_id, 64)


def deposit(query_id: int = 0) -> Cell:
    return _head("deposit", query_id).end_cell()


def unbond(amount: int, query_id: int = 0) -> Cell:
    return _head("unbond", query_id).store_coins(amount).end_cell()


def withdraw(query_id: int = 0) -> Cell:
    return _head("withdraw", query_id).end_cell()


def set_operator(key: int | bytes, query_id: int = 0) -> Cell:
    return _head("set_operator", query_id).store_uint(K.key_int(key), 256).end_cell()


def register_proxy(endpoint: str, query_id: int = 0) -> Cell:
    return _head("register_proxy", query_id).store_ref(R.endpoint_cell(endpoint)).end_cell()


def refresh_params(query_id: int = 0) -> Cell:
    return _head("refresh_params", query_id).end_cell()


def report_equivocation(first: SignedStatement | Cell, second: SignedStatement | Cell, query_id: int = 0) -> Cell:
    a = first.to_cell() if isinstance(first, SignedStatement) else first
    b = second.to_cell() if isinstance(second, SignedStatement) else second
    return _head("report_equivocation", query_id).store_ref(a).store_ref(b).end_cell()


def credited(value: int) -> int:
    """What a deposit of ``value`` adds to the active stake."""
    return max(0, value - DEPOSIT_FEE)


# ---------------------------------------------------------------------------- getters
@dataclass
class StakeState:
    registry: Address
    owner: Address
    role: int
    operator_key: int
    active: int
    unbonding: int
    jailed: bool
    is_active: bool
    params_ready: bool


@dataclass
class UnbondRequest:
    id: int
    amount: int
    unlock_at: int


@dataclass
class Unbonding:
    requests: list[UnbondRequest]
    withdrawable_now: int
    next_unlock: int

    @property
    def total(self) -> int:
        return sum(r.amount for r in self.requests)


@dataclass
class Keys:
    operator_key: int
    retired_key: int
    retired_until: int


@dataclass
class Slashing:
    slashed_total: int
    slashes: int
    evidence: int


class Stake(Contract):
    """The stake of (registry, owner, role) over ``provider`` (see :mod:`wrappers.chain.contract`).
    ``from_init`` derives its address; its first message (a deposit) deploys it."""

    DEPLOYS_ON_SEND = True
    SEND_VALUE = OP_VALUE
    registry: Optional[Address] = None  # these three are known when built with from_init
    owner: Optional[Address] = None
    role: Optional[int] = None

    @classmethod
    def from_init(cls, provider, registry: Address, owner: Address, role: int, *, code: Optional[Cell] = None,
                  lang: str = "tolk") -> "Stake":
        """``code`` defaults to the ``lang`` build; it must be the registry's stake code."""
        si = stake_state_init(code or stake_code(lang), registry, owner, role)
        out = cls(provider, R.address_of(si), si)
        out.registry, out.owner, out.role = registry, owner, role
        return out

    # ------------------------------------------------------------------ messages (the owner's, bar reports)
    async def send_deposit(self, via, value: int, query_id: int = 0) -> list:
        """Attach ``value``; :func:`credited` (value - DEPOSIT_FEE) is what the active stake gains."""
        return await self.send(via, value, deposit(query_id))

    async def send_unbond(self, via, amount: int, value: int = OP_VALUE, query_id: int = 0) -> list:
        return await self.send(via, value, unbond(amount, query_id))

    async def send_withdraw(self, via, value: int = OP_VALUE, query_id: int = 0) -> list:
        return await self.send(via, value, withdraw(query_id))

    async def send_set_operator(self, via, key: int | bytes, value: int = OP_VALUE, query_id: int = 0) -> list:
        return await self.send(via, value, set_operator(key, query_id))

    async def send_register_proxy(self, via, endpoint: str, value: int = OP_VALUE, query_id: int = 0) -> list:
        return await self.send(via, value, register_proxy(endpoint, query_id))

    async def send_refresh_params(self, via, value: int = REFRESH_VALUE, query_id: int = 0) -> list:
        return await self.send(via, value, refresh_params(query_id))

    async def send_report_equivocation(self, via, first: SignedStatement | Cell, second: SignedStatement | Cell,
                                       value: int = REPORT_VALUE, query_id: int = 0) -> list:
        """Anyone may report; the reporter's share of the slash is paid to ``via``."""
        return await self.send(via, value, report_equivocation(first, second, query_id))

    # ------------------------------------------------------------------ getters
    async def get_state(self) -> StakeState:
        reg, owner, role, key, active, unbonding, jailed, is_active, ready = await self.get("get_stake")
        return StakeState(reg.load_address(), owner.load_address(), role, key, active, unbonding,
                          bool(jailed), bool(is_active), bool(ready))

    async def get_unbonding(self) -> Unbonding:
        queue, _count, withdrawable, next_unlock = await self.get("get_unbonding")
        reqs = []
        if queue is not None:
            raw = HashMap.parse(queue.begin_parse(), 32, lambda k: int(k, 2), lambda s: (s.load_coins(), s.load_uint(32)))
            reqs = [UnbondRequest(i, a, u) for i, (a, u) in sorted(raw.items())]
        return Unbonding(reqs, withdrawable, next_unlock)

    async def get_params(self) -> tuple[int, Optional[R.Staking]]:
        """(the registry's parameter version it holds, its staking parameters or None before any)."""
        version, staking = await self.get("get_params")
        return version, (R.Staking.from_cell(staking) if staking is not None else None)

    async def get_keys(self) -> Keys:
        return Keys(*await self.get("get_keys"))

    async def get_slashing(self) -> Slashing:
        return Slashing(*await self.get("get_slashing"))

    async def is_active(self) -> bool:
        return bool((await self.get("is_active"))[0])

    async def serves_with(self, operator_key: int | bytes) -> bool:
        """What a proxy checks before routing to a worker: the stake is active (at least the minimum,
        not jailed) and bound to the key in the worker's attestation."""
        st = await self.get_state()
        return st.is_active and st.operator_key == K.key_int(operator_key)


StakeReader = reader_class(
    Stake, ("state", "unbonding", "params", "keys", "slashing", "is_active", "serves_with"),
    "Reads a stake through a synchronous ``call(address, method, stack) -> list``; each method is\n"
    ":class:`Stake`'s ``get_*`` (or predicate).")


def storage_deficit(balance: int, state: "StakeState") -> int:
    """What an owner's operation must attach on top of its minimum (102 otherwise): the storage fees
    that took the reserve below active + unbonding + MIN_RESERVE, beyond RENT_ALLOWANCE. ``balance``
    is the account's balance as last seen; rent due since then comes on top."""
    return max(0, state.active + state.unbonding + MIN_RESERVE - RENT_ALLOWANCE - balance)


def min_stake(staking: R.Staking, role: int) -> int:
    return staking.min_worker_stake if role == ROLE_WORKER else staking.min_proxy_stake


def payout_reason(body: Cell) -> Optional[int]:
    """The reason of a payout body (1 withdrawal, 2 reporter, 3 treasury), or None for another body."""
    s = body.begin_parse()
    if s.remaining_bits < 32 + 64 + 8 or s.load_uint(32) != OP["payout"]:
        return None
    s.skip_bits(64)
    return s.load_uint(8)


def derive_operator_key(label: str) -> Ed25519PrivateKey:
    """A reproducible test key from a label (tests and the demo; real keys come from the TEE)."""
    return K.signing_key(hashlib.sha256(b"cocoon-operator:" + label.encode()).digest())

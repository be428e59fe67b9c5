"""The registry contract in Python: its messages, storage, parameters, getters and child addresses.

This module is the one Python place that knows the registry's layouts (contracts/registry.tlb and
contracts/common.tlb). The CLI, the demo, the services and the tests build and read registry
messages only through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pytoniq_core import Address, Builder, Cell, HashMap, begin_cell
from pytoniq_core.tlb.account import StateInit

from . import TON
from .build import load_code
from .chain.contract import Contract, address_of, reader_class
from .errors import describe_error as _describe, names_for

# ---------------------------------------------------------------------------- opcodes and errors
OP_EXCESSES = 0xD53276DB
OP = dict(
    revoke_worker_image=0x23EF2D6A, revoke_proxy_image=0x0396E7F9, revoke_model=0x755AE751,
    remove_proxy=0x694D02D3, propose=0x22B2C1ED, cancel_proposal=0x76768CD0, execute_proposal=0x60F18064,
    transfer_ownership=0x693DE2EB, accept_ownership=0x18B6395E, query_params=0x5DCA325B,
    params_response=0x0C175CF1, stake_status=0x262D68DF, register_proxy=0x39EBFEF1,
    unregister_proxy=0x1D320B0F, governance_slash=0x6B7D77DC,
    submit_report=0x725DF93D, stake_slashed=0x74A3955A, apply_report=0x4EE1D9DD, record_slash=0x2105B961,
)
REPORT_TAG = 0x52455054  # "REPT": the signature domain of reputation reports
ACTION = dict(add_worker_image=1, add_proxy_image=2, add_model=3, set_params=4, set_child_codes=5,
              upgrade_code=6, slash_stake=7, readmit_proxy=8)


class Err:
    """Exit codes thrown by the contracts (common.tlb); names and meanings in :mod:`wrappers.errors`."""
    UNKNOWN_OP = 100
    NOT_OWNER = 101
    LOW_VALUE = 102
    WRONG_SENDER = 103
    BAD_WORKCHAIN = 104
    MALFORMED = 105
    HASH_EXISTS = 200
    HASH_UNKNOWN = 201
    PROPOSAL_UNKNOWN = 202
    PROPOSAL_NOT_READY = 203
    TOO_MANY_PROPOSALS = 204
    NOT_PENDING_OWNER = 205
    PROXY_UNKNOWN = 206
    STAKE_TOO_LOW = 207
    TOO_MANY_PROXIES = 208
    BAD_PARAMS = 209
    NO_CHILD_CODE = 210
    BAD_ROLE = 211
    BAD_ACTION = 212
    BAD_SIGNATURE = 213
    PROXY_REMOVED = 214
    TOO_MANY_CODES = 215


ERROR_NAMES = names_for("registry")
ROLE_WORKER, ROLE_PROXY = 1, 2
MIN_OP_VALUE = 10_000_000          # 0.01 TON: every registry operation
REPORT_VALUE = 50_000_000          # 0.05 TON: relaying a reputation report
SLASH_EXEC_VALUE = 150_000_000     # 0.15 TON: executing a slash_stake proposal
SLASH_MESSAGE_VALUE = 100_000_000  # 0.1 TON of it goes with governance_slash to the stake contract
MAX_OPEN_PROPOSALS = 16


def describe_error(code: Optional[int]) -> str:
    return _describe(code, ERROR_NAMES)


# ---------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Economics:
    price_per_token: int = 20
    worker_fee_per_token: int = 16
    prompt_mult: int = 10_000
    cached_mult: int = 1_000
    completion_mult: int = 40_000
    reasoning_mult: int = 40_000
    min_escrow_deposit: int = 1 * TON
    close_delay: int = 3600

    def to_cell(self) -> Cell:
        return (begin_cell().store_coins(self.price_per_token).store_coins(self.worker_fee_per_token)
                .store_uint(self.prompt_mult, 32).store_uint(self.cached_mult, 32)
                .store_uint(self.completion_mult, 32).store_uint(self.reasoning_mult, 32)
                .store_coins(self.min_escrow_deposit).store_uint(self.close_delay, 32).end_cell())

    @classmethod
    def from_cell(cls, c: Cell) -> "Economics":
        s = c.begin_parse()
        return cls(s.load_coins(), s.load_coins(), s.load_uint(32), s.load_uint(32), s.load_uint(32),
                   s.load_uint(32), s.load_coins(), s.load_uint(32))


@dataclass(frozen=True)
class Staking:
    treasury: Address
    min_worker_stake: int = 10 * TON
    min_proxy_stake: int = 50 * TON
    unbonding_period: int = 7 * 86400
    slash_bps: int = 5_000
    reporter_bps: int = 1_000

    def to_cell(self) -> Cell:
        return (begin_cell().store_coins(self.min_worker_stake).store_coins(self.min_proxy_stake)
                .store_uint(self.unbonding_period, 32).store_uint(self.slash_bps, 16)
                .store_uint(self.reporter_bps, 16).store_address(self.treasury).end_cell())

    @classmethod
    def from_cell(cls, c: Cell) -> "Staking":
        s = c.begin_parse()
        mw, mp, up, sb, rb = s.load_coins(), s.load_coins(), s.load_uint(32), s.load_uint(16), s.load_uint(16)
        return cls(treasury=s.load_address(), min_worker_stake=mw, min_proxy_stake=mp, unbonding_period=up,
                   slash_bps=sb, reporter_bps=rb)


@dataclass(frozen=True)
class NetworkParams:
    staking: Staking
    economics: Economics = field(default_factory=Economics)
    is_test: bool = False
    governance_delay: int = 86400
    max_proxies: int = 64

    def to_cell(self) -> Cell:
        return (begin_cell().store_uint(1 if self.is_test else 0, 8).store_uint(self.governance_delay, 32)
                .store_uint(self.max_proxies, 16).store_ref(self.economics.to_cell())
                .store_ref(self.staking.to_cell()).end_cell())

    @classmethod
    def from_cell(cls, c: Cell) -> "NetworkParams":
        s = c.begin_parse()
        flags, delay, maxp = s.load_uint(8), s.load_uint(32), s.load_uint(16)
        econ, stk = Economics.from_cell(s.load_ref()), Staking.from_cell(s.load_ref())
        return cls(staking=stk, economics=econ, is_test=bool(flags & 1), governance_delay=delay, max_proxies=maxp)

    def problems(self) -> list[str]:
        """The validity rules of registry.tlb, checked before a proposal is sent."""
        e, s = self.economics, self.staking
        out = []
        if s.slash_bps > 10_000 or s.reporter_bps > 10_000:
            out.append("slash and reporter shares are basis points and must be at most 10000")
        if min(e.prompt_mult, e.cached_mult, e.completion_mult, e.reasoning_mult) <= 0:
            out.append("token multipliers must be positive")
        if e.worker_fee_per_token > e.price_per_token:
            out.append("the worker fee per token cannot exceed the price per token")
        if self.max_proxies <= 0:
            out.append("max_proxies must be positive")
        if self.governance_delay > 365 * 86400:
            out.append("the governance delay must be at most one year")
        if e.close_delay > 365 * 86400:
            out.append("the close delay must be at most one year")
        if s.unbonding_period <= 0 or s.unbonding_period < 2 * self.governance_delay:
            out.append("the unbonding period must be positive and at least twice the governance delay, "
                       "so that a provider cannot withdraw before a governance slash executes")
        return out


@dataclass(frozen=True)
class ChildCodes:
    stake: Optional[Cell] = None
    escrow: Optional[Cell] = None
    reputation: Optional[Cell] = None

    def to_cell(self) -> Cell:
        b = begin_cell()
        for c in (self.stake, self.escrow, self.reputation):
            b.store_maybe_ref(c)
        return b.end_cell()

    @classmethod
    def from_cell(cls, c: Cell) -> "ChildCodes":
        s = c.begin_parse()
        return cls(s.load_maybe_ref(), s.load_maybe_ref(), s.load_maybe_ref())


# ---------------------------------------------------------------------------- storage and deploy
def _hash_dict(hashes: dict[int, int] | None) -> Optional[Cell]:
    if not hashes:
        return None
    hm = HashMap(256, value_serializer=lambda v, b: b.store_uint(v, 32))
    for k, v in hashes.items():
        hm.set_int_key(k, v)
    return hm.serialize()


def initial_data(owner: Address, params: NetworkParams, codes: ChildCodes = ChildCodes(),
                 worker_images: dict[int, int] | None = None, proxy_images: dict[int, int] | None = None,
                 models: dict[int, int] | None = None) -> Cell:
    """RegistryStorage at deployment. Initial trust lists are the deployer's choice; every later
    addition goes through a proposal."""
    trust = (begin_cell().store_dict(_hash_dict(worker_images)).store_dict(_hash_dict(proxy_images))
             .store_dict(_hash_dict(models)).end_cell())
    book = (begin_cell().store_dict(None).store_uint(0, 8).store_dict(None).store_uint(0, 16)
            .store_dict(None).store_dict(None).end_cell())     # removed proxies, earlier stake codes
    return (begin_cell().store_address(owner).store_address(None).store_uint(0, 32).store_uint(0, 32)
            .store_ref(trust).store_ref(params.to_cell()).store_ref(codes.to_cell()).store_ref(book).end_cell())


def state_init(code: Cell, data: Cell) -> StateInit:
    return StateInit(code=code, data=data)


# ---------------------------------------------------------------------------- child addresses
def stake_identity(owner: Address, role: int) -> Cell:
    return begin_cell().store_address(owner).store_uint(role, 8).end_cell()


def escrow_identity(payer: Address, payee: Address, payer_key: int | bytes) -> Cell:
    if isinstance(payer_key, bytes):
        payer_key = int.from_bytes(payer_key, "big")
    return begin_cell().store_address(payer).store_address(payee).store_uint(payer_key, 256).end_cell()


def reputation_identity(worker_owner: Address) -> Cell:
    return begin_cell().store_address(worker_owner).end_cell()


def child_state_init(code: Cell, registry: Address, identity: Cell) -> StateInit:
    data = begin_cell().store_address(registry).store_ref(identity).end_cell()
    return StateInit(code=code, data=data)


def child_address(code: Cell, registry: Address, identity: Cell) -> Address:
    return address_of(child_state_init(code, registry, identity))


# ---------------------------------------------------------------------------- message bodies
def _head(op: str, query_id: int) -> Builder:
    return begin_cell().store_uint(OP[op], 32).store_uint(query_id, 64)


def revoke(kind: str, h: int | bytes, query_id: int = 0) -> Cell:
    """kind: 'worker_image', 'proxy_image' or 'model'."""
    return _head(f"revoke_{kind}", query_id).store_uint(_int(h), 256).end_cell()


def remove_proxy(owner_hash: int | bytes, query_id: int = 0) -> Cell:
    return _head("remove_proxy", query_id).store_uint(_int(owner_hash), 256).end_cell()


def propose(action: Cell, query_id: int = 0) -> Cell:
    return _head("propose", query_id).store_ref(action).end_cell()


def cancel_proposal(pid: int, query_id: int = 0) -> Cell:
    return _head("cancel_proposal", query_id).store_uint(pid, 32).end_cell()


def execute_proposal(pid: int, query_id: int = 0) -> Cell:
    return _head("execute_proposal", query_id).store_uint(pid, 32).end_cell()


def transfer_ownership(new_owner: Optional[Address], query_id: int = 0) -> Cell:
    return _head("transfer_ownership", query_id).store_address(new_owner).end_cell()


def accept_ownership(query_id: int = 0) -> Cell:
    return _head("accept_ownership", query_id).end_cell()


def query_params(query_id: int = 0) -> Cell:
    return _head("query_params", query_id).end_cell()


def unregister_proxy(query_id: int = 0) -> Cell:
    return _head("unregister_proxy", query_id).end_cell()


def stake_status(owner: Address, role: int, active: bool, operator_key: int | bytes, active_stake: int,
                 query_id: int = 0) -> Cell:
    return (_head("stake_status", query_id).store_address(owner).store_uint(role, 8).store_bit(active)
            .store_uint(_int(operator_key), 256).store_coins(active_stake).end_cell())


def register_proxy(owner: Address, operator_key: int | bytes, active_stake: int, active: bool, endpoint: str,
                   query_id: int = 0) -> Cell:
    return (_head("register_proxy", query_id).store_address(owner).store_uint(_int(operator_key), 256)
            .store_coins(active_stake).store_bit(active).store_ref(endpoint_cell(endpoint)).end_cell())


def reputation_report(registry: Address, proxy_owner_hash: int | bytes, worker_owner: Address, epoch: int,
                      stats: Cell) -> Cell:
    """The signed part of a reputation report (registry.tlb); the stats layout is reputation.tlb's."""
    return (begin_cell().store_uint(REPORT_TAG, 32).store_address(registry).store_uint(_int(proxy_owner_hash), 256)
            .store_address(worker_owner).store_uint(epoch, 32).store_ref(stats).end_cell())


def submit_report(signature: bytes, report: Cell, query_id: int = 0) -> Cell:
    """Relay a report (anyone may): the signature is the proxy operator key's Ed25519 over the
    report cell's hash."""
    if len(signature) != 64:
        raise ValueError("an Ed25519 signature is 64 bytes")
    return _head("submit_report", query_id).store_bytes(signature).store_ref(report).end_cell()


def stake_slashed(owner: Address, role: int, amount: int, kind: int, query_id: int = 0) -> Cell:
    return (_head("stake_slashed", query_id).store_address(owner).store_uint(role, 8).store_coins(amount)
            .store_uint(kind, 8).end_cell())


def endpoint_cell(endpoint: str) -> Cell:
    data = endpoint.encode()
    if len(data) > 127:
        raise ValueError("an endpoint is at most 127 bytes (host:port)")
    return begin_cell().store_bytes(data).end_cell()


def endpoint_str(c: Optional[Cell]) -> str:
    if c is None:
        return ""
    s = c.begin_parse()
    return s.load_bytes(s.remaining_bits // 8).decode(errors="replace")


def _int(v: int | bytes | str) -> int:
    if isinstance(v, bytes):
        if len(v) != 32:
            raise ValueError("a hash or key is 32 bytes")
        return int.from_bytes(v, "big")
    if isinstance(v, str):
        v = v.removeprefix("0x")
        if len(v) != 64:
            raise ValueError(f"a hash is 64 hex digits, got {len(v)}")
        return int(v, 16)
    if not 0 <= v < 2**256:
        raise ValueError("a hash or key is a 256-bit unsigned integer")
    return v


# ---------------------------------------------------------------------------- governance actions
def action_add(kind: str, h: int | bytes | str) -> Cell:
    """kind: 'worker_image', 'proxy_image' or 'model'."""
    return begin_cell().store_uint(ACTION[f"add_{kind}"], 8).store_uint(_int(h), 256).end_cell()


def action_set_params(params: NetworkParams) -> Cell:
    return begin_cell().store_uint(ACTION["set_params"], 8).store_ref(params.to_cell()).end_cell()


def action_set_child_codes(codes: ChildCodes) -> Cell:
    return begin_cell().store_uint(ACTION["set_child_codes"], 8).store_ref(codes.to_cell()).end_cell()


def action_upgrade_code(code: Cell) -> Cell:
    return begin_cell().store_uint(ACTION["upgrade_code"], 8).store_ref(code).end_cell()


def action_slash_stake(owner: Address, role: int, amount: int, evidence: int | bytes,
                       code_hash: int | bytes = 0) -> Cell:
    """code_hash: the stake's code; 0 = the registry's current stake code, which it stores in the proposal."""
    return (begin_cell().store_uint(ACTION["slash_stake"], 8).store_address(owner).store_uint(role, 8)
            .store_coins(amount).store_uint(_int(evidence), 256).store_uint(_int(code_hash), 256).end_cell())


def action_readmit_proxy(owner_hash: int | bytes) -> Cell:
    """Lets a proxy removed by the owner register again (a removal holds until this executes)."""
    return begin_cell().store_uint(ACTION["readmit_proxy"], 8).store_uint(_int(owner_hash), 256).end_cell()


def describe_action(c: Cell) -> str:
    s = c.begin_parse()
    tag = s.load_uint(8)
    name = {v: k for k, v in ACTION.items()}.get(tag, f"unknown#{tag}")
    if tag in (1, 2, 3):
        return f"{name} {s.load_uint(256):064x}"
    if tag == 4:
        p = NetworkParams.from_cell(s.load_ref())
        return f"{name} (test={p.is_test}, delay={p.governance_delay}s, price={p.economics.price_per_token})"
    if tag == 7:
        owner, role, amount = s.load_address(), s.load_uint(8), s.load_coins()
        return f"{name} {owner.to_str()} role={role} amount={amount}"
    if tag == 8:
        return f"{name} {s.load_uint(256):064x}"
    return name


# ---------------------------------------------------------------------------- getters
def _dict_keys(c: Optional[Cell]) -> dict[int, int]:
    if c is None:
        return {}
    return HashMap.parse(c.begin_parse(), 256, lambda k: int(k, 2), lambda s: s.load_uint(32))


@dataclass
class ProxyInfo:
    owner_hash: int
    operator_key: int
    stake: int
    active: bool
    registered_at: int
    endpoint: str


@dataclass
class Proposal:
    id: int
    execute_after: int
    action: Cell


class Registry(Contract):
    """The registry at ``address`` over ``provider`` (see :mod:`wrappers.chain.contract`):
    ``from_init`` derives the address, ``send_*`` send its messages, ``get_*`` parse its getters."""

    SEND_VALUE = 50_000_000

    @classmethod
    def from_init(cls, provider, owner: Address, params: NetworkParams, codes: ChildCodes = ChildCodes(), *,
                  lang: str = "tolk", code: Optional[Cell] = None, workchain: int = 0, **trust) -> "Registry":
        """The registry ``owner`` deploys with these parameters, child codes and initial trust lists
        (``worker_images``, ``proxy_images``, ``models``); ``code`` defaults to the ``lang`` build."""
        si = state_init(code or registry_code(lang), initial_data(owner, params, codes, **trust))
        return cls(provider, address_of(si, workchain), si)

    # ------------------------------------------------------------------ messages
    async def send_deploy(self, via, value: int = None) -> list:
        return await self.send(via, DEPLOY_VALUE if value is None else value, None, bounce=False, deploy=True)

    async def send_propose(self, via, action: Cell, value: int = None, query_id: int = 0) -> list:
        return await self.send(via, value, propose(action, query_id))

    async def send_execute_proposal(self, via, pid: int, value: int = None, query_id: int = 0) -> list:
        return await self.send(via, value, execute_proposal(pid, query_id))

    async def send_cancel_proposal(self, via, pid: int, value: int = None, query_id: int = 0) -> list:
        return await self.send(via, value, cancel_proposal(pid, query_id))

    async def send_revoke(self, via, kind: str, h: int | bytes, value: int = None, query_id: int = 0) -> list:
        return await self.send(via, value, revoke(kind, h, query_id))

    async def send_remove_proxy(self, via, owner_hash: int | bytes, value: int = None, query_id: int = 0) -> list:
        return await self.send(via, value, remove_proxy(owner_hash, query_id))

    async def send_transfer_ownership(self, via, new_owner: Optional[Address], value: int = None,
                                      query_id: int = 0) -> list:
        return await self.send(via, value, transfer_ownership(new_owner, query_id))

    async def send_accept_ownership(self, via, value: int = None, query_id: int = 0) -> list:
        return await self.send(via, value, accept_ownership(query_id))

    async def send_report(self, via, signature: bytes, report: Cell, value: int = REPORT_VALUE,
                          query_id: int = 0) -> list:
        """Relay a signed reputation report (anyone may)."""
        return await self.send(via, value, submit_report(signature, report, query_id))

    # ------------------------------------------------------------------ getters
    async def get_owner(self) -> tuple[Address, Optional[Address]]:
        o, p = await self.get("get_owner")
        return o.load_address(), p.load_address()

    async def get_version(self) -> int:
        return (await self.get("get_version"))[0]

    async def get_params(self) -> NetworkParams:
        return NetworkParams.from_cell((await self.get("get_params"))[0])

    async def get_trust(self) -> dict[str, dict[int, int]]:
        w, p, m = await self.get("get_trust")
        return {"worker_images": _dict_keys(w), "proxy_images": _dict_keys(p), "models": _dict_keys(m)}

    async def is_allowed(self, kind: str, h: int | bytes | str) -> bool:
        """kind: 'worker_image', 'proxy_image' or 'model'."""
        return bool((await self.get(f"is_{kind}_allowed", _int(h)))[0])

    async def get_child_codes(self) -> ChildCodes:
        return ChildCodes(*await self.get("get_child_codes"))

    async def get_proxy(self, owner: Address | int) -> Optional[ProxyInfo]:
        key = owner if isinstance(owner, int) else int.from_bytes(owner.hash_part, "big")
        found, op_key, stake, active, at, endpoint = await self.get("get_proxy", key)
        if not found:
            return None
        return ProxyInfo(key, op_key, stake, bool(active), at, endpoint_str(endpoint))

    async def get_proxies(self) -> list[ProxyInfo]:
        c, _count = await self.get("get_proxies")
        if c is None:
            return []
        out = []
        raw = HashMap.parse(c.begin_parse(), 256, lambda k: int(k, 2), lambda s: s)
        for key, s in sorted(raw.items()):
            s.load_address()
            out.append(ProxyInfo(key, s.load_uint(256), s.load_coins(), bool(s.load_bit()), s.load_uint(32),
                                 endpoint_str(s.load_ref())))
        return out

    async def get_proposal(self, pid: int) -> Optional[Proposal]:
        found, after, action = await self.get("get_proposal", pid)
        return Proposal(pid, after, action) if found else None

    async def get_proposals(self) -> tuple[list[Proposal], int]:
        """(open proposals, the id the next one gets)."""
        c, next_id, _open = await self.get("get_proposals")
        out = []
        if c is not None:
            raw = HashMap.parse(c.begin_parse(), 32, lambda k: int(k, 2), lambda s: s)
            for pid, s in sorted(raw.items()):
                out.append(Proposal(pid, s.load_uint(32), s.load_ref()))
        return out, next_id

    async def get_stake_address(self, owner: Address, role: int) -> Address:
        return (await self.get("get_stake_address", owner, role))[0].load_address()

    async def get_escrow_address(self, payer: Address, payee: Address, payer_key: int | bytes) -> Address:
        return (await self.get("get_escrow_address", payer, payee, _int(payer_key)))[0].load_address()

    async def get_reputation_address(self, worker_owner: Address) -> Address:
        return (await self.get("get_reputation_address", worker_owner))[0].load_address()


RegistryReader = reader_class(
    Registry, ("owner", "version", "params", "trust", "is_allowed", "child_codes", "proxy", "proxies", "proposal",
               "proposals", "stake_address", "escrow_address", "reputation_address"),
    "Reads a registry through a synchronous ``call(address, method, stack) -> list``; each method is\n"
    ":class:`Registry`'s ``get_*``.")


def registry_code(lang: str) -> Cell:
    return load_code("registry", lang)


DEPLOY_VALUE = 1 * TON  # what deploying the registry sends (its first balance)

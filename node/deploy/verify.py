"""What a chain holds at the registry's address, and whether it is what the deployment file asks for.

:func:`observe` reads the account (status, code, balance, last transaction) and, when it is active,
everything the checks need through the registry's get-methods. :func:`verify` compares field by
field and returns named :class:`Check` results:

* ``registry.status`` active; ``registry.code_hash`` the committed artifact's code hash;
* ``owner`` the owner's wallet;
* ``children.<name>.code_hash`` each child code equal to its artifact, absent when not configured;
* ``params.<field>`` and ``params.economics.<field>``, ``params.staking.<field>`` every parameter
  read back equal to the file;
* ``trust.<kind>.<hash>`` every hash of the file's initial trust lists allowed. Trust lists grow
  through governance after deployment, so hashes the file does not list are reported, not failed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

from pytoniq_core import Address, Cell

from wrappers import registry as R
from wrappers.chain.contract import account_state

from .config import CHILDREN, TRUST_KINDS
from .plan import Expected

PARAM_NAMES = {"is_test": "test_network"}


@dataclass
class Observed:
    address: Address
    status: str                                 # nonexist, uninit, active, frozen
    balance: int = 0
    code_hash: Optional[str] = None
    last_tx_hash: Optional[str] = None
    last_tx_lt: int = 0
    owner: Optional[Address] = None
    params: Optional[R.NetworkParams] = None
    children: dict[str, Optional[str]] = field(default_factory=dict)   # name -> code hash
    trust: dict[str, set[int]] = field(default_factory=dict)
    proposals: list[R.Proposal] = field(default_factory=list)
    next_proposal: int = 0

    @property
    def active(self) -> bool:
        return self.status == "active"

    def pending(self, action: Cell) -> Optional[R.Proposal]:
        """An open proposal with exactly this action, if any."""
        for p in self.proposals:
            if p.action.hash == action.hash:
                return p
        return None


async def read_account(provider, address: Address) -> Observed:
    """Status, code hash, balance and last transaction of an account, through any provider."""
    account, shard = await provider.raw_get_account_state(address)
    status, code, _data = account_state(account)
    if account is None:
        return Observed(address, status)
    obs = Observed(address, status, balance=account.storage.balance.grams)
    if code is not None:
        obs.code_hash = code.hash.hex()
    if shard is not None:
        h = shard.last_trans_hash
        obs.last_tx_hash = (h.hex() if isinstance(h, bytes) else f"{h:064x}") if h else None
        obs.last_tx_lt = shard.last_trans_lt
    return obs


async def observe(net, address: Address) -> Observed:
    """Everything the checks need, read from ``net`` (a :class:`node.chain.Network`)."""
    obs = await read_account(net.provider, address)
    if not obs.active:
        return obs
    reg = net.contract(R.Registry, address)
    obs.owner = (await reg.get_owner())[0]
    obs.params = await reg.get_params()
    codes = await reg.get_child_codes()
    obs.children = {n: (getattr(codes, n).hash.hex() if getattr(codes, n) is not None else None) for n in CHILDREN}
    obs.trust = {k: set(v) for k, v in (await reg.get_trust()).items()}
    obs.proposals, obs.next_proposal = await reg.get_proposals()
    return obs


@dataclass
class Check:
    field: str
    expected: Any
    actual: Any

    @property
    def ok(self) -> bool:
        return self.expected == self.actual

    def to_json(self) -> dict:
        return {"field": self.field, "expected": self.expected, "actual": self.actual, "ok": self.ok}


def _plain(v: Any) -> Any:
    if isinstance(v, Address):
        return v.to_str(is_user_friendly=False)
    return v


def param_items(p: R.NetworkParams) -> dict[str, Any]:
    """Every parameter under the name the deployment file and the checks use."""
    out = {}
    for f in fields(p):
        if f.name in ("economics", "staking"):
            continue
        out[f"params.{PARAM_NAMES.get(f.name, f.name)}"] = getattr(p, f.name)
    for sub in ("economics", "staking"):
        part = getattr(p, sub)
        for f in fields(part):
            out[f"params.{sub}.{f.name}"] = _plain(getattr(part, f.name))
    return out


def verify(exp: Expected, obs: Observed) -> list[Check]:
    checks = [Check("registry.status", "active", obs.status)]
    if not obs.active:
        return checks
    checks.append(Check("registry.code_hash", exp.code_hash, obs.code_hash))
    checks.append(Check("owner", _plain(exp.owner), _plain(obs.owner)))
    for n in CHILDREN:
        checks.append(Check(f"children.{n}.code_hash", exp.child_hash(n), obs.children.get(n)))
    want, got = param_items(exp.params), param_items(obs.params)
    checks.extend(Check(k, v, got[k]) for k, v in want.items())
    for kind in TRUST_KINDS:
        for h in exp.trust.get(kind, ()):
            checks.append(Check(f"trust.{kind}.{h:064x}", "allowed",
                                "allowed" if h in obs.trust.get(kind, set()) else "not allowed"))
    return checks


def extra_trust(exp: Expected, obs: Observed) -> dict[str, list[str]]:
    """Hashes allowed on chain that the file does not list (added through governance later)."""
    out = {}
    for kind in TRUST_KINDS:
        extra = sorted(obs.trust.get(kind, set()) - set(exp.trust.get(kind, ())))
        if extra:
            out[kind] = [f"{h:064x}" for h in extra]
    return out

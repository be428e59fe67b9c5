"""One world of the differential machine: an embedded chain with the registry of one language deployed
with the real child codes of the same language, the same named wallets and keys in every world, and the
abstract operations of the machine turned into real messages through the wrappers.

The two builds have different code, hence different addresses for the registry and every child
contract. Everything a world reports is normalised: contract addresses (as ``Address`` objects, inside
cells, or as 256-bit integers) become role names such as ``stake:alice:2`` or ``escrow:c0``, code cells
become ``code:stake`` etc., and equivocation evidence (a hash over statements that name a stake
address) becomes the name of the abstract statement pair. What remains must be equal between worlds.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from pytoniq_core import Address, Cell, Slice, begin_cell

from wrappers import keys as K
from wrappers import escrow as E
from wrappers import registry as R
from wrappers import reputation as P
from wrappers import stake as S
from wrappers.build import load_code
from wrappers.chain.contract import Instant
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider
from wrappers.chain.fastparse import account_balance, load_addr
from wrappers.chain.cells import to_tonpy as _t
from wrappers.chain.getmethod import GetMethodError, run_get_method
from wrappers import TON

# ------------------------------------------------------------------------------------------ the cast
WALLETS = ("owner", "heir", "dao", "alice", "bob", "carol", "relayer")
PROVIDERS = ("alice", "bob")                  # own worker (1) and proxy (2) stakes
STAKE_OWNERS = ("alice", "bob", "carol")      # carol's stakes are never funded: slashes of nothing
WORKERS = ("alice", "bob")                    # reputation records
ROLES = (S.ROLE_WORKER, S.ROLE_PROXY)

OPERATOR_KEYS = [S.derive_operator_key(f"differential:{i}") for i in range(4)]     # k0..k3
PAYER_KEYS = [K.signing_key(hashlib.sha256(b"differential-payer:%d" % i).digest()) for i in range(2)]  # p0, p1
# an address with no account: payments to it bounce (the escrow keeps them as owed), payouts stay there
GHOST = Address((0, hashlib.sha256(b"differential-ghost").digest()))
# channel name -> (payer, payee, payer key index); c1 shares c0's parties with another key, c4 pays itself,
# c5 pays an address that cannot receive a bounceable payment
CHANNELS = {"c0": ("carol", "alice", 0), "c1": ("carol", "alice", 1), "c2": ("carol", "bob", 0),
            "c3": ("alice", "bob", 1), "c4": ("carol", "carol", 0), "c5": ("carol", "ghost", 0)}


def key_int(i: int) -> int:
    return K.public_key_int(OPERATOR_KEYS[i])


def payer_key_int(i: int) -> int:
    return K.public_key_int(PAYER_KEYS[i])


# ------------------------------------------------------------------------------------------ parameters
def params(variant: int, treasury: Address, other: Address) -> R.NetworkParams:
    """The parameter sets governance may propose (0 is the deployed one). Some are invalid (209)."""
    staking = dict(treasury=treasury, min_worker_stake=10 * TON, min_proxy_stake=50 * TON, unbonding_period=1000,
                   slash_bps=5_000, reporter_bps=1_000)
    economics = dict(min_escrow_deposit=1 * TON, close_delay=500)
    top = dict(governance_delay=100, max_proxies=3)
    if variant == 1:
        top.update(governance_delay=0, max_proxies=1)
    elif variant == 2:
        staking.update(min_worker_stake=30 * TON, min_proxy_stake=70 * TON, unbonding_period=200)  # 2 x delay
    elif variant == 3:
        staking.update(slash_bps=10_000, reporter_bps=10_000)
    elif variant == 4:
        staking.update(slash_bps=10_001)                                 # 209
    elif variant == 5:
        economics.update(min_escrow_deposit=20 * TON, close_delay=0)
    elif variant == 6:
        economics.update(price_per_token=10, worker_fee_per_token=11)    # 209
    elif variant == 7:
        staking.update(treasury=other, slash_bps=0, reporter_bps=0)
    elif variant == 8:
        staking.update(treasury=GHOST)
    elif variant == 9:
        staking.update(unbonding_period=199)                             # 209: below 2 x governance_delay
    elif variant == 10:
        economics.update(close_delay=0xFFFFFFFF)                         # 209: above one year
    return R.NetworkParams(staking=R.Staking(**staking), economics=R.Economics(**economics), **top)


PARAM_VARIANTS = 11


# ------------------------------------------------------------------------------------------ accounts
def _var_uint(s, len_bits: int) -> int:
    n = s.load_uint(len_bits)
    return s.load_uint(8 * n) if n else 0


def account_parts(raw) -> tuple[str, Any, Any]:
    """(status, code, data) of a ShardAccount, read in place on the emulator's cells (no BoC round trip):
    account$1 addr storage_stat:StorageInfo storage:(last_trans_lt balance:CurrencyCollection
    state:AccountState), where account_active$1 carries a StateInit (split_depth, special, code, data,
    library)."""
    if raw is None:
        return "nonexist", None, None
    s = raw.begin_parse().load_ref(as_cs=True)
    if s.load_uint(1) == 0:
        return "nonexist", None, None
    load_addr(s)
    _var_uint(s, 3)                     # storage used: cells
    _var_uint(s, 3)                     # and bits
    if s.load_uint(3) == 1:             # storage_extra_info: dict hash
        s.skip_bits(256)
    s.skip_bits(32)                     # last_paid
    if s.load_uint(1):                  # due_payment
        _var_uint(s, 4)
    s.skip_bits(64)                     # last_trans_lt
    _var_uint(s, 4)                     # balance
    if s.load_uint(1):                  # extra currencies
        s.skip_refs(1)
    if s.load_uint(1) == 0:
        return ("frozen" if s.load_uint(1) else "uninit"), None, None
    if s.load_uint(1):
        s.skip_bits(5)
    if s.load_uint(1):
        s.skip_bits(2)
    code = s.load_ref() if s.load_uint(1) else None
    data = s.load_ref() if s.load_uint(1) else None
    return "active", code, data


# ------------------------------------------------------------------------------------------ the world
class World:
    def __init__(self, lang: str):
        self.lang = lang
        self.chain = c = EmbeddedChain()
        self.w = {n: c.treasury(n) for n in WALLETS}
        self.addr = {n: w.address for n, w in self.w.items()} | {"ghost": GHOST}
        self.codes = R.ChildCodes(S.stake_code(lang), E.escrow_code(lang), load_code("reputation", lang))
        self.provider = EmbeddedProvider(c)
        self.reg = Instant(R.Registry.from_init(self.provider, self.w["owner"].address, self.params(0), self.codes,
                                                lang=lang, worker_images={1 << 240: 1}))
        self.reg.send_deploy(self.w["owner"])
        self.stakes = {(o, r): Instant(S.Stake.from_init(self.provider, self.reg.address, self.w[o].address, r,
                                                         code=self.codes.stake))
                       for o in STAKE_OWNERS for r in ROLES}
        self.escrows = {ch: Instant(E.Escrow.from_init(self.provider, self.reg.address, self.addr[a], self.addr[b],
                                                       payer_key_int(k), code=self.codes.escrow))
                        for ch, (a, b, k) in CHANNELS.items()}
        self.records = {wk: P.reputation_address(self.codes.reputation, self.reg.address, self.w[wk].address)
                        for wk in WALLETS}
        self.rep_read = {wk: P.ReputationReader(self.get_method, a) for wk, a in self.records.items()}

        # names: every account a step can touch, and the contract addresses to rewrite inside cells
        self.names: dict[bytes, str] = {a.hash_part: n for n, a in self.addr.items()}
        self.contracts: dict[str, Address] = {"registry": self.reg.address}
        for (o, r), st in self.stakes.items():
            self.contracts[f"stake:{o}:{r}"] = st.address
        for ch, esc in self.escrows.items():
            self.contracts[f"escrow:{ch}"] = esc.address
        for wk, a in self.records.items():
            self.contracts[f"reputation:{wk}"] = a
        self.int_names: dict[int, str] = {}
        self.bit_subs: list[tuple[str, str]] = []
        for n, a in self.contracts.items():
            self.names[a.hash_part] = n
            self.name_int(int.from_bytes(a.hash_part, "big"), n)
        other = "tolk" if lang == "func" else "func"
        self.registry_codes = {"own": R.registry_code(lang), "other": R.registry_code(other)}
        self.code_names = {self.codes.stake.hash: "code:stake", self.codes.escrow.hash: "code:escrow",
                           self.codes.reputation.hash: "code:reputation",
                           self.registry_codes["own"].hash: "code:registry", self.registry_codes["other"].hash:
                           "code:registry of the other language"}
        self.code_names_hex = {h.hex(): n for h, n in self.code_names.items()}
        for h, n in self.code_names.items():   # code hashes inside cells (a slash names its stake code,
            self.name_int(int.from_bytes(h, "big"), n)   # the registry keys earlier stake codes by hash)
        self._data_cache: dict[str, tuple[Any, Any]] = {}
        self._accounts: dict[str, tuple] = {}
        self._config_t = _t(c.config)
        # readers on the fast get-method
        self.reg_read = R.RegistryReader(self.get_method, self.reg.address)
        self.stake_read = {k: S.StakeReader(self.get_method, st.address) for k, st in self.stakes.items()}
        self.esc_read = {k: E.EscrowReader(self.get_method, e.address) for k, e in self.escrows.items()}
        self.step_subs: list[tuple[str, str]] = []   # signatures of the current step

    def named(self, signature: bytes, name: str) -> bytes:
        """Name a signature of this step: signed statements name world-specific addresses, so the same
        abstract signature has different bytes in each world."""
        self.step_subs.append((format(int.from_bytes(signature, "big"), f"0{len(signature) * 8}b"), f"<sig:{name}>"))
        return signature

    def params(self, variant: int) -> R.NetworkParams:
        return params(variant, self.w["dao"].address, self.w["relayer"].address)

    def name_int(self, value: int, name: str) -> None:
        """Name a 256-bit value that differs between the worlds (an address hash, an evidence id)."""
        if value not in self.int_names:
            self.int_names[value] = name
            self.bit_subs.append((format(value, "0256b"), f"<{name}>"))

    # ------------------------------------------------------------------------------ sending
    def send(self, sender: str, dest: Address, value: int, body: Cell, state_init=None) -> list:
        return self.w[sender].send(dest, value, body, state_init=state_init)

    def to_registry(self, sender: str, body: Cell, value: int) -> list:
        return self.send(sender, self.reg.address, value, body)

    def to_stake(self, sender: str, owner: str, role: int, body: Cell, value: int) -> list:
        return self.stakes[(owner, role)].send(self.w[sender], body, value)

    def to_escrow(self, sender: str, ch: str, body: Cell, value: int, deploy: bool = False) -> list:
        esc = self.escrows[ch]
        return self.send(sender, esc.address, value, body, esc.state_init if deploy else None)

    # ------------------------------------------------------------------------------ statements
    def statement(self, owner: str, role: int, kind: int, context: int, seqno: int, payload: bytes,
                  tag: int = S.STATEMENT_TAG) -> Cell:
        st = S.Statement(self.stakes[(owner, role)].address, kind, context, seqno, S.payload_cell(payload))
        if tag == S.STATEMENT_TAG:
            return st.to_cell()
        return (begin_cell().store_uint(tag, 32).store_address(st.stake).store_uint(kind, 32)
                .store_uint(context, 256).store_uint(seqno, 64).store_ref(st.payload).end_cell())

    def signed(self, statement: Cell, key_index: int, name: str) -> Cell:
        sig = self.named(OPERATOR_KEYS[key_index].sign(statement.hash), name)
        return begin_cell().store_bytes(sig).store_ref(statement).end_cell()

    def report(self, proxy: str, worker: str, epoch: int, stats: P.ReportStats, registry: str = "this") -> P.Report:
        reg = self.reg.address if registry == "this" else self.w["relayer"].address
        return P.Report(reg, P.owner_hash(self.w[proxy].address), self.w[worker].address, epoch, stats)

    # ------------------------------------------------------------------------------ reading
    def status(self, name: str) -> str:
        return self.data(name)[0]

    def balance_of(self, accounts: dict, name: str) -> int:
        addr = self.contracts.get(name) or self.addr[name]
        raw = accounts.get(f"0:{addr.hash_part.hex()}")
        return 0 if raw is None else account_balance(raw)

    def address(self, name: str) -> Address:
        return self.contracts.get(name) or self.addr[name]

    def norm(self, v: Any) -> Any:
        """A getter result or a parsed structure with every world-specific value replaced by its name."""
        if v is None or isinstance(v, (bool, str, bytes)):
            return v
        if isinstance(v, int):
            return self.int_names.get(v, v)
        if isinstance(v, Address):
            return self.names.get(v.hash_part, f"{v.wc}:{v.hash_part.hex()}")
        if isinstance(v, Slice):
            return self.norm_cell(begin_cell().store_slice(v).end_cell())
        if isinstance(v, Cell):
            return self.norm_cell(v)
        if dataclasses.is_dataclass(v):
            return (type(v).__name__,) + tuple(self.norm(getattr(v, f.name)) for f in dataclasses.fields(v))
        if isinstance(v, dict):
            return tuple(sorted((self.norm(k), self.norm(x)) for k, x in v.items()))
        if isinstance(v, (list, tuple)):
            return tuple(self.norm(x) for x in v)
        raise TypeError(f"cannot normalise {type(v).__name__}")

    def norm_cell(self, c: Cell) -> Any:
        name = self.code_names.get(c.hash)
        if name is not None:
            return name
        bits = c.bits.to01() if hasattr(c.bits, "to01") else "".join("1" if b else "0" for b in c.bits)
        for pattern, name in self.bit_subs:
            if pattern in bits:
                bits = bits.replace(pattern, name)
        for pattern, name in self.step_subs:
            if pattern in bits:
                bits = bits.replace(pattern, name)
        return (bits, tuple(self.norm_cell(r) for r in c.refs))

    def data(self, name: str) -> Any:
        """(status, normalised data cell) of a contract, read once per account state."""
        raw = self._account(self.contracts[name])[0]
        hit = self._data_cache.get(name)
        if hit is not None and hit[0] is raw:
            return hit[1]
        status, _code, data, _balance = self._account(self.contracts[name])[1]
        out = (status, self.norm_tcell(data) if data is not None else None)
        self._data_cache[name] = (raw, out)
        return out

    def _account(self, address: Address) -> tuple:
        """(raw account cell, (status, code, data, balance)), parsed once per account state."""
        key = f"0:{address.hash_part.hex()}"
        raw = self.chain.accounts.get(key)
        hit = self._accounts.get(key)
        if hit is None or hit[0] is not raw:
            hit = (raw, account_parts(raw) + (account_balance(raw) if raw is not None else 0,))
            self._accounts[key] = hit
        return hit

    def get_method(self, address: Address, method: str, stack: list) -> list:
        """The chain's get-method, on code and data taken straight from the emulator's account cell."""
        status, code, data, balance = self._account(address)[1]
        if status != "active":
            raise GetMethodError(address, method, -256)
        return run_get_method(code, data, address, method, list(stack), balance=balance, now=self.chain.now,
                              config=self._config_t)

    def norm_tcell(self, c) -> Any:
        """norm_cell for the emulator's (tonpy) cells: the same result without a BoC round trip."""
        name = self.code_names_hex.get(c.get_hash().lower())
        if name is not None:
            return name
        s = c.begin_parse()
        bits, n = s.to_bitstring(), s.refs
        for pattern, name in self.bit_subs:
            if pattern in bits:
                bits = bits.replace(pattern, name)
        return (bits, tuple(self.norm_tcell(s.load_ref()) for _ in range(n)))

    def getters(self, name: str, full: bool = False) -> Any:
        """Every getter of the contract ``name``, normalised (or its account status when it has no code).
        The registry's child codes (large cells, also part of its data) are read only when ``full``."""
        status, data = self.data(name)
        if status != "active":
            return status
        kind = name.split(":")[0]
        try:
            if kind == "registry":
                return data, self._registry_getters(full)
            if kind == "stake":
                _, o, r = name.split(":")
                rd = self.stake_read[(o, int(r))]
                return data, self.norm((rd.state(), rd.unbonding(), rd.params(), rd.keys(), rd.slashing(),
                                        rd.is_active()))
            if kind == "escrow":
                rd = self.esc_read[name.split(":")[1]]
                return data, self.norm((rd.channel(), rd.parties(), rd.keys(), rd.config()))
            rd = self.rep_read[name.split(":")[1]]
            t = self.chain.now
            return data, self.norm((rd.data(), rd.totals(), rd.score_state(), rd.score(),
                                    rd.score_at(t + 7 * 86400), rd.slashes(), rd.reporters()))
        except GetMethodError as e:
            return data, ("getter failed", e.method, e.exit_code)

    def _registry_getters(self, full: bool) -> Any:
        rd = self.reg_read
        props, next_id = rd.proposals()
        extra = None
        if full:   # child codes and the child-address getters, which change only through governance
            extra = [rd.child_codes()]
            for method, args in (("get_stake_address", [self.w["alice"].address, S.ROLE_PROXY]),
                                 ("get_escrow_address", [self.w["carol"].address, self.w["alice"].address,
                                                         payer_key_int(0)]),
                                 ("get_reputation_address", [self.w["bob"].address])):
                try:
                    extra.append(rd.call(rd.address, method, args)[0].load_address())
                except GetMethodError as e:
                    extra.append(("getter failed", e.exit_code))
        return self.norm((rd.owner(), rd.version(), rd.params(), rd.trust(), rd.proxies(),
                          [(p.id, p.execute_after, p.action) for p in props], next_id,
                          rd.is_allowed("worker_image", 1 << 240), extra))

    # ------------------------------------------------------------------------------ transactions
    def trace(self, txs) -> tuple[tuple, list[int]]:
        """What the step did, in execution order: per transaction the account, the sender, the op, the
        outcome and the messages sent (destination by name, normalised body). Values, which carry gas
        differences, are returned apart."""
        out, values = [], []
        for t in txs:
            msgs = []
            for m in t.out_msgs:
                info = m.info
                dest = getattr(info, "dest", None)
                if hasattr(info, "bounce"):
                    values.append(info.value.grams)
                    # a bounce carries the head of the refused body, which the chain, not the contract, wrote
                    body = ("bounce", m.body.bits.to01()[:64]) if info.bounced else self.norm_cell(m.body)
                    msgs.append((self.norm(dest), body, info.bounce, m.init is not None))
                else:
                    msgs.append(("external-out", self.norm_cell(m.body)))
            out.append((self.norm(t.account), self.norm(t.src) if t.src is not None else "ext", t.op, t.bounced,
                        t.success, t.exit_code, t.action_result, t.compute_skipped, t.deploy, t.end_status,
                        tuple(msgs)))
            values.append(t.value)
        return tuple(out), values

    @staticmethod
    def fees(txs) -> int:
        return sum(t.total_fees + t.in_fwd_fee for t in txs)

"""The reputation contract in Python: reports and their signatures, messages, the score, the record.

This module is the one Python place that knows the layouts of contracts/reputation.tlb (and the
reputation path of registry.tlb). Proxies build and sign reports with it, the CLI and dashboards read
records with it, and the tests check the contract against it: :class:`ScoreState` computes the
decayed score with exactly the contract's integer arithmetic, so an off-chain router can rank workers
without a get-method call per worker and get the same number.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq_core import Address, Cell, HashMap, begin_cell
from pytoniq_core.tlb.account import StateInit

from . import TON
from . import keys as K
from . import registry as R
from .build import load_code
from .chain.contract import Contract, reader_class
from .errors import describe_error as _describe, names_for

# ---------------------------------------------------------------------------- opcodes and errors
# The messages are the registry's (registry.tlb, "Reputation path"); their opcodes live there.
OP = {k: R.OP[k] for k in ("submit_report", "stake_slashed", "apply_report", "record_slash")}
OP_EXCESSES = R.OP_EXCESSES
REPORT_TAG = R.REPORT_TAG  # "REPT": the signature domain of a reputation report


class Err(R.Err):
    """Exit codes of the reputation contract (reputation.tlb), with the common and registry ones."""
    STALE_REPORT = 500
    REPLAYED_REPORT = 501
    FUTURE_REPORT = 502
    TOO_MANY_REPORTERS = 503
    COUNTER_OVERFLOW = 504
    WRONG_WORKER = 505
    BAD_STATS = 506


ERROR_NAMES = names_for("reputation")


def describe_error(code: Optional[int]) -> str:
    return _describe(code, ERROR_NAMES)


# ---------------------------------------------------------------------------- constants of the code
GAS_ALLOWANCE = 15_000_000       # every operation: gas and the excess message
STORAGE_RESERVE = 10_000_000     # kept on the record's balance for storage fees
SUBMIT_VALUE = R.REPORT_VALUE    # the registry's minimum for submit_report
REPORT_WINDOW = 3 * 86400        # epochs older than now - REPORT_WINDOW are stale
MAX_FUTURE = 300                 # epochs up to now + MAX_FUTURE are accepted
MAX_REPORTERS = 64               # proxies a record tracks for replay protection
SLASH_LOG_SIZE = 8               # slash events kept in the log
KIND_OBJECTIVE, KIND_GOVERNANCE = 1, 2
CHILD_INIT_BITS = 267

FRAC_ONE = 1 << 16
HALF_LIFE = 7 * 86400
SLASH_HALF_LIFE = 30 * 86400
PRIOR = 10 << 16
LATENCY_REF = 2000
SCORE_MAX = 10_000
MAX_UINT32, MAX_UINT64, MAX_UINT128 = 2**32 - 1, 2**64 - 1, 2**128 - 1


# ---------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class ReportStats:
    """What a proxy saw of one worker in one epoch (report_stats$_ in reputation.tlb)."""
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    tokens: int = 0
    latency_ms: int = 0  # mean latency of the succeeded jobs

    WIDTHS = dict(succeeded=32, failed=32, timed_out=32, tokens=64, latency_ms=32)

    def problems(self) -> list[str]:
        """Why the contract would refuse these numbers (empty when it would not)."""
        out = [f"{k} must be between 0 and 2^{w} - 1" for k, w in self.WIDTHS.items()
               if not 0 <= getattr(self, k) < 2**w]
        if self.succeeded + self.failed + self.timed_out == 0:
            out.append("a report needs at least one job (succeeded, failed or timed out)")
        if self.latency_ms > 0 and self.succeeded == 0:
            out.append("a latency is the mean over succeeded jobs, so it needs at least one")
        return out

    def to_cell(self) -> Cell:
        return (begin_cell().store_uint(self.succeeded, 32).store_uint(self.failed, 32)
                .store_uint(self.timed_out, 32).store_uint(self.tokens, 64).store_uint(self.latency_ms, 32)
                .end_cell())

    @classmethod
    def from_cell(cls, c: Cell) -> "ReportStats":
        s = c.begin_parse()
        out = cls(s.load_uint(32), s.load_uint(32), s.load_uint(32), s.load_uint(64), s.load_uint(32))
        _end(s)
        return out


@dataclass(frozen=True)
class Report:
    """A proxy's signed statement about one worker for one epoch (reputation_report in registry.tlb).

    ``epoch`` is the unix time at which the reported period ended; per proxy and worker it must grow.
    """
    registry: Address
    proxy_owner_hash: int
    worker_owner: Address
    epoch: int
    stats: ReportStats

    def to_cell(self) -> Cell:
        return R.reputation_report(self.registry, self.proxy_owner_hash, self.worker_owner, self.epoch,
                                   self.stats.to_cell())

    @classmethod
    def from_cell(cls, c: Cell) -> "Report":
        s = c.begin_parse()
        if s.load_uint(32) != REPORT_TAG:
            raise ValueError("not a reputation report (tag differs)")
        registry, proxy, worker, epoch = s.load_address(), s.load_uint(256), s.load_address(), s.load_uint(32)
        stats = ReportStats.from_cell(s.load_ref())
        _end(s)
        return cls(registry, proxy, worker, epoch, stats)

    @property
    def signing_hash(self) -> bytes:
        """What the operator key signs: the representation hash of the report cell, whose first 32
        bits are the domain tag and which names the registry, so the signature is worthless anywhere
        else."""
        return self.to_cell().hash

    def sign(self, key: Ed25519PrivateKey | bytes) -> bytes:
        return K.sign(key, self.signing_hash)

    def verify(self, signature: bytes, public_key: bytes | int) -> bool:
        return K.verify(public_key, signature, self.signing_hash)


def owner_hash(owner: Address) -> int:
    """How the registry keys a proxy: the 256-bit hash part of its owner's address."""
    return int.from_bytes(owner.hash_part, "big")


def build_report(registry: Address, proxy_owner: Address | int, worker_owner: Address, epoch: int,
                 succeeded: int = 0, failed: int = 0, timed_out: int = 0, tokens: int = 0,
                 latency_ms: int = 0, check: bool = True) -> Report:
    """The report builder a proxy uses. With ``check`` it refuses numbers the contract would refuse
    (so a proxy learns it before paying for a transaction)."""
    stats = ReportStats(succeeded, failed, timed_out, tokens, latency_ms)
    if check:
        problems = stats.problems()
        if not 0 <= epoch <= MAX_UINT32:
            problems.append("the epoch is a unix time (uint32)")
        if problems:
            raise ValueError("; ".join(problems))
    proxy = proxy_owner if isinstance(proxy_owner, int) else owner_hash(proxy_owner)
    return Report(registry, proxy, worker_owner, epoch, stats)


def _end(s) -> None:
    if s.remaining_bits or s.remaining_refs:
        raise ValueError("trailing data after the structure")


# ---------------------------------------------------------------------------- message bodies
def submit_report(signature: bytes, report: Report | Cell, query_id: int = 0) -> Cell:
    """To the registry, from anyone: relays a signed report (attach at least SUBMIT_VALUE)."""
    return R.submit_report(signature, report.to_cell() if isinstance(report, Report) else report, query_id)


def signed_submission(report: Report, key: Ed25519PrivateKey | bytes, query_id: int = 0) -> Cell:
    """A proxy's whole step: sign ``report`` with its operator key and wrap it for the registry."""
    return submit_report(report.sign(key), report, query_id)


def apply_report(report: Report | Cell, excess_to: Address, query_id: int = 0) -> Cell:
    """What the registry forwards to a record after checking the proxy and its signature."""
    rc = report.to_cell() if isinstance(report, Report) else report
    return (begin_cell().store_uint(OP["apply_report"], 32).store_uint(query_id, 64).store_address(excess_to)
            .store_ref(rc).end_cell())


def record_slash(excess_to: Address, amount: int, kind: int, query_id: int = 0) -> Cell:
    """What the registry forwards to a worker's record when its stake contract reports a slash."""
    return (begin_cell().store_uint(OP["record_slash"], 32).store_uint(query_id, 64).store_address(excess_to)
            .store_coins(amount).store_uint(kind, 8).end_cell())


stake_slashed = R.stake_slashed  # from a stake contract to the registry (registry.tlb)


# ---------------------------------------------------------------------------- addresses
def state_init(code: Cell, registry: Address, worker_owner: Address) -> StateInit:
    return R.child_state_init(code, registry, R.reputation_identity(worker_owner))


def reputation_address(code: Cell, registry: Address, worker_owner: Address) -> Address:
    """The record of ``worker_owner`` under ``registry``: the same address the registry computes."""
    return R.child_address(code, registry, R.reputation_identity(worker_owner))


# ---------------------------------------------------------------------------- the score
def decay(x: int, dt: int, h: int) -> int:
    """x after dt seconds with half-life h (reputation.tlb): exact halvings per whole half-life, a
    straight line from 1 to 1/2 within one."""
    k, r = divmod(dt, h)
    if k >= 128:
        return 0
    return ((x >> k) * (2 * h - r)) // (2 * h)


def score_of(good: int, bad: int, latency: int, penalty: int) -> int:
    """The score (0..10000) of decayed values, as the contract computes it."""
    success = (good + PRIOR // 2) * SCORE_MAX // (good + bad + PRIOR)
    mean = latency // good if good > 0 else 0
    speed = SCORE_MAX * LATENCY_REF // (LATENCY_REF + mean)
    base = success * (30_000 + speed) // 40_000
    return base * FRAC_ONE // (FRAC_ONE + penalty)


@dataclass(frozen=True)
class ScoreState:
    """The decayed values of a record (score_state$_): fixed point, 2^16 = 1."""
    updated_at: int = 0
    good: int = 0
    bad: int = 0
    latency: int = 0
    penalty: int = 0

    def decayed_to(self, t: int) -> "ScoreState":
        dt = max(t - self.updated_at, 0)
        return ScoreState(max(t, self.updated_at), decay(self.good, dt, HALF_LIFE), decay(self.bad, dt, HALF_LIFE),
                          decay(self.latency, dt, HALF_LIFE), decay(self.penalty, dt, SLASH_HALF_LIFE))

    def score_at(self, t: int) -> int:
        d = self.decayed_to(t)
        return score_of(d.good, d.bad, d.latency, d.penalty)

    def after_report(self, stats: ReportStats, t: int) -> "ScoreState":
        d = self.decayed_to(t)
        return replace(d, good=d.good + stats.succeeded * FRAC_ONE,
                       bad=d.bad + (stats.failed + 2 * stats.timed_out) * FRAC_ONE,
                       latency=d.latency + stats.latency_ms * stats.succeeded * FRAC_ONE)

    def after_slash(self, t: int) -> "ScoreState":
        d = self.decayed_to(t)
        return replace(d, penalty=min(d.penalty + FRAC_ONE, MAX_UINT128))

    def overflows(self) -> bool:
        return max(self.good, self.bad, self.latency) > MAX_UINT128

    def to_cell(self) -> Cell:
        return (begin_cell().store_uint(self.updated_at, 32).store_uint(self.good, 128).store_uint(self.bad, 128)
                .store_uint(self.latency, 128).store_uint(self.penalty, 128).end_cell())

    @classmethod
    def from_cell(cls, c: Cell) -> "ScoreState":
        s = c.begin_parse()
        out = cls(s.load_uint(32), s.load_uint(128), s.load_uint(128), s.load_uint(128), s.load_uint(128))
        _end(s)
        return out


# ---------------------------------------------------------------------------- the record
@dataclass(frozen=True)
class Totals:
    reports: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    tokens: int = 0
    latency_sum: int = 0
    last_report_at: int = 0

    @property
    def jobs(self) -> int:
        return self.succeeded + self.failed + self.timed_out

    @property
    def mean_latency_ms(self) -> Optional[int]:
        return self.latency_sum // self.succeeded if self.succeeded else None

    def after_report(self, stats: ReportStats, t: int) -> "Totals":
        return Totals(self.reports + 1, self.succeeded + stats.succeeded, self.failed + stats.failed,
                      self.timed_out + stats.timed_out, self.tokens + stats.tokens,
                      self.latency_sum + stats.latency_ms * stats.succeeded, t)

    def overflows(self) -> bool:
        return (self.reports > MAX_UINT32 or max(self.succeeded, self.failed, self.timed_out) > MAX_UINT64
                or max(self.tokens, self.latency_sum) > MAX_UINT128)

    def to_cell(self) -> Cell:
        return (begin_cell().store_uint(self.reports, 32).store_uint(self.succeeded, 64).store_uint(self.failed, 64)
                .store_uint(self.timed_out, 64).store_uint(self.tokens, 128).store_uint(self.latency_sum, 128)
                .store_uint(self.last_report_at, 32).end_cell())

    @classmethod
    def from_cell(cls, c: Cell) -> "Totals":
        s = c.begin_parse()
        out = cls(s.load_uint(32), s.load_uint(64), s.load_uint(64), s.load_uint(64), s.load_uint(128),
                  s.load_uint(128), s.load_uint(32))
        _end(s)
        return out


@dataclass(frozen=True)
class SlashEvent:
    number: int  # 1 for the first slash ever recorded, and so on
    at: int
    amount: int
    kind: int

    @property
    def kind_name(self) -> str:
        return {KIND_OBJECTIVE: "objective", KIND_GOVERNANCE: "governance"}.get(self.kind, f"kind {self.kind}")


@dataclass(frozen=True)
class Slashes:
    count: int = 0
    total: int = 0
    last_at: int = 0
    events: tuple[SlashEvent, ...] = ()  # the most recent SLASH_LOG_SIZE, oldest first

    def to_cell(self) -> Cell:
        hm = HashMap(32, value_serializer=lambda e, b: b.store_uint(e.at, 32).store_coins(e.amount)
                     .store_uint(e.kind, 8))
        for e in self.events:
            hm.set_int_key(e.number, e)
        return (begin_cell().store_uint(self.count, 32).store_uint(self.total, 128).store_uint(self.last_at, 32)
                .store_dict(hm.serialize() if self.events else None).end_cell())

    @classmethod
    def from_cell(cls, c: Cell) -> "Slashes":
        s = c.begin_parse()
        count, total, last_at = s.load_uint(32), s.load_uint(128), s.load_uint(32)
        log = s.load_maybe_ref()
        _end(s)
        return cls(count, total, last_at, parse_slash_log(log))


def parse_slash_log(log: Optional[Cell]) -> tuple[SlashEvent, ...]:
    if log is None:
        return ()
    raw = HashMap.parse(log.begin_parse(), 32, lambda k: int(k, 2), lambda s: s)
    return tuple(SlashEvent(n, s.load_uint(32), s.load_coins(), s.load_uint(8)) for n, s in sorted(raw.items()))


def parse_reporters(d: Optional[Cell]) -> dict[int, int]:
    if d is None:
        return {}
    return HashMap.parse(d.begin_parse(), 256, lambda k: int(k, 2), lambda s: s.load_uint(32))


def age_key(epoch: int, proxy_owner_hash: int) -> int:
    """The by_age key of a book entry: the epoch, then the low 224 bits of the proxy owner hash."""
    return (epoch << 224) | (proxy_owner_hash & (2**224 - 1))


def _dict256(items: dict[int, int], width: int) -> Optional[Cell]:
    if not items:
        return None
    hm = HashMap(256, value_serializer=lambda v, b: b.store_uint(v, width))
    for k, v in items.items():
        hm.set_int_key(k, v)
    return hm.serialize()


def book_cell(reporters: dict[int, int]) -> Cell:
    """ReporterBook for these entries, both indexes."""
    by_age = {age_key(e, h): h for h, e in reporters.items()}
    return (begin_cell().store_uint(len(reporters), 8).store_dict(_dict256(reporters, 32))
            .store_dict(_dict256(by_age, 256)).end_cell())


def parse_book(c: Cell) -> dict[int, int]:
    """The book's entries (proxy owner hash -> last epoch); its count and age index must agree."""
    s = c.begin_parse()
    count, last, by_age = s.load_uint(8), parse_reporters(s.load_maybe_ref()), s.load_maybe_ref()
    _end(s)
    ages = {} if by_age is None else HashMap.parse(by_age.begin_parse(), 256, lambda k: int(k, 2),
                                                    lambda v: v.load_uint(256))
    if count != len(last) or ages != {age_key(e, h): h for h, e in last.items()}:
        raise ValueError("the reporter book's count or age index disagrees with its entries")
    return last


@dataclass(frozen=True)
class ReputationRecord:
    """Everything a record holds, parsed from its data (either form) or assembled from its getters."""
    registry: Address
    worker_owner: Address
    initialized: bool = False
    reporters: dict[int, int] = field(default_factory=dict)  # proxy owner hash -> last epoch
    totals: Totals = Totals()
    score: ScoreState = ScoreState()
    slashes: Slashes = Slashes()

    def score_at(self, t: int) -> int:
        return self.score.score_at(t)

    @classmethod
    def from_data(cls, data: Cell) -> "ReputationRecord":
        """The record parser: c4 in the initial form (child_init) or as ReputationStorage."""
        s = data.begin_parse()
        if s.remaining_bits == CHILD_INIT_BITS:
            registry = s.load_address()
            ident = s.load_ref().begin_parse()
            _end(s)
            worker = ident.load_address()
            _end(ident)
            return cls(registry, worker)
        registry, worker = s.load_address(), s.load_address()
        reporters = parse_book(s.load_ref())
        totals, score, slashes = (Totals.from_cell(s.load_ref()), ScoreState.from_cell(s.load_ref()),
                                  Slashes.from_cell(s.load_ref()))
        _end(s)
        return cls(registry, worker, True, reporters, totals, score, slashes)

    def to_data(self) -> Cell:
        """ReputationStorage for this record (tests deploy records in chosen states with it)."""
        return (begin_cell().store_address(self.registry).store_address(self.worker_owner)
                .store_ref(book_cell(self.reporters)).store_ref(self.totals.to_cell()).store_ref(self.score.to_cell()).store_ref(self.slashes.to_cell())
                .end_cell())


class Reputation(Contract):
    """The reputation record of a worker owner over ``provider`` (see :mod:`wrappers.chain.contract`).
    The registry deploys and writes it; proxies reach it through :meth:`Registry.send_report
    <wrappers.registry.Registry.send_report>`, so it has getters only."""

    registry: Optional[Address] = None  # known when built with from_init
    worker_owner: Optional[Address] = None

    @classmethod
    def from_init(cls, provider, registry: Address, worker_owner: Address, *, code: Optional[Cell] = None,
                  lang: str = "tolk") -> "Reputation":
        """``code`` defaults to the ``lang`` build; it must be the registry's reputation code."""
        si = state_init(code or load_code("reputation", lang), registry, worker_owner)
        out = cls(provider, R.address_of(si), si)
        out.registry, out.worker_owner = registry, worker_owner
        return out

    async def get_data(self) -> tuple[Address, Address, bool]:
        """(registry, worker owner, whether a report initialized it)."""
        reg, worker, init = await self.get("get_reputation_data")
        return reg.load_address(), worker.load_address(), bool(init)

    async def get_totals(self) -> Totals:
        return Totals(*await self.get("get_totals"))

    async def get_score_state(self) -> ScoreState:
        return ScoreState(*await self.get("get_score_state"))

    async def get_score(self) -> int:
        return (await self.get("get_score"))[0]

    async def get_score_at(self, t: int) -> int:
        return (await self.get("get_score_at", t))[0]

    async def get_slashes(self) -> Slashes:
        count, total, last_at, log = await self.get("get_slashes")
        return Slashes(count, total, last_at, parse_slash_log(log))

    async def get_reporter(self, proxy_owner_hash: int) -> Optional[int]:
        """The last epoch this proxy reported, or None."""
        found, epoch = await self.get("get_reporter", proxy_owner_hash)
        return epoch if found else None

    async def get_reporters(self) -> dict[int, int]:
        d, _count = await self.get("get_reporters")
        return parse_reporters(d)

    async def get_record(self) -> ReputationRecord:
        """Everything the record holds, from its getters."""
        registry, worker, init = await self.get_data()
        return ReputationRecord(registry, worker, init, await self.get_reporters(), await self.get_totals(),
                                await self.get_score_state(), await self.get_slashes())


ReputationReader = reader_class(
    Reputation, ("data", "totals", "score_state", "score", "score_at", "slashes", "reporter", "reporters", "record"),
    "Reads a record through a synchronous ``call(address, method, stack) -> list``; each method is\n"
    ":class:`Reputation`'s ``get_*``.")


# ---------------------------------------------------------------------------- what proxies reported
@dataclass(frozen=True)
class ForwardedReport:
    """A report the registry forwarded to a record (an apply_report message it sent)."""
    record: Address
    report: Report
    lt: int = 0


def forwarded_reports(messages: Iterable, registry: Address) -> Iterator[ForwardedReport]:
    """The apply_report messages among ``messages`` (pytoniq ``MessageAny``) sent by ``registry``.

    This is where a listing of the workers a proxy has reported comes from on networks with
    transaction history: the registry's outgoing messages (see node/cli/reputation.py).
    """
    for m in messages:
        info = m.info
        if not getattr(m, "is_internal", False) or info.src is None:
            continue
        if info.src.hash_part != registry.hash_part or info.src.wc != registry.wc:
            continue
        s = m.body.begin_parse()
        if s.remaining_bits < 32 + 64 or s.load_uint(32) != OP["apply_report"]:
            continue
        try:
            s.load_uint(64)
            s.load_address()
            report = Report.from_cell(s.load_ref())
        except Exception:
            continue  # not a well-formed report: the record refused it too
        yield ForwardedReport(info.dest, report, info.created_lt)


def records_on_chain(chain, code: Cell, registry: Address) -> Iterator[tuple[Address, ReputationRecord]]:
    """Every record of ``registry`` (deployed from ``code``) on an embedded chain, whose accounts are
    all local: the exact source for a listing there, where no transaction history is kept."""
    for key in sorted(chain.accounts):
        status, acode, data = chain.state(key)
        if status != "active" or acode is None or acode.hash != code.hash:
            continue
        try:
            rec = ReputationRecord.from_data(data)
        except Exception:
            continue
        if rec.registry.hash_part == registry.hash_part and rec.registry.wc == registry.wc:
            yield Address(key), rec

"""Receipts: what a worker signs for every job it serves, and checking one before it is paid for.

A receipt is a stake statement (stake.tlb) of kind KIND_JOB_RECEIPT, so its signature format is the
one the stake contract checks: the worker's operator key signs (its stake address, kind, job id as
context, seqno, payload). A worker that signs two different receipts for the same job and seqno has
equivocated, and anyone holding both can have its stake slashed. The payload binds the request and
the response by hash and the usage the client is charged for:

    receipt_payload$_ request_hash:uint256 response_hash:uint256 prompt:uint32 cached:uint32
                      completion:uint32 reasoning:uint32 coefficient:uint16 = ReceiptPayload;

No contract reads the payload, so its layout is defined here; the statement around it is the stake
contract's (:class:`wrappers.stake.Statement`).

:class:`ReceiptVerifier` checks a worker's receipt for one answer: the one implementation the client
gateway (before it pays) and ``cocoon receipt verify`` (later, offline or against the chain) both
use. An answer is paid for only when every check passes (docs/PROTOCOL.md §4–§5):

``receipt_format``   the receipt is a signed stake statement of kind job receipt, seqno 1, for this job
``worker_cert``      the worker's RA-TLS certificate verifies (quote, image allowed, claims key =
                     certificate key, role worker): :class:`node.tee.ratls.PeerVerifier`
``model_hash``       the model the claims name is allowed by the registry
``signature``        the receipt is signed by the key the claims name (the worker's operator key)
``stake``            the receipt names the stake of the claims' operator (derived from the registry),
                     and on chain that stake is active and bound to that key (skipped offline)
``request_hash``     SHA-256 of the exact request bytes the gateway sent
``response_hash``    :func:`response_hash` of the content received
``usage``            the usage the proxy reports is the usage the worker signed
``coefficient``      the worker's coefficient is the signed one and at most the client's maximum
``price``            ``charge(usage, coefficient).client_cost`` equals what the proxy charges

:class:`Evidence` is what one answer brought plus what the gateway knows (request hash, content);
it round-trips through JSON, which is the receipt file ``cocoon client receipts --json`` writes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq_core import Address, Cell, begin_cell

from node.tee.ratls import PeerVerifier
from node.tee.verify import Check
from wrappers import cells as C
from wrappers import keys as K
from wrappers import registry as R
from wrappers import stake as S

from .pricing import Usage, charge, usage_from_openai, usage_to_openai

# ---------------------------------------------------------------------------- the receipt
# where the signature starts in a receipt's BoC: magic (4), flags, size, cells, roots, absent, the
# payload's length (1), the root's index, then the root cell's two descriptor bytes
SIGNATURE_AT = 13


@dataclass(frozen=True)
class Receipt:
    worker_stake: Address
    job_id: int
    request_hash: bytes
    response_hash: bytes
    usage: Usage
    coefficient: int
    seqno: int = 1

    def payload_bits(self) -> tuple[int, int]:
        """The payload's data as (value, bit count): the one definition of its layout."""
        u = self.usage
        acc = (int.from_bytes(self.request_hash + self.response_hash, "big"), 512)
        for n in (u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.reasoning_tokens):
            acc = C.push_uint(acc, n, 32)
        return C.push_uint(acc, self.coefficient, 16)

    def payload(self) -> Cell:
        value, n = self.payload_bits()
        return begin_cell().store_uint(value, n).end_cell()

    def statement(self) -> S.Statement:
        return S.Statement(self.worker_stake, S.KIND_JOB_RECEIPT, self.job_id, self.seqno, self.payload())

    def sign(self, key: Ed25519PrivateKey) -> S.SignedStatement:
        return S.sign_statement(key, self.statement())

    # The same statement without pytoniq cells (a worker signs one per job, a proxy checks one per
    # job): tests/payments/test_receipts_fast.py proves both paths give the same bytes.
    def _cells(self, signature: bytes) -> list[tuple[int, int]]:
        if len(self.request_hash) != 32 or len(self.response_hash) != 32:
            raise ValueError("the request and response hashes are 32 bytes")
        return [(int.from_bytes(signature, "big"), 512),
                S.statement_bits(self.worker_stake, S.KIND_JOB_RECEIPT, self.job_id, self.seqno),
                self.payload_bits()]

    def statement_hash(self) -> bytes:
        """The hash the operator key signs (:attr:`wrappers.stake.Statement.hash`)."""
        _, st, pl = self._cells(bytes(64))
        return C.ordinary_hash(*st, ((0, C.ordinary_hash(*pl)),))

    def signed_boc(self, key: Ed25519PrivateKey) -> bytes:
        """``self.sign(key).to_cell().to_boc()``, byte for byte."""
        return C.chain_boc(self._cells(K.sign(key, self.statement_hash())))

    def signs(self, boc: bytes, public_key) -> bool:
        """Whether ``boc`` is exactly this receipt in :meth:`signed_boc`'s form, signed by
        ``public_key``. False for anything else, including the same receipt in another valid BoC
        form (then parse it with :meth:`from_statement`)."""
        sig = boc[SIGNATURE_AT:SIGNATURE_AT + 64]
        try:
            return (len(sig) == 64 and C.chain_boc(self._cells(sig)) == boc
                    and K.verify(public_key, sig, self.statement_hash()))
        except ValueError:
            return False

    @classmethod
    def from_statement(cls, st: S.Statement) -> "Receipt":
        if st.kind != S.KIND_JOB_RECEIPT:
            raise ValueError("not a job receipt")
        s = st.payload.begin_parse()
        req, resp = s.load_bytes(32), s.load_bytes(32)
        p, c, comp, r = (s.load_uint(32) for _ in range(4))
        coef = s.load_uint(16)
        return cls(st.stake, st.context, req, resp, Usage(p, comp, c, r), coef, st.seqno)


def content_hash(data: bytes | str) -> bytes:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).digest()


ToolCall = Union[Mapping[str, str], tuple]


def response_content(content: str, tool_calls: Iterable[ToolCall] = ()) -> bytes:
    """The exact bytes a response hash covers (docs/PROTOCOL.md §5): the canonical JSON (sorted keys,
    no spaces, UTF-8) of ``{"content": TEXT, "tool_calls": [{"name", "arguments"}, ...]}``. TEXT is
    every delivered ``delta.content`` / ``text`` concatenated; tool calls come in index order with
    their arguments as the delivered string. Each tool call is a mapping with ``name`` and
    ``arguments`` (an OpenAI ``function`` object) or a ``(name, arguments)`` pair."""
    if not isinstance(content, str):
        raise TypeError("the response content is text")
    calls = []
    for c in tool_calls:
        name, args = (c["name"], c["arguments"]) if isinstance(c, Mapping) else c
        if not isinstance(name, str) or not isinstance(args, str):
            raise TypeError("a tool call's name and arguments are strings")
        calls.append({"name": name, "arguments": args})
    return json.dumps({"content": content, "tool_calls": calls}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def response_hash(content: str, tool_calls: Iterable[ToolCall] = ()) -> bytes:
    """SHA-256 of :func:`response_content`: the receipt's response hash, the one implementation."""
    return hashlib.sha256(response_content(content, tool_calls)).digest()


# ---------------------------------------------------------------------------- checking one
CHECKS = ("receipt_format", "worker_cert", "model_hash", "signature", "stake", "request_hash",
          "response_hash", "usage", "coefficient", "price")

# (stake address) -> StakeState or None when the account does not exist
StakeLookup = Callable[[Address], Awaitable[Optional[S.StakeState]]]


class EvidenceError(ValueError):
    """A receipt record that cannot even be read."""


def _usage(u) -> Usage:
    try:
        return usage_from_openai(u)
    except ValueError as e:
        raise EvidenceError(f"usage is not an OpenAI usage object: {e}") from None


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EvidenceError(f"{what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError(f"{what} is not base64") from None


@dataclass
class Evidence:
    """One answer's receipt and what it must match."""
    job_id: int
    receipt: bytes            # BoC of the signed stake statement
    worker_cert: bytes        # DER
    coefficient: int
    usage: Usage
    cost: int
    request_hash: bytes       # SHA-256 of the request bytes sent
    content: str
    tool_calls: list = field(default_factory=list)  # [(name, arguments)] in index order
    request_id: str = ""
    settled_before: int = 0
    received_at: float = 0.0
    max_cost: Optional[int] = None   # the request's maximum cost: the most the proxy may bill

    @classmethod
    def from_cocoon(cls, cocoon: dict, request_bytes: bytes, content: str, tool_calls: list,
                    received_at: Optional[float] = None) -> "Evidence":
        """From the ``cocoon`` object of an answer (PROTOCOL.md §4) and what was sent and received."""
        if not isinstance(cocoon, dict):
            raise EvidenceError("the answer carries no cocoon object")
        try:
            job = cocoon["job_id"]
            if not isinstance(job, str) or len(job) != 64:
                raise EvidenceError("job_id is not 64 hex digits")
            return cls(job_id=int(job, 16), receipt=_b64(cocoon["receipt"], "receipt"),
                       worker_cert=_b64(cocoon["worker_cert"], "worker_cert"),
                       coefficient=int(cocoon["coefficient"]), usage=_usage(cocoon["usage"]),
                       cost=int(cocoon["cost"]), request_hash=hashlib.sha256(request_bytes).digest(),
                       content=content, tool_calls=[tuple(t) for t in tool_calls],
                       request_id=str(cocoon.get("request_id", "")),
                       settled_before=int(cocoon.get("settled_before", 0)),
                       received_at=time.time() if received_at is None else received_at)
        except KeyError as e:
            raise EvidenceError(f"the cocoon object lacks {e.args[0]}") from None
        except (TypeError, ValueError) as e:
            raise EvidenceError(f"the cocoon object is malformed: {e}") from None

    def to_json(self) -> dict:
        return {"request_id": self.request_id, "job_id": f"{self.job_id:064x}",
                "receipt": base64.b64encode(self.receipt).decode(),
                "worker_cert": base64.b64encode(self.worker_cert).decode(), "coefficient": self.coefficient,
                "usage": usage_to_openai(self.usage), "cost": self.cost, "settled_before": self.settled_before,
                "request_sha256": self.request_hash.hex(),
                "response": {"content": self.content, "tool_calls": [list(t) for t in self.tool_calls]},
                "received_at": self.received_at, "max_cost": self.max_cost}

    @classmethod
    def from_json(cls, d: dict) -> "Evidence":
        if not isinstance(d, dict):
            raise EvidenceError("a receipt record is a JSON object")
        try:
            resp = d["response"]
            req = bytes.fromhex(d["request_sha256"])
            if len(req) != 32:
                raise EvidenceError("request_sha256 is not 32 bytes")
            calls = [(str(n), str(a)) for n, a in resp.get("tool_calls") or []]
            ev = cls.from_cocoon(d, b"", str(resp["content"]), calls,
                                 received_at=float(d.get("received_at", 0)))
        except KeyError as e:
            raise EvidenceError(f"the receipt record lacks {e.args[0]}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise EvidenceError(f"the receipt record is malformed: {e}") from None
        ev.request_hash = req
        ev.max_cost = int(d["max_cost"]) if d.get("max_cost") is not None else None
        return ev


@dataclass
class ReceiptVerdict:
    checks: list[Check] = field(default_factory=list)
    receipt: Optional[Receipt] = None
    operator_key: Optional[bytes] = None
    worker_owner: Optional[str] = None
    model_hash: Optional[bytes] = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok is not False for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if c.ok is False]

    def reason(self) -> str:
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if c.ok is False) or "ok"

    def to_dict(self) -> dict:
        return {"ok": self.ok, "failed": self.failed,
                "worker_owner": self.worker_owner,
                "operator_key": self.operator_key.hex() if self.operator_key else None,
                "model_hash": self.model_hash.hex() if self.model_hash else None,
                "checks": [{"name": c.name, "result": c.label, "detail": c.detail} for c in self.checks]}


class ReceiptVerifier:
    """Runs every check of one answer. ``workers`` verifies the worker certificate (a
    :class:`PeerVerifier` with role worker over the registry snapshot); ``stake_code`` and ``registry``
    derive the worker's stake address; ``stake_lookup`` reads it on chain (None: offline, the stake
    check is skipped). ``economics`` are the registry's prices."""

    def __init__(self, *, workers: PeerVerifier, registry: Address, stake_code: Optional[Cell],
                 economics: R.Economics, max_coefficient: Optional[int] = None,
                 stake_lookup: Optional[StakeLookup] = None, cert_ttl: float = 0.0):
        self.workers, self.registry, self.stake_code = workers, registry, stake_code
        self.economics, self.max_coefficient, self.stake_lookup = economics, max_coefficient, stake_lookup
        self.cert_ttl = cert_ttl
        self._certs: dict = {}
        self._stakes: dict = {}

    async def verify(self, ev: Evidence, cap: Optional[int] = None) -> ReceiptVerdict:
        """Every check of one answer; ``cap`` is the request's maximum cost (a proxy bills at most
        that, so a charge cut down to it is what the proxy may ask)."""
        v = ReceiptVerdict()
        add = v.checks.append
        cert = await self._certificate(ev.worker_cert)
        claims = cert.claims
        # receipt_format. The common case without parsing: the receipt the answer's facts make, in
        # the canonical form, signed by the key the worker's claims name. It proves the format, the
        # signature and every field the checks below compare; anything else is parsed and each
        # check says what differs.
        try:
            got, hash_error = response_hash(ev.content, ev.tool_calls), None
        except Exception as e:
            got, hash_error = None, e
        signed = None
        r = self._expected(ev, claims, got) if got is not None else None
        if r is not None:
            v.receipt = r
            add(Check("receipt_format", True, f"job receipt, job {ev.job_id:016x}…"))
        else:
            try:
                signed = S.SignedStatement.from_cell(Cell.one_from_boc(ev.receipt))
                r = Receipt.from_statement(signed.statement)
                if r.job_id != ev.job_id:
                    raise ValueError(f"it is for job {r.job_id:064x}, the answer is job {ev.job_id:064x}")
                if r.seqno != 1:
                    raise ValueError(f"seqno {r.seqno}, a job receipt has seqno 1")
                v.receipt = r
                add(Check("receipt_format", True, f"job receipt, job {ev.job_id:016x}…"))
            except Exception as e:  # any malformed BoC or statement
                add(Check("receipt_format", False, f"not a job receipt: {e}"))
                for name in CHECKS[1:]:
                    add(Check(name, False, "no readable receipt"))
                return v

        # worker_cert and model_hash
        cert_problems = [c for c in cert.checks if c.ok is False and c.name != "model_hash"]
        if cert_problems:
            add(Check("worker_cert", False, "; ".join(f"{c.name}: {c.detail}" for c in cert_problems)))
        else:
            add(Check("worker_cert", True, "attested worker" + (" (SIMULATED TEE)" if cert.simulated else "")))
        try:
            mh = cert.check("model_hash")
            if claims is not None and claims.model_hash is None:
                mh = Check("model_hash", False, "the worker's claims name no model")
            add(Check("model_hash", mh.ok if mh.ok is not None else False, mh.detail))
        except KeyError:
            add(Check("model_hash", False, "the certificate could not be checked for a model"))
        if claims is not None:
            v.operator_key, v.worker_owner, v.model_hash = claims.public_key, claims.operator, claims.model_hash

        # signature
        if v.operator_key is None:
            add(Check("signature", False, "no operator key: the worker's claims are unreadable"))
        elif signed is None or signed.verify(v.operator_key):     # None: the expected receipt, signed
            add(Check("signature", True, f"by operator key {v.operator_key.hex()[:16]}…"))
        else:
            add(Check("signature", False, f"not signed by the worker's operator key {v.operator_key.hex()[:16]}…"))

        add(await self._stake(r, v))

        # request and response
        add(Check("request_hash", r.request_hash == ev.request_hash,
                  "SHA-256 of the request sent" if r.request_hash == ev.request_hash
                  else "the worker signed another request than the one sent"))
        if got is None:
            add(Check("response_hash", False, f"cannot hash the content received: {hash_error}"))
        else:
            same = got == r.response_hash
            add(Check("response_hash", same, "matches the content received" if same
                      else "the content received is not what the worker signed"))

        # money
        add(Check("usage", r.usage == ev.usage, f"{r.usage.prompt_tokens}+{r.usage.completion_tokens} tokens"
                  if r.usage == ev.usage else f"the proxy reports {ev.usage}, the worker signed {r.usage}"))
        if r.coefficient != ev.coefficient:
            add(Check("coefficient", False, f"the proxy reports {ev.coefficient}, the worker signed {r.coefficient}"))
        elif self.max_coefficient is not None and r.coefficient > self.max_coefficient:
            add(Check("coefficient", False, f"{r.coefficient} is above the maximum {self.max_coefficient}"))
        else:
            add(Check("coefficient", True, str(r.coefficient)))
        expected = charge(r.usage, r.coefficient, self.economics).client_cost
        cap = cap if cap is not None else ev.max_cost
        if cap is not None and expected > cap:
            expected = cap
        add(Check("price", expected == ev.cost, f"{expected} nanoTON" if expected == ev.cost
                  else f"the proxy charges {ev.cost} nanoTON, usage × price is {expected}"))
        return v

    def _expected(self, ev: Evidence, claims, resp_hash: bytes) -> Optional[Receipt]:
        """The receipt ``ev``'s facts make (``resp_hash`` its content's hash), if ``ev.receipt`` is
        exactly it signed by the claims' key."""
        if claims is None or claims.public_key is None or claims.operator is None or self.stake_code is None:
            return None
        try:
            stake = self._stake_of(Address(claims.operator))
            r = Receipt(stake, ev.job_id, ev.request_hash, resp_hash, ev.usage, ev.coefficient)
        except Exception:
            return None
        return r if r.signs(ev.receipt, claims.public_key) else None

    def _stake_of(self, owner: Address) -> Address:
        """The worker owner's stake address (deriving it hashes the whole stake code: once per worker)."""
        k = (owner.to_str(is_user_friendly=False), self.stake_code.hash, self.registry.to_str(is_user_friendly=False))
        expected = self._stakes.get(k)
        if expected is None:
            expected = self._stakes[k] = S.stake_address(self.stake_code, self.registry, owner, S.ROLE_WORKER)
        return expected

    async def _certificate(self, der: bytes):
        """The worker certificate's verdict, reused while the registry snapshot is the same and for
        at most ``cert_ttl`` seconds (a worker sends the same certificate with every receipt)."""
        if self.cert_ttl <= 0 or self.workers.snapshots is None:
            return await self.workers.verify_certificate(der)
        try:
            snapshot = self.workers.snapshots.current()
        except Exception:
            return await self.workers.verify_certificate(der)
        key = (hashlib.sha256(der).digest(), snapshot)
        now = time.monotonic()
        hit = self._certs.get(key)
        if hit is not None and now - hit[0] < self.cert_ttl:
            return hit[1]
        verdict = await self.workers.verify_certificate(der)
        if len(self._certs) > 256:
            self._certs.clear()
        self._certs[key] = (now, verdict)
        return verdict

    async def _stake(self, r: Receipt, v: ReceiptVerdict) -> Check:
        if v.worker_owner is None or v.operator_key is None:
            return Check("stake", False, "the worker's claims name no operator")
        try:
            owner = Address(v.worker_owner)
        except Exception:
            return Check("stake", False, f"the claims' operator {v.worker_owner!r} is not an address")
        if self.stake_code is None:
            return Check("stake", False, "the registry has no stake code")
        expected = self._stake_of(owner)
        if r.worker_stake != expected:
            return Check("stake", False, "the receipt names another stake than the worker owner's")
        if self.stake_lookup is None:
            return Check("stake", None, "offline: the stake was not read from the chain")
        try:
            st = await self.stake_lookup(expected)
        except Exception as e:
            return Check("stake", False, f"cannot read the stake: {e}")
        if st is None:
            return Check("stake", False, "the worker has no stake on chain")
        if st.jailed:
            return Check("stake", False, "the worker's stake was slashed (jailed)")
        if not st.is_active:
            return Check("stake", False, "the worker's stake is not active")
        if st.operator_key != int.from_bytes(v.operator_key, "big"):
            return Check("stake", False, "the stake binds another operator key")
        return Check("stake", True, f"active, {st.active / 10**9:g} TON bound to the key")


# ---------------------------------------------------------------------------- records and one-shot checks
def view_record(registry: Address, snapshot, economics: R.Economics, stake_code: Optional[Cell]) -> dict:
    """What an offline check needs from the registry, as it was when a receipt was verified."""
    import dataclasses

    return {"registry": registry.to_str(is_user_friendly=False), "snapshot": snapshot.to_dict(),
            "economics": dataclasses.asdict(economics),
            "stake_code": base64.b64encode(stake_code.to_boc()).decode() if stake_code is not None else None}


def view_from_record(d: dict):
    """(registry, snapshot, economics, stake code) from :func:`view_record`'s output."""
    from node.tee.registry_source import RegistrySnapshot

    try:
        code = Cell.one_from_boc(base64.b64decode(d["stake_code"])) if d.get("stake_code") else None
        return (Address(d["registry"]), RegistrySnapshot.from_dict(d["snapshot"]), R.Economics(**d["economics"]),
                code)
    except (KeyError, TypeError, ValueError) as e:
        raise EvidenceError(f"the receipt record's registry view is unreadable: {e}") from None


async def verify_record(record: dict, *, view: Optional[dict] = None, live=None, dev_trust=None,
                        accept_tcb: tuple[str, ...] = ("UpToDate",), collateral=None) -> ReceiptVerdict:
    """Check one receipt record (``cocoon client receipts --json``) in one call. Offline (``live``
    None) it is judged against the registry view recorded with it (``view`` or ``record["registry"]``)
    at the time it was received; with ``live`` (a :class:`node.client.chain.ClientChain`) the
    registry's current allow-lists and stake code are used and the worker's stake is read on chain.
    Prices are those recorded with the receipt when present (what was agreed then)."""
    from node.tee.registry_source import SnapshotSource
    from node.tee.verify import Policy

    ev = Evidence.from_json(record)
    view = view or record.get("registry")
    registry = snapshot = economics = stake_code = None
    if view:
        registry, snapshot, economics, stake_code = view_from_record(view)
    lookup = None
    if live is not None:
        current = await live.read_registry()
        registry, snapshot, stake_code = live.registry, current.snapshot, current.codes.stake
        economics = economics or current.params.economics
        lookup = live.stake
    if snapshot is None or economics is None or registry is None:
        raise EvidenceError("the record has no registry view: check it against the chain (--network)")
    at = ev.received_at or time.time()
    workers = PeerVerifier(Policy("worker", accepted_tcb=frozenset(accept_tcb), dev_trust=dev_trust),
                           SnapshotSource.fixed(snapshot), collateral, clock=lambda: at)
    verifier = ReceiptVerifier(workers=workers, registry=registry, stake_code=stake_code, economics=economics,
                               stake_lookup=lookup)
    return await verifier.verify(ev)

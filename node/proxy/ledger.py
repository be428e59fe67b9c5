"""The proxy's books: SQLite (WAL, synchronous=FULL), written by one thread with group commit.

What is stored, and when (docs/PROTOCOL.md §6):

- ``channels``: per client channel the highest voucher the payer signed for a request (stored
  *before* the request it pays for is forwarded; requests are admitted against it, and it is never
  lowered), the latest *exact* one (a settle: what the client owes for the answers it has paid,
  claimable at any time), the settled total (what the proxy billed, or the cap the client was held
  to), and what the chain says was claimed;
- ``requests``: one row per (channel, request id): the answer as it was sent, so a retried id is
  answered from here and never served or billed twice;
- ``jobs``: the reservation of a request's maximum cost while it runs, then the worker's receipt,
  usage, cost and fee;
- ``workers`` and ``pay``: each worker's channel, what the proxy owes it in total (``paid``: one
  ``pay`` row per job's fee, with the cumulative total after it, in the job's own transaction) and the
  latest pay it signed (``pay_signed``, ``pay_sig``). A pay is signed when it is sent, at most every
  50 ms unless the worker nears its credit (node/proxy/workers.py), for the total then, and stored
  before the ``pay`` frame goes out: a lazy write that rides with the next commit, so no job's commit
  waits for a signature (near the credit, a commit of its own);
- ``claims``: recorded before they are sent, reconciled with the chain after a restart;
- ``reports``: the epoch statistics sent to the workers' reputation records.

Every write is a function ``op(cursor)`` run by :class:`Ledger` in its writer thread with group commit
(:class:`node.durable.GroupCommit`: each operation in its own savepoint, an operation that raises
changes nothing, one commit and one fsync for all the operations queued, then each caller released). The
admission check runs inside the same serialized operation that stores the voucher and the
reservation, so concurrent requests on one channel cannot both spend the same authorization.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from node import fastjson
from node.durable import GroupCommit, connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    channel TEXT PRIMARY KEY,
    payer_key TEXT NOT NULL,
    voucher_amount INTEGER NOT NULL DEFAULT 0,
    voucher_sig TEXT,
    exact_amount INTEGER NOT NULL DEFAULT 0,
    exact_sig TEXT,
    settled INTEGER NOT NULL DEFAULT 0,
    capped INTEGER NOT NULL DEFAULT 0,
    claimed INTEGER NOT NULL DEFAULT 0,
    last_job_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    channel TEXT NOT NULL,
    request_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER,
    stream INTEGER NOT NULL,
    response BLOB,          -- the answer as sent, less the worker certificate's base64 (see cert_at)
    created_at REAL NOT NULL,
    finished_at REAL,
    cert TEXT,              -- the SHA-256 (hex) of the worker certificate the answer carries, in certs
    cert_at INTEGER,        -- where in response its base64 goes back (NULL: response is whole)
    PRIMARY KEY (channel, request_id)
);
CREATE TABLE IF NOT EXISTS certs (      -- each worker certificate once, not once per answer
    hash TEXT PRIMARY KEY,
    der BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    request_id TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    worker TEXT,
    max_cost INTEGER NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    usage TEXT,
    coefficient INTEGER,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost INTEGER NOT NULL DEFAULT 0,
    worker_fee INTEGER NOT NULL DEFAULT 0,
    settled_before INTEGER,
    receipt TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    latency_ms INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (channel, status);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (worker, finished_at);
CREATE TABLE IF NOT EXISTS workers (
    owner TEXT PRIMARY KEY,
    operator_key TEXT NOT NULL,
    channel TEXT,
    deposited INTEGER NOT NULL DEFAULT 0,
    paid INTEGER NOT NULL DEFAULT 0,
    pay_signed INTEGER NOT NULL DEFAULT 0,   -- the cumulative amount pay_sig signs (at most paid)
    pay_sig TEXT,
    model TEXT,
    coefficient INTEGER,
    state TEXT NOT NULL,
    reason TEXT,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pay (
    job_id TEXT PRIMARY KEY,
    worker TEXT NOT NULL,
    fee INTEGER NOT NULL,
    cumulative INTEGER NOT NULL,
    signature TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fundings (
    id INTEGER PRIMARY KEY,
    worker TEXT NOT NULL,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    amount INTEGER NOT NULL,
    signature TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    claimed_before INTEGER NOT NULL,
    fee INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    sent_at REAL,
    done_at REAL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS reports (
    worker TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    stats TEXT NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL,
    detail TEXT,
    PRIMARY KEY (worker, epoch)
);
"""


class PaymentRequired(Exception):
    """The held voucher does not cover settled + in flight + this request's maximum cost:
    ``required`` = ``settled`` (billed) + ``in_flight`` (the maximum costs of the running jobs) + it."""

    def __init__(self, required: int, settled: int, in_flight: int, message: str):
        super().__init__(message)
        self.required, self.settled, self.in_flight = required, settled, in_flight


class Conflict(Exception):
    """A request the books refuse for a reason that is the client's (a settle below the floor...)."""


@dataclass(frozen=True)
class ChannelRow:
    channel: str
    payer_key: str
    voucher_amount: int
    voucher_sig: Optional[str]
    exact_amount: int
    exact_sig: Optional[str]
    settled: int
    capped: int
    claimed: int
    last_job_at: float
    created_at: float


@dataclass(frozen=True)
class RequestRow:
    channel: str
    request_id: str
    job_id: str
    status: str          # running | done
    http_status: Optional[int]
    stream: bool
    response: Optional[bytes]


@dataclass(frozen=True)
class Cert:
    """A worker certificate (DER) as answers carry it (base64) and the books key it (SHA-256, hex),
    both computed once per certificate, not once per answer."""
    der: bytes

    @functools.cached_property
    def b64(self) -> bytes:
        return base64.b64encode(self.der)

    @functools.cached_property
    def hash(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


@dataclass(frozen=True)
class Admission:
    """What :meth:`Ledger.admit` decided: a new job, or the record of an earlier answer."""
    job_id: str
    settled_before: int
    reserved: int
    record: Optional[RequestRow] = None   # set when the id was seen before


@dataclass(frozen=True)
class PayDue:
    """A worker's cumulative pay after a job, stored, not yet signed: ``job_id`` names its ``pay`` row
    (None when only the total is known, after a restart)."""
    worker: str
    channel: str
    cumulative: int
    job_id: Optional[str]


class Ledger(GroupCommit):
    """The books of one proxy. ``await ledger.run(op)`` runs ``op(cursor)`` durably (committed and
    synced before it returns, in a group commit: :mod:`node.durable`); ``ledger.read(fn)`` reads on
    a separate connection."""

    def __init__(self, path: Path | str):
        super().__init__(path, SCHEMA, name="ledger-writer", rows=True)
        cols = {r[1] for r in self.read(lambda c: c.execute("PRAGMA table_info(workers)").fetchall())}
        if "pay_signed" not in cols:   # books written before pays were signed as they are sent
            self.run_sync(lambda db: (
                db.execute("ALTER TABLE workers ADD COLUMN pay_signed INTEGER NOT NULL DEFAULT 0"),
                db.execute("UPDATE workers SET pay_signed=paid WHERE pay_sig IS NOT NULL AND pay_sig<>''")))
        cols = {r[1] for r in self.read(lambda c: c.execute("PRAGMA table_info(requests)").fetchall())}
        if "cert" not in cols:         # books written before answers were kept without the certificate
            self.run_sync(lambda db: (db.execute("ALTER TABLE requests ADD COLUMN cert TEXT"),
                                      db.execute("ALTER TABLE requests ADD COLUMN cert_at INTEGER")))

    # ------------------------------------------------------------------------ meta
    def get_meta(self, k: str) -> Optional[str]:
        r = self.read(lambda c: c.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone())
        return r["v"] if r else None

    async def set_meta(self, k: str, v: str) -> None:
        await self.run(lambda c: c.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (k, v)))

    # ------------------------------------------------------------------------ reads
    def channel(self, channel: str) -> Optional[ChannelRow]:
        r = self.read(lambda c: c.execute("SELECT * FROM channels WHERE channel=?", (channel,)).fetchone())
        return ChannelRow(**dict(r)) if r else None

    def reserved(self, channel: str) -> int:
        return self.read(lambda c: _reserved(c, channel))

    def request(self, channel: str, request_id: str) -> Optional[RequestRow]:
        r = self.read(lambda c: _request(c, channel, request_id))
        return r

    def job(self, job_id: str) -> Optional[dict]:
        r = self.read(lambda c: c.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone())
        return dict(r) if r else None

    def worker(self, owner: str) -> Optional[dict]:
        r = self.read(lambda c: c.execute("SELECT * FROM workers WHERE owner=?", (owner,)).fetchone())
        return dict(r) if r else None

    def channels(self) -> list[ChannelRow]:
        return [ChannelRow(**dict(r)) for r in self.read(lambda c: c.execute("SELECT * FROM channels").fetchall())]

    def workers(self) -> list[dict]:
        return [dict(r) for r in self.read(lambda c: c.execute("SELECT * FROM workers ORDER BY owner").fetchall())]

    def open_claims(self) -> list[dict]:
        return [dict(r) for r in self.read(lambda c: c.execute(
            "SELECT * FROM claims WHERE status IN ('recorded', 'sent') ORDER BY id").fetchall())]

    # ------------------------------------------------------------------------ requests and jobs
    async def admit(self, *, channel: str, payer_key: str, voucher_amount: int, voucher_sig: bytes,
                    request_id: str, job_id: str, max_cost: int, model: str, endpoint: str, stream: bool,
                    worker: Optional[str] = None, limit: Optional[int] = None,
                    now: Optional[float] = None) -> Admission:
        """Store the (already verified) voucher if it is above the held one, then admit the request:
        the held authorization must cover settled + the maximum cost of the jobs in flight + this
        one's (else :class:`PaymentRequired`, with the voucher still stored). ``limit`` is the most
        the channel can pay out (claimed + what the escrow holds); authorizing beyond it is useless,
        so such a request is refused the same way. A request id seen before returns its record."""
        t = time.time() if now is None else now

        def op(c: sqlite3.Connection) -> Admission:
            row = c.execute("SELECT * FROM channels WHERE channel=?", (channel,)).fetchone()
            if row is None:
                c.execute("INSERT INTO channels (channel, payer_key, created_at) VALUES (?, ?, ?)",
                          (channel, payer_key, t))
                held, settled = 0, 0
            else:
                held, settled = row["voucher_amount"], row["settled"]
            if voucher_amount > held:
                c.execute("UPDATE channels SET voucher_amount=?, voucher_sig=? WHERE channel=?",
                          (voucher_amount, voucher_sig.hex(), channel))
                held = voucher_amount
            rec = _request(c, channel, request_id)
            if rec is not None:
                return Admission(rec.job_id, settled, 0, rec)
            reserved = _reserved(c, channel)
            required = settled + reserved + max_cost
            if held < required:   # returned, not raised: the voucher stays stored
                return PaymentRequired(required, settled, reserved,
                                      f"the voucher authorizes {held} nanoTON; this request needs {required} "
                                      f"(settled {settled} + in flight {reserved} + maximum cost {max_cost})")
            if limit is not None and required > limit:
                return PaymentRequired(required, settled, reserved,
                                      f"the channel can pay out at most {limit} nanoTON in total; this request "
                                      f"needs {required}: top up the channel")
            c.execute("INSERT INTO requests (channel, request_id, job_id, status, stream, created_at) "
                      "VALUES (?, ?, ?, 'running', ?, ?)", (channel, request_id, job_id, int(stream), t))
            c.execute("INSERT INTO jobs (job_id, channel, request_id, model, endpoint, worker, max_cost, status, "
                      "settled_before, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                      (job_id, channel, request_id, model, endpoint, worker, max_cost, settled, t))
            return Admission(job_id, settled, reserved)

        out = await self.run(op)
        if isinstance(out, PaymentRequired):
            raise out
        return out

    async def store_voucher(self, channel: str, amount: int, signature: bytes) -> bool:
        """Keep a verified voucher if it is above the held one (a 402's voucher is kept too)."""
        def op(c):
            cur = c.execute("UPDATE channels SET voucher_amount=?, voucher_sig=? WHERE channel=? AND voucher_amount<?",
                            (amount, signature.hex(), channel, amount))
            return cur.rowcount > 0
        return await self.run(op)

    async def assign(self, job_id: str, worker: str) -> None:
        await self.run(lambda c: c.execute("UPDATE jobs SET worker=? WHERE job_id=?", (worker, job_id)))

    async def complete(self, job_id: str, *, worker: str, outcome: str, usage: Optional[dict], coefficient: int,
                       tokens: int, cost: int, worker_fee: int, receipt: Optional[str], http_status: int,
                       response: bytes, latency_ms: int, pay_worker: bool = True,
                       cert: Optional[Cert] = None,
                       now: Optional[float] = None) -> tuple[int, Optional[PayDue]]:
        """The end of a job, in one transaction: the receipt and cost, the client's settled total,
        the answer recorded for its request id, and (``pay_worker``, on a worker channel) the
        worker's fee added to what it is owed. Returns (cost billed, the worker's new cumulative pay,
        to be signed and sent: :meth:`store_pay`). ``cert``: the worker certificate the answer
        carries in base64; it is kept once in ``certs`` and cut from the answer's record (a few
        kilobytes an answer), which :meth:`request` gives back whole."""
        t = time.time() if now is None else now

        def op(c):
            j = c.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if j is None or j["status"] != "running":
                raise Conflict(f"job {job_id} is not running")
            billed = min(cost, j["max_cost"])
            c.execute("UPDATE jobs SET status='done', outcome=?, worker=?, usage=?, coefficient=?, tokens=?, cost=?, "
                      "worker_fee=?, receipt=?, finished_at=?, latency_ms=? WHERE job_id=?",
                      (outcome, worker, fastjson.dumps_str(usage) if usage is not None else None, coefficient, tokens,
                       billed, worker_fee, receipt, t, latency_ms, job_id))
            c.execute("UPDATE channels SET settled=settled+?, last_job_at=? WHERE channel=?",
                      (billed, t, j["channel"]))
            kept, ref, at = _cut_cert(c, response, cert)
            c.execute("UPDATE requests SET status='done', http_status=?, response=?, finished_at=?, cert=?, cert_at=? "
                      "WHERE channel=? AND request_id=?", (http_status, kept, t, ref, at, j["channel"], j["request_id"]))
            pay = _owe(c, job_id, worker, worker_fee, t) if worker_fee > 0 and pay_worker else None
            return billed, pay

        return await self.run(op)

    async def pay_late(self, job_id: str, *, worker: str, usage: dict, coefficient: int, worker_fee: int,
                       receipt: str) -> Optional[PayDue]:
        """A receipt for a job the proxy aborted (it stopped while the job ran): the client was never
        answered and is not billed, but the worker did the work and is paid its fee, once."""
        t = time.time()

        def op(c):
            j = c.execute("SELECT status, worker FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if j is None or j["status"] != "aborted" or j["worker"] != worker:
                return None
            c.execute("UPDATE jobs SET status='done', outcome='failed', usage=?, coefficient=?, cost=0, worker_fee=?, "
                      "receipt=?, finished_at=COALESCE(finished_at, ?) WHERE job_id=?",
                      (fastjson.dumps_str(usage), coefficient, worker_fee, receipt, t, job_id))
            return _owe(c, job_id, worker, worker_fee, t) if worker_fee > 0 else None
        return await self.run(op)

    async def store_pay(self, due: PayDue, signature: bytes, soon: bool = False) -> bool:
        """Keep the signature of a worker's cumulative pay: a lazy write (it rides with the next
        commit), returning once it is durable, when the ``pay`` frame may go out; ``soon``: a commit
        of its own in the writer thread (a pay the worker needs before its next job, near its
        credit). A signature for less than the one held, or for another channel, is not kept (False)."""
        def op(c):
            cur = c.execute("UPDATE workers SET pay_signed=?, pay_sig=? WHERE owner=? AND channel=? AND pay_signed<? "
                            "AND paid>=?", (due.cumulative, signature.hex(), due.worker, due.channel, due.cumulative,
                                            due.cumulative))
            if cur.rowcount == 0:
                return False
            if due.job_id is not None:
                c.execute("UPDATE pay SET signature=? WHERE job_id=?", (signature.hex(), due.job_id))
            else:
                c.execute("UPDATE pay SET signature=? WHERE worker=? AND cumulative=?", (signature.hex(), due.worker,
                                                                                      due.cumulative))
            return True
        return await (self.behind(op) if soon else self.lazy(op))

    def pay_due(self, worker: str) -> Optional[PayDue]:
        """What a worker is owed beyond the pay signed to it (after a restart between a job's end and
        its pay's signature), or None."""
        w = self.worker(worker)
        if w is None or not w["channel"] or w["paid"] <= w["pay_signed"]:
            return None
        return PayDue(worker, w["channel"], w["paid"], None)

    async def answer_unbilled(self, job_id: str, *, worker: Optional[str], outcome: str, http_status: int,
                              response: bytes, now: Optional[float] = None) -> None:
        """A job that ends without a receipt (the worker refused it before any token, or died): the
        reservation is released, nothing is billed, the answer is recorded for the request id."""
        t = time.time() if now is None else now

        def op(c):
            j = c.execute("SELECT channel, request_id FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            c.execute("UPDATE jobs SET status='done', outcome=?, worker=?, finished_at=? WHERE job_id=? "
                      "AND status='running'", (outcome, worker, t, job_id))
            if j is not None:
                c.execute("UPDATE requests SET status='done', http_status=?, response=?, finished_at=? "
                          "WHERE channel=? AND request_id=?", (http_status, response, t, j["channel"], j["request_id"]))
        await self.run(op)

    async def release(self, job_id: str, *, worker: Optional[str] = None, outcome: Optional[str] = None) -> None:
        """Undo an admission that was never answered (no worker had room, the proxy's own failure):
        the request id is free again and nothing is billed."""
        t = time.time()

        def op(c):
            j = c.execute("SELECT channel, request_id FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if j is None:
                return
            c.execute("UPDATE jobs SET status='aborted', worker=COALESCE(?, worker), outcome=?, finished_at=? "
                      "WHERE job_id=?", (worker, outcome, t, job_id))
            c.execute("DELETE FROM requests WHERE channel=? AND request_id=? AND job_id=?",
                      (j["channel"], j["request_id"], job_id))
        await self.run(op)

    async def settle(self, channel: str, request_id: str, amount: int, signature: bytes) -> ChannelRow:
        """Keep the client's exact total (PROTOCOL §4): what it owes for the answers it has paid, at
        most what the proxy billed and never below the exact total held (a settle that arrives after a
        newer one is stale). The authorization requests are admitted against is left as it is: a
        request authorized before this total was signed may still be on its way, counting on it."""
        def op(c):
            row = c.execute("SELECT * FROM channels WHERE channel=?", (channel,)).fetchone()
            if row is None:
                raise Conflict("no request was ever made on this channel")
            rec = _request(c, channel, request_id)
            if rec is None or rec.status != "done":
                raise Conflict(f"request {request_id} has not been answered on this channel")
            if amount > row["settled"]:
                raise Conflict(f"an exact total cannot exceed what the channel was billed: {row['settled']} "
                               f"nanoTON; the voucher says {amount}")
            if amount < row["exact_amount"]:
                raise Conflict(f"superseded: the exact total held is {row['exact_amount']} nanoTON; the voucher "
                               f"says {amount}")
            c.execute("UPDATE channels SET exact_amount=?, exact_sig=? WHERE channel=?",
                      (amount, signature.hex(), channel))
            return ChannelRow(**dict(c.execute("SELECT * FROM channels WHERE channel=?", (channel,)).fetchone()))
        return await self.run(op)

    def close_voucher(self, channel: str) -> tuple[int, Optional[str]]:
        """(amount, signature) to claim when the payer is leaving: its exact total when that pays for
        everything billed and nothing is running (an honest client pays exactly what it used), else
        all it authorized (the cap it signed)."""
        def fn(c):
            row = c.execute("SELECT * FROM channels WHERE channel=?", (channel,)).fetchone()
            if row is None:
                return 0, None
            if row["exact_sig"] and row["exact_amount"] >= row["settled"] and not _reserved(c, channel):
                return row["exact_amount"], row["exact_sig"]
            return row["voucher_amount"], row["voucher_sig"]
        return self.read(fn)

    async def apply_caps(self, older_than: float) -> list[tuple[str, int]]:
        """A client that has not settled its last request since ``older_than`` is held to the cap
        it signed: its settled total becomes the held voucher's amount. Returns (channel, added).

        Only billed work that no exact total covers is capped (``exact_amount < settled``): an
        authorization for a request that was never answered (released, or refused by every
        worker) is never turned into a charge, so an honest client pays exactly what it used."""
        def op(c):
            out = []
            rows = c.execute("SELECT channel, voucher_amount, settled FROM channels WHERE voucher_amount>settled "
                             "AND exact_amount<settled AND last_job_at>0 AND last_job_at<?", (older_than,)).fetchall()
            for r in rows:
                if _reserved(c, r["channel"]):
                    continue
                add = r["voucher_amount"] - r["settled"]
                c.execute("UPDATE channels SET settled=voucher_amount, capped=capped+?, exact_amount=voucher_amount, "
                          "exact_sig=voucher_sig WHERE channel=?", (add, r["channel"]))
                out.append((r["channel"], add))
            return out
        return await self.run(op)

    async def recover(self) -> dict[str, int]:
        """After a restart: jobs that were running lost their worker link with the proxy, so they are
        aborted unbilled and their request ids freed (they were never answered); claims that were
        recorded or sent are left for :meth:`reconcile_claim` against the chain."""
        def op(c):
            rows = c.execute("SELECT job_id, channel, request_id FROM jobs WHERE status='running'").fetchall()
            for j in rows:
                c.execute("UPDATE jobs SET status='aborted', outcome='failed' WHERE job_id=?", (j["job_id"],))
                c.execute("DELETE FROM requests WHERE channel=? AND request_id=? AND job_id=?",
                          (j["channel"], j["request_id"], j["job_id"]))
            c.execute("UPDATE workers SET state='down', reason='proxy restarted' WHERE state='up'")
            n_claims = c.execute("SELECT COUNT(*) FROM claims WHERE status IN ('recorded', 'sent')").fetchone()[0]
            return {"aborted_jobs": len(rows), "open_claims": n_claims}
        return await self.run(op)

    # ------------------------------------------------------------------------ workers
    async def worker_connected(self, owner: str, operator_key: str, model: str, coefficient: int) -> dict:
        t = time.time()

        def op(c):
            w = c.execute("SELECT * FROM workers WHERE owner=?", (owner,)).fetchone()
            if w is None:
                c.execute("INSERT INTO workers (owner, operator_key, model, coefficient, state, last_seen) "
                          "VALUES (?, ?, ?, ?, 'up', ?)", (owner, operator_key, model, coefficient, t))
            else:
                c.execute("UPDATE workers SET operator_key=?, model=?, coefficient=?, state='up', reason=NULL, "
                          "last_seen=? WHERE owner=?", (operator_key, model, coefficient, t, owner))
            return dict(c.execute("SELECT * FROM workers WHERE owner=?", (owner,)).fetchone())
        return await self.run(op)

    async def worker_state(self, owner: str, operator_key: str, state: str, reason: Optional[str] = None) -> None:
        t = time.time()

        def op(c):
            c.execute("INSERT INTO workers (owner, operator_key, state, reason, last_seen) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT(owner) DO UPDATE SET state=excluded.state, reason=excluded.reason, "
                      "last_seen=excluded.last_seen", (owner, operator_key, state, reason, t))
        await self.run(op)

    async def worker_channel(self, owner: str, channel: str) -> None:
        await self.run(lambda c: c.execute("UPDATE workers SET channel=? WHERE owner=? AND (channel IS NULL OR channel<>?)",
                                           (channel, owner, channel)))

    async def record_funding(self, owner: str, channel: str, kind: str, amount: int) -> int:
        t = time.time()
        return await self.run(lambda c: c.execute(
            "INSERT INTO fundings (worker, channel, kind, amount, status, at) VALUES (?, ?, ?, ?, 'sent', ?)",
            (owner, channel, kind, amount, t)).lastrowid)

    async def funding_done(self, fid: int, status: str, deposited: Optional[int] = None) -> None:
        def op(c):
            c.execute("UPDATE fundings SET status=? WHERE id=?", (status, fid))
            if deposited is not None:
                w = c.execute("SELECT worker FROM fundings WHERE id=?", (fid,)).fetchone()
                c.execute("UPDATE workers SET deposited=? WHERE owner=?", (deposited, w["worker"]))
        await self.run(op)

    async def worker_deposited(self, owner: str, deposited: int) -> None:
        await self.run(lambda c: c.execute("UPDATE workers SET deposited=? WHERE owner=?", (deposited, owner)))

    # ------------------------------------------------------------------------ claims
    async def record_claim(self, channel: str, amount: int, signature: str, reason: str, claimed_before: int,
                           detail: str) -> int:
        t = time.time()
        return await self.run(lambda c: c.execute(
            "INSERT INTO claims (channel, amount, signature, reason, status, claimed_before, created_at, detail) "
            "VALUES (?, ?, ?, ?, 'recorded', ?, ?, ?)",
            (channel, amount, signature, reason, claimed_before, t, detail)).lastrowid)

    async def claim_status(self, cid: int, status: str, *, fee: Optional[int] = None, detail: Optional[str] = None,
                           claimed: Optional[int] = None) -> None:
        t = time.time()

        def op(c):
            col = "sent_at" if status == "sent" else "done_at"
            c.execute(f"UPDATE claims SET status=?, {col}=?, fee=COALESCE(?, fee), detail=COALESCE(?, detail) "
                      "WHERE id=?", (status, t, fee, detail, cid))
            if claimed is not None:
                ch = c.execute("SELECT channel FROM claims WHERE id=?", (cid,)).fetchone()
                _claimed(c, ch["channel"], claimed)
        await self.run(op)

    async def set_claimed(self, channel: str, claimed: int) -> None:
        await self.run(lambda c: _claimed(c, channel, claimed))

    # ------------------------------------------------------------------------ reputation reports
    def epoch_stats(self, start: float, end: float) -> dict[str, dict]:
        """Per worker, the jobs that finished in [start, end): succeeded, failed, timed out, tokens
        and the mean latency of the succeeded ones (ms)."""
        def fn(c):
            rows = c.execute(
                "SELECT worker, outcome, COUNT(*) AS n, SUM(tokens) AS tok, SUM(latency_ms) AS lat FROM jobs "
                "WHERE worker IS NOT NULL AND outcome IS NOT NULL AND finished_at>=? AND finished_at<? "
                "GROUP BY worker, outcome", (start, end)).fetchall()
            out: dict[str, dict] = {}
            for r in rows:
                s = out.setdefault(r["worker"], dict(succeeded=0, failed=0, timed_out=0, tokens=0, latency_sum=0))
                if r["outcome"] in ("succeeded", "failed", "timed_out"):
                    s[r["outcome"]] += r["n"]
                s["tokens"] += r["tok"] or 0
                if r["outcome"] == "succeeded":
                    s["latency_sum"] += r["lat"] or 0
            for s in out.values():
                s["latency_ms"] = s.pop("latency_sum") // s["succeeded"] if s["succeeded"] else 0
            return out
        return self.read(fn)

    def reported(self, worker: str, epoch: int) -> Optional[str]:
        r = self.read(lambda c: c.execute("SELECT status FROM reports WHERE worker=? AND epoch=?",
                                          (worker, epoch)).fetchone())
        return r["status"] if r else None

    async def record_report(self, worker: str, epoch: int, stats: dict, status: str, detail: Optional[str] = None) -> None:
        t = time.time()
        await self.run(lambda c: c.execute(
            "INSERT INTO reports (worker, epoch, stats, status, at, detail) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(worker, epoch) DO UPDATE SET status=excluded.status, at=excluded.at, detail=excluded.detail",
            (worker, epoch, json.dumps(stats), status, t, detail)))

    # ------------------------------------------------------------------------ the status command
    def summary(self) -> dict:
        return self.read(summary)


def read_summary(path: Path | str) -> dict:
    """The status command's figures from a ledger file, read only (the proxy may be running)."""
    con = connect(path, readonly=True, rows=True)
    try:
        return summary(con)
    finally:
        con.close()


def summary(c: sqlite3.Connection) -> dict:
    one = lambda q, *a: c.execute(q, a).fetchone()[0] or 0  # noqa: E731
    workers = [dict(r) for r in c.execute("SELECT owner, model, coefficient, state, reason, channel, deposited, "
                                          "paid, last_seen FROM workers ORDER BY owner").fetchall()]
    per_worker = {r["worker"]: dict(r) for r in c.execute(
        "SELECT worker, COUNT(*) AS jobs, SUM(outcome='succeeded') AS succeeded, SUM(outcome='failed') AS failed, "
        "SUM(outcome='timed_out') AS timed_out, SUM(tokens) AS tokens, SUM(worker_fee) AS earned "
        "FROM jobs WHERE status='done' GROUP BY worker").fetchall()}
    for w in workers:
        w.update({k: v or 0 for k, v in per_worker.get(w["owner"], {}).items() if k != "worker"})
    settled = one("SELECT SUM(settled) FROM channels")
    paid = one("SELECT SUM(paid) FROM workers")
    return {
        "clients": one("SELECT COUNT(*) FROM channels"),
        "jobs": one("SELECT COUNT(*) FROM jobs WHERE status='done'"),
        "running": one("SELECT COUNT(*) FROM jobs WHERE status='running'"),
        "billed": one("SELECT SUM(cost) FROM jobs WHERE status='done'"),
        "settled": settled,
        "capped": one("SELECT SUM(capped) FROM channels"),
        "authorized": one("SELECT SUM(voucher_amount) FROM channels"),
        "claimed": one("SELECT SUM(claimed) FROM channels"),
        "owed": one("SELECT SUM(MAX(settled-claimed, 0)) FROM channels"),
        "worker_pay": paid,
        "margin": settled - paid,
        "claim_fees": one("SELECT SUM(fee) FROM claims WHERE status='confirmed'"),
        "pending_claims": one("SELECT COUNT(*) FROM claims WHERE status IN ('recorded', 'sent')"),
        "claims": one("SELECT COUNT(*) FROM claims WHERE status='confirmed'"),
        "reports": one("SELECT COUNT(*) FROM reports WHERE status='sent'"),
        "workers": workers,
    }


def _claimed(c: sqlite3.Connection, channel: str, claimed: int) -> None:
    """The chain's claimed total; a claim above what the client owed (a cap claimed before a close
    notice ended) raises its settled total to it."""
    c.execute("UPDATE channels SET capped=capped+MAX(?-settled, 0), settled=MAX(settled, ?), claimed=MAX(claimed, ?) "
              "WHERE channel=?", (claimed, claimed, claimed, channel))


def _owe(c: sqlite3.Connection, job_id: str, worker: str, fee: int, t: float) -> Optional[PayDue]:
    """Add a job's fee to what its worker is owed (its ``pay`` row, signed later); None without a
    channel to the worker."""
    w = c.execute("SELECT channel, paid FROM workers WHERE owner=?", (worker,)).fetchone()
    if w is None or not w["channel"]:
        return None
    total = w["paid"] + fee
    c.execute("UPDATE workers SET paid=? WHERE owner=?", (total, worker))
    c.execute("INSERT INTO pay (job_id, worker, fee, cumulative, signature, at) VALUES (?, ?, ?, ?, ?, ?)",
              (job_id, worker, fee, total, "", t))
    return PayDue(worker, w["channel"], total, job_id)


def _reserved(c: sqlite3.Connection, channel: str) -> int:
    return c.execute("SELECT COALESCE(SUM(max_cost), 0) FROM jobs WHERE channel=? AND status='running'",
                     (channel,)).fetchone()[0]


def _request(c: sqlite3.Connection, channel: str, request_id: str) -> Optional[RequestRow]:
    r = c.execute("SELECT r.*, certs.der FROM requests r LEFT JOIN certs ON certs.hash = r.cert "
                  "WHERE r.channel=? AND r.request_id=?", (channel, request_id)).fetchone()
    if r is None:
        return None
    response = r["response"]
    if r["cert_at"] is not None:     # the answer as it was sent: its certificate back in place
        at = r["cert_at"]
        response = response[:at] + Cert(r["der"]).b64 + response[at:]
    return RequestRow(r["channel"], r["request_id"], r["job_id"], r["status"], r["http_status"], bool(r["stream"]),
                      response)


def _cut_cert(c: sqlite3.Connection, response: bytes, cert: Optional[Cert]) -> tuple[bytes, Optional[str], Optional[int]]:
    """(the answer to keep, the certificate's hash, where its base64 goes back): the certificate is
    kept once in ``certs`` and its base64, which the answer carries last (in its ``cocoon`` object),
    is cut out; splicing it back at the same place gives the very bytes sent."""
    if cert is None:
        return response, None, None
    b64 = cert.b64
    at = response.rfind(b64[:32])               # a short needle finds it in a tenth of the time
    if at < 0 or response[at:at + len(b64)] != b64:
        at = response.rfind(b64)                # any whole occurrence will do: it goes back where it was cut
        if at < 0:
            return response, None, None
    c.execute("INSERT OR IGNORE INTO certs (hash, der) VALUES (?, ?)", (cert.hash, cert.der))
    return response[:at] + response[at + len(b64):], cert.hash, at

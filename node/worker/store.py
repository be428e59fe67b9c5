"""The worker's state in SQLite (WAL, synchronous=FULL): receipts, vouchers, claims.

Rules (docs/PROTOCOL.md §6): a job id is recorded as started (committed and synced) before its receipt
is sent, and a job id recorded once is never served again, so it has at most one receipt for ever
(two receipts for one job are slashable evidence). The mark commits in the writer thread from the
job's arrival while the job runs (a job refused before it runs drops it again); the receipt's own
row, never replaced, takes the mark's place in the same transaction (so the marks kept are only of
jobs without a receipt). A sent receipt's row is a lazy write: it rides with the
next commit (the next job's mark) or commits alone within a quarter of a second, so it never syncs
the disk alongside the proxy's books while the proxy answers; a crash before then loses only the
worker's copy of a receipt the proxy holds, and the mark keeps the job id from being served again.
A receipt the link could not send is written at once, and the link reopens only once it is durable.
A voucher is stored only if it is above the stored one; a claim is recorded before it is sent and
reconciled with the chain afterwards.
"""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from node.durable import GroupCommit
from node.payments.pricing import Usage
from node.payments.vouchers import Voucher

SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    job_id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,          -- the proxy->worker channel the job is paid through ('' if none)
    endpoint TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response_hash TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    coefficient INTEGER NOT NULL,
    fee INTEGER NOT NULL,           -- nanoTON the worker earns for it
    status INTEGER NOT NULL,        -- HTTP status of the answer
    cancelled INTEGER NOT NULL,
    receipt BLOB NOT NULL,          -- BoC of the signed statement
    created REAL NOT NULL,
    sent REAL                       -- when it was handed to the link (NULL: still to send)
);
CREATE TABLE IF NOT EXISTS jobs (         -- job ids started and without a receipt row: never served again
    job_id TEXT PRIMARY KEY,
    started REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vouchers (
    channel TEXT PRIMARY KEY,
    proxy_owner TEXT NOT NULL,
    amount INTEGER NOT NULL,
    signature TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    amount INTEGER NOT NULL,        -- the voucher amount claimed with
    state TEXT NOT NULL,            -- sent | confirmed | failed
    claimed_after INTEGER,          -- the channel's claimed total seen afterwards
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class StoredReceipt:
    job_id: str
    channel: str
    endpoint: str
    usage: Usage
    coefficient: int
    fee: int
    status: int
    cancelled: bool
    receipt: bytes
    response_hash: str
    request_hash: str
    sent: Optional[float]


class Store:
    """Writes go through one writer thread with group commit (:class:`node.durable.GroupCommit`: each
    operation in its own savepoint, one commit and one fsync for the batch, then each caller
    released). Reads use a second connection (WAL readers never wait for the writer). What the hot path
    asks for each job (earned per channel, the vouchers held) is kept in memory, loaded at start and
    updated after each commit."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = GroupCommit(self.path, SCHEMA, name="worker-store")
        self._mem = threading.Lock()             # the in-memory totals
        self._earned: dict[str, int] = {ch: int(fee) for ch, fee in self._all(
            "SELECT channel, COALESCE(SUM(fee),0) FROM receipts GROUP BY channel")}
        self._paid: dict[str, int] = {ch: int(a) for ch, a in self._all("SELECT channel, amount FROM vouchers")}
        self._pending: dict[str, StoredReceipt] = {}   # receipts whose rows are queued, not yet durable

    @property
    def commits(self) -> int:
        return self._db.commits

    def close(self) -> None:
        self._db.close()                         # operations queued before it are committed first

    def _write(self, op):
        """Run ``op(db)`` in the writer and wait until it is committed and synced."""
        return self._db.run_sync(op)

    def _one(self, sql: str, args=()) -> Optional[tuple]:
        return self._db.read(lambda c: c.execute(sql, args).fetchone())

    def _all(self, sql: str, args=()) -> list:
        return self._db.read(lambda c: c.execute(sql, args).fetchall())

    # ------------------------------------------------------------------ receipts
    _RCOLS = ("job_id, channel, endpoint, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, "
              "coefficient, fee, status, cancelled, receipt, response_hash, request_hash, sent")

    @staticmethod
    def _receipt(r: tuple) -> StoredReceipt:
        return StoredReceipt(r[0], r[1], r[2], Usage(r[3], r[4], r[5], r[6]), r[7], r[8], r[9], bool(r[10]),
                             bytes(r[11]), r[12], r[13], r[14])

    def receipt(self, job_id: str) -> Optional[StoredReceipt]:
        pending = self._pending.get(job_id)
        if pending is not None:
            return pending
        r = self._one(f"SELECT {self._RCOLS} FROM receipts WHERE job_id=?", (job_id,))
        return self._receipt(r) if r else None

    # ------------------------------------------------------------------ jobs
    def begin_job(self, job_id: str):
        """Record ``job_id`` as started, in the writer thread while the job runs (never on this
        thread); an asyncio future, done when it is durable with True, or False if the id was
        started or has a receipt already (then no receipt may be sent for it). The mark is dropped
        when the receipt's row is written, which records the job id for good."""
        return self._db.behind(lambda db: db.execute(
            "INSERT OR IGNORE INTO jobs SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM receipts WHERE job_id=?)",
            (job_id, time.time(), job_id)).rowcount == 1)

    def drop_start(self, job_id: str, mark: "asyncio.Future") -> None:
        """Forget the start mark of a job refused before it ran (no receipt was signed for it): a lazy
        write queued once the mark is durable, so it never runs before the mark it removes."""
        def queue(f: "asyncio.Future") -> None:
            if not f.cancelled() and f.exception() is None and f.result():
                self._db.submit_lazy(lambda db: db.execute("DELETE FROM jobs WHERE job_id=?", (job_id,)))
        mark.add_done_callback(queue)

    def started(self, job_id: str) -> bool:
        """Whether ``job_id`` was started here before without a receipt row (its mark is durable)."""
        return self._one("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)) is not None

    def keep_receipt(self, job_id: str, channel: str, endpoint: str, request_hash: bytes, response_hash: bytes,
                     usage: Usage, coefficient: int, fee: int, status: int, cancelled: bool, receipt: bytes,
                     sent: bool) -> Optional["asyncio.Future"]:
        """Write a job's receipt (its job id's start mark is durable already): counted and readable at
        once. ``sent``: the frame went out, and the row is a lazy write (see the module's docstring);
        None is returned. Else the receipt is sent when the link reopens, and the row is written
        behind: the returned future is done when it is durable. A job that has a row already keeps it."""
        got = StoredReceipt(job_id, channel, endpoint, usage, coefficient, fee, status, cancelled, receipt,
                            response_hash.hex(), request_hash.hex(), time.time() if sent else None)

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR IGNORE INTO receipts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (job_id, channel, endpoint, got.request_hash, got.response_hash, usage.prompt_tokens,
                        usage.cached_tokens, usage.completion_tokens, usage.reasoning_tokens, coefficient, fee,
                        status, int(cancelled), receipt, time.time(), got.sent))
            db.execute("DELETE FROM jobs WHERE job_id=?", (job_id,))   # the receipt's row records it now

        self._pending[job_id] = got
        with self._mem:
            self._earned[channel] = self._earned.get(channel, 0) + fee
        if sent:
            self._db.submit_lazy(write, lambda _ok, _res: self._pending.pop(job_id, None))
            return None
        fut = self._db.behind(write)
        fut.add_done_callback(lambda _f: self._pending.pop(job_id, None))
        return fut

    async def caught_up(self) -> None:
        """Until every unsent receipt's row queued so far is durable."""
        await self._db.caught_up()

    def mark_sent(self, job_id: str) -> None:
        """Note that a receipt was handed to the link; a lazy write (it rides with the next batch), not
        waited for (a mark lost in a crash only means the receipt is sent once more, and the proxy
        ignores it)."""
        t = time.time()
        self._db.submit_lazy(lambda db: db.execute("UPDATE receipts SET sent=? WHERE job_id=? AND sent IS NULL",
                                                   (t, job_id)))

    def unsent(self) -> list[StoredReceipt]:
        return [self._receipt(r) for r in self._all(f"SELECT {self._RCOLS} FROM receipts WHERE sent IS NULL "
                                                    "ORDER BY created")]

    def receipt_channels(self) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT channel FROM receipts WHERE channel != ''")]

    def earned(self, channel: Optional[str] = None) -> int:
        """The fees of the stored receipts (on one channel, or all)."""
        with self._mem:
            return sum(self._earned.values()) if channel is None else self._earned.get(channel, 0)

    def totals(self) -> dict:
        r = self._one("SELECT COUNT(*), COALESCE(SUM(prompt_tokens),0), COALESCE(SUM(cached_tokens),0), "
                      "COALESCE(SUM(completion_tokens),0), COALESCE(SUM(reasoning_tokens),0), COALESCE(SUM(fee),0), "
                      "COALESCE(SUM(cancelled),0), COALESCE(SUM(status>=400),0) FROM receipts")
        return dict(zip(("jobs", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "earned",
                         "cancelled", "failed"), r))

    # ------------------------------------------------------------------ vouchers
    def voucher(self, channel: str) -> Optional[Voucher]:
        r = self._one("SELECT amount, signature FROM vouchers WHERE channel=?", (channel,))
        if not r:
            return None
        return Voucher.from_dict({"channel": channel, "amount": r[0], "signature": r[1]})

    def _voucher_op(self, proxy_owner: str, v: Voucher):
        ch = v.channel.to_str(is_user_friendly=False)

        def op(db: sqlite3.Connection) -> bool:
            r = db.execute("SELECT amount FROM vouchers WHERE channel=?", (ch,)).fetchone()
            if r is not None and r[0] >= v.amount:
                return False
            db.execute("INSERT OR REPLACE INTO vouchers VALUES (?,?,?,?,?)",
                       (ch, proxy_owner, v.amount, v.signature.hex(), time.time()))
            return True
        return ch, op

    def _held(self, ch: str, amount: int) -> None:
        with self._mem:
            if amount > self._paid.get(ch, -1):
                self._paid[ch] = amount

    def put_voucher(self, proxy_owner: str, v: Voucher) -> bool:
        """Store ``v`` if it is above the stored one (the caller verified its signature); waits for
        the commit."""
        ch, op = self._voucher_op(proxy_owner, v)
        stored = self._write(op)
        self._held(ch, v.amount)
        return stored

    def keep_voucher(self, proxy_owner: str, v: Voucher) -> None:
        """:meth:`put_voucher` without waiting: a lazy write, committed with the next batch (nothing is
        acknowledged on a voucher, and the proxy sends its latest one again when the link reopens)."""
        ch, op = self._voucher_op(proxy_owner, v)
        self._held(ch, v.amount)
        self._db.submit_lazy(op)

    def paid(self) -> int:
        """The sum of the vouchers held, over all channels."""
        with self._mem:
            return sum(self._paid.values())

    def vouchers(self) -> list[tuple[str, str, int]]:
        return [tuple(r) for r in self._all("SELECT channel, proxy_owner, amount FROM vouchers ORDER BY channel")]

    # ------------------------------------------------------------------ claims
    def claim_started(self, channel: str, amount: int) -> int:
        now = time.time()
        return self._write(lambda db: int(db.execute(
            "INSERT INTO claims (channel, amount, state, created, updated) VALUES (?,?,?,?,?)",
            (channel, amount, "sent", now, now)).lastrowid))

    def claim_finished(self, claim_id: int, state: str, claimed_after: Optional[int]) -> None:
        now = time.time()
        self._write(lambda db: db.execute("UPDATE claims SET state=?, claimed_after=?, updated=? WHERE id=?",
                                          (state, claimed_after, now, claim_id)))

    def pending_claims(self) -> list[tuple[int, str, int]]:
        return [tuple(r) for r in self._all("SELECT id, channel, amount FROM claims WHERE state='sent'")]

    def claimed(self, channel: Optional[str] = None) -> int:
        """The highest claimed total the chain confirmed, summed over channels (or for one)."""
        q = "SELECT channel, MAX(claimed_after) FROM claims WHERE state='confirmed'"
        rows = self._all(q + (" AND channel=?" if channel else "") + " GROUP BY channel", (channel,) if channel else ())
        return sum(r[1] or 0 for r in rows)

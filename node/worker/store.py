"""The worker's state in SQLite (WAL, synchronous=FULL): receipts, vouchers, claims.

Rules (docs/PROTOCOL.md §6): a receipt is stored before it is sent and never replaced, so a job id has
exactly one receipt for ever; a voucher is stored only if it is above the stored one; a claim is
recorded before it is sent and reconciled with the chain afterwards.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from wrappers.escrow import Voucher
from wrappers.pricing import Usage

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


class ConflictError(RuntimeError):
    """A second, different receipt for a job that already has one."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _one(self, sql: str, args=()) -> Optional[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchone()

    def _all(self, sql: str, args=()) -> list:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ receipts
    _RCOLS = ("job_id, channel, endpoint, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, "
              "coefficient, fee, status, cancelled, receipt, response_hash, request_hash, sent")

    @staticmethod
    def _receipt(r: tuple) -> StoredReceipt:
        return StoredReceipt(r[0], r[1], r[2], Usage(r[3], r[4], r[5], r[6]), r[7], r[8], r[9], bool(r[10]),
                             bytes(r[11]), r[12], r[13], r[14])

    def receipt(self, job_id: str) -> Optional[StoredReceipt]:
        r = self._one(f"SELECT {self._RCOLS} FROM receipts WHERE job_id=?", (job_id,))
        return self._receipt(r) if r else None

    def put_receipt(self, job_id: str, channel: str, endpoint: str, request_hash: bytes, response_hash: bytes,
                    usage: Usage, coefficient: int, fee: int, status: int, cancelled: bool,
                    receipt: bytes) -> StoredReceipt:
        """Store a job's receipt (durably, before it is sent). A job that already has one keeps it:
        the stored receipt is returned and the new one is dropped."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                row = self.db.execute("SELECT receipt FROM receipts WHERE job_id=?", (job_id,)).fetchone()
                if row is None:
                    self.db.execute(
                        "INSERT INTO receipts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)",
                        (job_id, channel, endpoint, request_hash.hex(), response_hash.hex(), usage.prompt_tokens,
                         usage.cached_tokens, usage.completion_tokens, usage.reasoning_tokens, coefficient, fee,
                         status, int(cancelled), receipt, time.time()))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        got = self.receipt(job_id)
        assert got is not None
        return got

    def mark_sent(self, job_id: str) -> None:
        with self._lock:
            self.db.execute("UPDATE receipts SET sent=? WHERE job_id=? AND sent IS NULL", (time.time(), job_id))

    def unsent(self) -> list[StoredReceipt]:
        return [self._receipt(r) for r in self._all(f"SELECT {self._RCOLS} FROM receipts WHERE sent IS NULL "
                                                    "ORDER BY created")]

    def receipt_channels(self) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT channel FROM receipts WHERE channel != ''")]

    def earned(self, channel: Optional[str] = None) -> int:
        if channel is None:
            return self._one("SELECT COALESCE(SUM(fee),0) FROM receipts")[0]
        return self._one("SELECT COALESCE(SUM(fee),0) FROM receipts WHERE channel=?", (channel,))[0]

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
        return Voucher.from_json(json.dumps({"channel": channel, "amount": r[0], "signature": r[1]}))

    def put_voucher(self, proxy_owner: str, v: Voucher) -> bool:
        """Store ``v`` if it is above the stored one (the caller verified its signature)."""
        ch = v.channel.to_str(is_user_friendly=False)
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                r = self.db.execute("SELECT amount FROM vouchers WHERE channel=?", (ch,)).fetchone()
                if r is not None and r[0] >= v.amount:
                    self.db.execute("COMMIT")
                    return False
                self.db.execute("INSERT OR REPLACE INTO vouchers VALUES (?,?,?,?,?)",
                                (ch, proxy_owner, v.amount, v.signature.hex(), time.time()))
                self.db.execute("COMMIT")
                return True
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def vouchers(self) -> list[tuple[str, str, int]]:
        return [tuple(r) for r in self._all("SELECT channel, proxy_owner, amount FROM vouchers ORDER BY channel")]

    # ------------------------------------------------------------------ claims
    def claim_started(self, channel: str, amount: int) -> int:
        now = time.time()
        with self._lock:
            cur = self.db.execute("INSERT INTO claims (channel, amount, state, created, updated) VALUES (?,?,?,?,?)",
                                  (channel, amount, "sent", now, now))
            return int(cur.lastrowid)

    def claim_finished(self, claim_id: int, state: str, claimed_after: Optional[int]) -> None:
        with self._lock:
            self.db.execute("UPDATE claims SET state=?, claimed_after=?, updated=? WHERE id=?",
                            (state, claimed_after, time.time(), claim_id))

    def pending_claims(self) -> list[tuple[int, str, int]]:
        return [tuple(r) for r in self._all("SELECT id, channel, amount FROM claims WHERE state='sent'")]

    def claimed(self, channel: Optional[str] = None) -> int:
        """The highest claimed total the chain confirmed, summed over channels (or for one)."""
        q = "SELECT channel, MAX(claimed_after) FROM claims WHERE state='confirmed'"
        rows = self._all(q + (" AND channel=?" if channel else "") + " GROUP BY channel", (channel,) if channel else ())
        return sum(r[1] or 0 for r in rows)

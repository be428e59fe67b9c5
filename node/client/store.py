"""The gateway's state in SQLite (WAL, synchronous=FULL): channels, the totals signed, requests and
receipts.

A write is an operation ``op(connection)`` (the ``*_op`` functions below) run by one writer thread
with group commit (:class:`node.durable.GroupCommit`): everything queued is committed at once (one
fsync for many requests) and the event loop never waits on the disk; reads use a second connection.
No commit stands on a request's path (docs/PROTOCOL.md §6):

- a request's authorization row (its id, endpoint, model and request hash) is queued as the request
  goes out and commits while the proxy answers; the answer's end waits for it (it is long done);
- an answer's receipt and the new settled total are queued right behind the answer (committed within
  a few milliseconds, :meth:`Store.caught_up` waits for them), and the settle voucher goes out only
  once they are durable.

After a ``kill -9`` between the two, the authorization row names a request whose answer has no row:
the restarted gateway asks the proxy for that request id's record (the proxy stored it before it
answered), verifies its receipt and pays it as it would have, so a receipt once returned is never
lost. The highest voucher the proxy holds is taken from the proxy (its own signature, checked).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from node.durable import GroupCommit, Op

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    counter     INTEGER PRIMARY KEY,          -- the payment key's index (derived from the wallet key)
    address     TEXT NOT NULL UNIQUE,         -- escrow address, raw form
    proxy_owner TEXT NOT NULL,                -- the payee (proxy owner address, raw form)
    payee_key   TEXT NOT NULL,                -- the proxy's operator key (hex)
    endpoint    TEXT NOT NULL,
    state       TEXT NOT NULL,                -- open | closing | closed
    deposited   INTEGER NOT NULL DEFAULT 0,   -- what the wallet put in
    settled     INTEGER NOT NULL DEFAULT 0,   -- the exact total the proxy may claim
    signed_max  INTEGER NOT NULL DEFAULT 0,   -- the highest voucher ever signed
    disputed    INTEGER NOT NULL DEFAULT 0,   -- what the proxy billed for answers whose receipts failed
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    request_id  TEXT PRIMARY KEY,
    channel     TEXT NOT NULL,
    settled_before INTEGER NOT NULL,
    max_cost    INTEGER NOT NULL,
    state       TEXT NOT NULL,                -- authorized | settling | settled | unpaid | refused | failed
                                              -- | unresolved (no record found after a restart)
    cost        INTEGER,                      -- what was paid (settled state)
    final       INTEGER,                      -- the settle voucher's amount (settling, settled)
    created_at  REAL NOT NULL,
    endpoint    TEXT,                         -- chat | completion   (these four: what a restart needs
    model       TEXT,                         --   to ask the proxy for the request's record)
    stream      INTEGER,
    request_hash TEXT                         -- SHA-256 of the body sent (hex)
);
CREATE TABLE IF NOT EXISTS receipts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL,
    channel     TEXT NOT NULL,
    proxy_owner TEXT NOT NULL,
    endpoint    TEXT NOT NULL,                -- chat | completion
    model       TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    ok          INTEGER NOT NULL,
    paid        INTEGER NOT NULL,             -- nanoTON paid for it (0 when it failed)
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    record      TEXT NOT NULL,                -- the receipt record (node.payments.receipts.Evidence JSON)
    verdict     TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_request ON receipts(request_id);
CREATE TABLE IF NOT EXISTS views (            -- registry views receipts were checked against
    hash        TEXT PRIMARY KEY,
    json        TEXT NOT NULL
);
"""


# ---------------------------------------------------------------------------- write operations
# columns added to a table after its first release: (table, column, type), added at open when missing
ADDED_COLUMNS = (("requests", "endpoint", "TEXT"), ("requests", "model", "TEXT"), ("requests", "stream", "INTEGER"),
                 ("requests", "request_hash", "TEXT"))


def authorize_op(request_id: str, channel: str, settled_before: int, max_cost: int, voucher: int,
                 endpoint: Optional[str] = None, model: Optional[str] = None, stream: bool = False,
                 request_hash: Optional[bytes] = None) -> Op:
    """A request's authorization (the voucher's amount) and what identifies its record at the proxy."""
    t = time.time()

    def op(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO requests(request_id, channel, settled_before, max_cost, state, created_at, endpoint, "
                  "model, stream, request_hash) VALUES(?, ?, ?, ?, 'authorized', ?, ?, ?, ?, ?)",
                  (request_id, channel, settled_before, max_cost, t, endpoint, model, int(stream),
                   request_hash.hex() if request_hash is not None else None))
        c.execute("UPDATE channels SET signed_max=MAX(signed_max, ?) WHERE address=?", (voucher, channel))
    return op


def finish_op(request_id: str, state: str, cost: int, channel: str, settled: int, final: Optional[int] = None,
              disputed: int = 0, receipt: Optional[dict] = None, view: Optional[tuple[str, str]] = None) -> Op:
    """After the answer, in one transaction: the request's state and cost, the channel's settled total
    (what this gateway agreed to pay), any disputed amount, the receipt (the keyword arguments of
    :func:`receipt_op`) and the registry view it was checked against ((hash, JSON) of :func:`view_key`)."""
    def op(c: sqlite3.Connection) -> None:
        if view is not None:
            c.execute("INSERT OR IGNORE INTO views(hash, json) VALUES(?, ?)", view)
        if receipt is not None:
            receipt_op(**receipt)(c)
        c.execute("UPDATE requests SET state=?, cost=?, final=? WHERE request_id=?", (state, cost, final, request_id))
        c.execute("UPDATE channels SET settled=MAX(settled, ?), disputed=disputed+? WHERE address=?",
                  (settled, disputed, channel))
    return op


def mark_op(request_id: str, state: str) -> Op:
    return lambda c: c.execute("UPDATE requests SET state=? WHERE request_id=?", (state, request_id))


def receipt_op(*, request_id: str, channel: str, proxy_owner: str, endpoint: str, model: str, job_id: str,
               ok: bool, paid: int, prompt_tokens: int, completion_tokens: int, record: dict, verdict: dict) -> Op:
    t = time.time()

    def op(c: sqlite3.Connection) -> int:
        cur = c.execute(
            "INSERT INTO receipts(request_id, channel, proxy_owner, endpoint, model, job_id, ok, paid, prompt_tokens, "
            "completion_tokens, record, verdict, created_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (request_id, channel, proxy_owner, endpoint, model, job_id, int(ok), paid, prompt_tokens,
             completion_tokens, json.dumps(record), json.dumps(verdict), t))
        return int(cur.lastrowid)
    return op


def view_key(view: dict) -> tuple[str, str]:
    """(hash, JSON text) of a registry view record: receipts name the view they were checked against."""
    text = json.dumps(view, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest(), text


def _logged(ok: bool, res: Any) -> None:
    if not ok:
        log.error("a queued write failed: %s", res)


@dataclass
class ChannelRow:
    counter: int
    address: str
    proxy_owner: str
    payee_key: str
    endpoint: str
    state: str
    deposited: int
    settled: int
    signed_max: int
    disputed: int
    created_at: float


@dataclass
class ReceiptRow:
    id: int
    request_id: str
    channel: str
    proxy_owner: str
    endpoint: str
    model: str
    job_id: str
    ok: bool
    paid: int
    prompt_tokens: int
    completion_tokens: int
    record: dict
    verdict: dict
    created_at: float


class Store:
    def __init__(self, path: Path):
        self.path = path
        self.gc = GroupCommit(path, SCHEMA, name="client-store-writer")
        self.db = self.gc.reader     # reads; every write goes through the writer
        for table, column, kind in ADDED_COLUMNS:
            if column not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                self.do(lambda c, t=table, col=column, k=kind: c.execute(f"ALTER TABLE {t} ADD COLUMN {col} {k}"))

    def close(self) -> None:
        self.gc.close()

    # ------------------------------------------------------------------ running writes
    def do(self, op: Op) -> Any:
        """Run one write and wait until it is committed (start-up, commands, rare changes)."""
        return self.gc.run_sync(op)

    def submit(self, op: Op) -> None:
        """Queue a write nothing waits for and whose loss costs nothing (a request's mark): a lazy
        write, committed with the next group or on its own within :data:`node.durable.LAZY_WITHIN`
        seconds."""
        self.gc.submit_lazy(op, _logged)

    def behind(self, op: Op) -> asyncio.Future:
        """Queue a write to the writer thread now, never on this thread (the caller goes on while the
        disk syncs); the future is done when it is durable. :meth:`caught_up` waits for all of them."""
        return self.gc.behind(op)

    async def caught_up(self) -> None:
        """Until every write queued by :meth:`behind` so far is durable (what status reads wait for)."""
        await self.gc.caught_up()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> Optional[str]:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.do(lambda c: c.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET "
                                    "value=excluded.value", (key, value)))

    # ------------------------------------------------------------------ channels
    def _channel(self, row) -> Optional[ChannelRow]:
        return ChannelRow(*row) if row else None

    def channels(self) -> list[ChannelRow]:
        return [ChannelRow(*r) for r in self.db.execute("SELECT * FROM channels ORDER BY counter")]

    def channel(self, address: str) -> Optional[ChannelRow]:
        return self._channel(self.db.execute("SELECT * FROM channels WHERE address=?", (address,)).fetchone())

    def live_channel(self, proxy_owner: Optional[str] = None) -> Optional[ChannelRow]:
        """The newest channel that is not closed (to ``proxy_owner`` if given)."""
        q = "SELECT * FROM channels WHERE state != 'closed'"
        args: tuple = ()
        if proxy_owner is not None:
            q += " AND proxy_owner=?"
            args = (proxy_owner,)
        return self._channel(self.db.execute(q + " ORDER BY counter DESC LIMIT 1", args).fetchone())

    def next_counter(self) -> int:
        row = self.db.execute("SELECT MAX(counter) FROM channels").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def add_channel(self, counter: int, address: str, proxy_owner: str, payee_key: str, endpoint: str) -> ChannelRow:
        t = time.time()
        self.do(lambda c: c.execute("INSERT OR IGNORE INTO channels(counter, address, proxy_owner, payee_key, endpoint, "
                                    "state, created_at) VALUES(?, ?, ?, ?, ?, 'open', ?)",
                                    (counter, address, proxy_owner, payee_key, endpoint, t)))
        return self.channel(address)  # type: ignore[return-value]

    def update_channel(self, address: str, **fields) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        self.do(lambda c: c.execute(f"UPDATE channels SET {cols} WHERE address=?", (*fields.values(), address)))

    def spent_total(self, besides: Optional[str] = None) -> int:
        """What every channel's settled totals add up to: the money the budget has paid (on the
        channels other than ``besides`` if given)."""
        row = self.db.execute("SELECT COALESCE(SUM(settled), 0) FROM channels WHERE address IS NOT ?",
                              (besides,)).fetchone()
        return int(row[0])

    def channel_state(self, address: str) -> Optional[str]:
        row = self.db.execute("SELECT state FROM channels WHERE address=?", (address,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ requests
    def authorize(self, request_id: str, channel: str, settled_before: int, max_cost: int, voucher: int) -> None:
        self.do(authorize_op(request_id, channel, settled_before, max_cost, voucher))

    def request(self, request_id: str) -> Optional[tuple]:
        return self.db.execute("SELECT request_id, channel, settled_before, max_cost, state, cost, final FROM requests "
                               "WHERE request_id=?", (request_id,)).fetchone()

    def unfinished(self, channel: str) -> list[tuple]:
        """(request id, endpoint, model, stream, request hash, max cost) of the requests authorized on
        ``channel`` whose answer has no row: what a crash cut off; oldest first."""
        return list(self.db.execute("SELECT request_id, endpoint, model, stream, request_hash, max_cost FROM requests "
                                    "WHERE channel=? AND state='authorized' AND request_hash IS NOT NULL "
                                    "ORDER BY created_at", (channel,)))

    def settling(self, channel: str) -> list[tuple[str, int]]:
        """(request id, final amount) of settles signed but not acknowledged by the proxy, oldest first."""
        return list(self.db.execute("SELECT request_id, final FROM requests WHERE channel=? AND state='settling' "
                                    "ORDER BY created_at", (channel,)))

    def finish_request(self, request_id: str, state: str, cost: int, channel: str, settled: int,
                       final: Optional[int] = None, disputed: int = 0, receipt: Optional[dict] = None) -> None:
        self.do(finish_op(request_id, state, cost, channel, settled, final, disputed, receipt))

    def mark_request(self, request_id: str, state: str) -> None:
        self.do(mark_op(request_id, state))

    def request_counts(self) -> dict[str, int]:
        return {s: n for s, n in self.db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state")}

    # ------------------------------------------------------------------ registry views
    def put_view(self, view: dict) -> str:
        key = view_key(view)
        self.do(lambda c: c.execute("INSERT OR IGNORE INTO views(hash, json) VALUES(?, ?)", key))
        return key[0]

    def view(self, h: str) -> Optional[dict]:
        row = self.db.execute("SELECT json FROM views WHERE hash=?", (h,)).fetchone()
        return json.loads(row[0]) if row else None

    def export(self, r: "ReceiptRow") -> dict:
        """A receipt as the self-contained file ``cocoon receipt verify`` reads."""
        out = dict(r.record)
        h = out.pop("registry_view", None)
        if h:
            out["registry"] = self.view(h)
        out.update({"id": r.id, "model": r.model, "endpoint": r.endpoint, "channel": r.channel,
                    "proxy_owner": r.proxy_owner, "paid": r.paid, "verified": r.ok, "verdict": r.verdict})
        return out

    # ------------------------------------------------------------------ receipts
    def add_receipt(self, **receipt) -> int:
        return self.do(receipt_op(**receipt))

    def _receipt(self, r) -> ReceiptRow:
        return ReceiptRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9], r[10],
                          json.loads(r[11]), json.loads(r[12]), r[13])

    def receipts(self, limit: Optional[int] = None) -> Iterator[ReceiptRow]:
        q = "SELECT * FROM receipts ORDER BY id"
        if limit is not None:
            q = f"SELECT * FROM (SELECT * FROM receipts ORDER BY id DESC LIMIT {int(limit)}) ORDER BY id"
        for r in self.db.execute(q):
            yield self._receipt(r)

    def receipt(self, key: str) -> Optional[ReceiptRow]:
        """By number, request id or job id (a prefix of at least 8 hex digits)."""
        row = None
        if key.isdigit():
            row = self.db.execute("SELECT * FROM receipts WHERE id=?", (int(key),)).fetchone()
        if row is None:
            row = self.db.execute("SELECT * FROM receipts WHERE request_id=? ORDER BY id DESC LIMIT 1", (key,)).fetchone()
        if row is None and len(key) >= 8:
            row = self.db.execute("SELECT * FROM receipts WHERE job_id LIKE ? ORDER BY id DESC LIMIT 1",
                                  (key.lower() + "%",)).fetchone()
        return self._receipt(row) if row else None

    def receipt_stats(self) -> dict[str, int]:
        r = self.db.execute("SELECT COUNT(*), COALESCE(SUM(ok), 0), COALESCE(SUM(prompt_tokens), 0), "
                            "COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(paid), 0) FROM receipts").fetchone()
        return {"receipts": r[0], "verified": r[1], "failed": r[0] - r[1], "prompt_tokens": r[2],
                "completion_tokens": r[3], "paid": r[4]}

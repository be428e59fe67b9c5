"""The gateway's state in SQLite (WAL, synchronous=FULL): channels, the totals signed, requests and
receipts. Every voucher is recorded here before it leaves the process (docs/PROTOCOL.md §6), so a
``kill -9`` never loses a signature the proxy may hold.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

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
    cost        INTEGER,                      -- what was paid (settled state)
    final       INTEGER,                      -- the settle voucher's amount (settling, settled)
    created_at  REAL NOT NULL
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
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> Optional[str]:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, value))

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
        self.db.execute("INSERT OR IGNORE INTO channels(counter, address, proxy_owner, payee_key, endpoint, state, "
                        "created_at) VALUES(?, ?, ?, ?, ?, 'open', ?)",
                        (counter, address, proxy_owner, payee_key, endpoint, time.time()))
        return self.channel(address)  # type: ignore[return-value]

    def update_channel(self, address: str, **fields) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE channels SET {cols} WHERE address=?", (*fields.values(), address))

    def spent_total(self) -> int:
        """What every channel's settled totals add up to: the money the budget has paid."""
        row = self.db.execute("SELECT COALESCE(SUM(settled), 0) FROM channels").fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ requests
    def _marks(self, marks: Optional[list]) -> None:
        while marks:
            request_id, state = marks.pop()
            self.db.execute("UPDATE requests SET state=? WHERE request_id=?", (state, request_id))

    def authorize(self, request_id: str, channel: str, settled_before: int, max_cost: int, voucher: int,
                  marks: Optional[list] = None) -> None:
        """Record a request's authorization (the voucher's amount) before the voucher is sent. ``marks``
        are (request id, state) changes that need no commit of their own (a settle the proxy took)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._marks(marks)
            self.db.execute("INSERT INTO requests(request_id, channel, settled_before, max_cost, state, created_at) "
                            "VALUES(?, ?, ?, ?, 'authorized', ?)",
                            (request_id, channel, settled_before, max_cost, time.time()))
            self.db.execute("UPDATE channels SET signed_max=MAX(signed_max, ?) WHERE address=?", (voucher, channel))

    def request(self, request_id: str) -> Optional[tuple]:
        return self.db.execute("SELECT request_id, channel, settled_before, max_cost, state, cost, final FROM requests "
                               "WHERE request_id=?", (request_id,)).fetchone()

    def settling(self, channel: str) -> list[tuple[str, int]]:
        """(request id, final amount) of settles signed but not acknowledged by the proxy, oldest first."""
        return list(self.db.execute("SELECT request_id, final FROM requests WHERE channel=? AND state='settling' "
                                    "ORDER BY created_at", (channel,)))

    def finish_request(self, request_id: str, state: str, cost: int, channel: str, settled: int,
                       final: Optional[int] = None, disputed: int = 0, receipt: Optional[dict] = None,
                       marks: Optional[list] = None) -> None:
        """After the answer, in one transaction: the request's state and cost, the channel's settled
        total (what this gateway agreed to pay), any disputed amount and the receipt (the
        keyword arguments of :meth:`add_receipt`)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._marks(marks)
            if receipt is not None:
                self.add_receipt(**receipt)
            self.db.execute("UPDATE requests SET state=?, cost=?, final=? WHERE request_id=?",
                            (state, cost, final, request_id))
            self.db.execute("UPDATE channels SET settled=MAX(settled, ?), disputed=disputed+? WHERE address=?",
                            (settled, disputed, channel))

    def mark_request(self, request_id: str, state: str) -> None:
        self.db.execute("UPDATE requests SET state=? WHERE request_id=?", (state, request_id))

    def flush_marks(self, marks: list) -> None:
        if marks:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self._marks(marks)

    def request_counts(self) -> dict[str, int]:
        return {s: n for s, n in self.db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state")}

    # ------------------------------------------------------------------ registry views
    def put_view(self, view: dict) -> str:
        import hashlib

        text = json.dumps(view, sort_keys=True, separators=(",", ":"))
        h = hashlib.sha256(text.encode()).hexdigest()
        self.db.execute("INSERT OR IGNORE INTO views(hash, json) VALUES(?, ?)", (h, text))
        return h

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
    def add_receipt(self, *, request_id: str, channel: str, proxy_owner: str, endpoint: str, model: str,
                    job_id: str, ok: bool, paid: int, prompt_tokens: int, completion_tokens: int,
                    record: dict, verdict: dict) -> int:
        cur = self.db.execute(
            "INSERT INTO receipts(request_id, channel, proxy_owner, endpoint, model, job_id, ok, paid, prompt_tokens, "
            "completion_tokens, record, verdict, created_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (request_id, channel, proxy_owner, endpoint, model, job_id, int(ok), paid, prompt_tokens,
             completion_tokens, json.dumps(record), json.dumps(verdict), time.time()))
        return int(cur.lastrowid)

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

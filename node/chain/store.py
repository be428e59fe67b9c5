"""The chain server's durable state: SQLite in the state folder (WAL, ``synchronous=FULL``).

* ``log``: every input that changed the chain (an external message, a faucet payment, a time step),
  in the order it was applied. An input is acknowledged only after its row is committed, so a
  ``kill -9`` loses nothing acknowledged.
* ``accounts`` + ``checkpoint``: the accounts as of log entry ``checkpoint.seq``, written
  incrementally (only the accounts that changed) every few seconds. A restart loads the checkpoint
  and re-applies the log after it; the emulator is deterministic, so the replay gives the same
  transactions.
* ``txs``: every transaction (its BoC) with what toncenter's lookups need: the account and logical
  time, the external message that started its trace, the sender and creation time of its inbound
  message, and the transaction that sent it.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, data BLOB, amount TEXT);
CREATE TABLE IF NOT EXISTS checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,
    now INTEGER NOT NULL, lt INTEGER NOT NULL, minted TEXT NOT NULL, fees TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (addr TEXT PRIMARY KEY, boc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txs (hash BLOB PRIMARY KEY, account TEXT NOT NULL, lt INTEGER NOT NULL,
    utime INTEGER NOT NULL, boc BLOB NOT NULL, trace BLOB, in_src TEXT, in_lt INTEGER, parent BLOB,
    block INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS txs_account ON txs (account, lt);
CREATE INDEX IF NOT EXISTS txs_trace ON txs (trace);
CREATE INDEX IF NOT EXISTS txs_in ON txs (account, in_src, in_lt);
"""
FORMAT = "1"


@dataclass
class Entry:
    """One input to the chain: ``kind`` is 'msg' (data = the message BoC), 'fund' (data = the
    address, amount = nanoTON) or 'advance' (amount = seconds)."""
    seq: int
    kind: str
    data: Optional[bytes] = None
    amount: int = 0


@dataclass
class TxRow:
    hash: bytes
    account: str
    lt: int
    utime: int
    boc: bytes
    trace: Optional[bytes]
    in_src: Optional[str]
    in_lt: Optional[int]
    parent: Optional[bytes]
    block: int


@dataclass
class Checkpoint:
    seq: int
    now: int
    lt: int
    minted: int
    fees: int
    accounts: dict  # addr -> BoC bytes (only the changed ones when writing)


class StoreError(Exception):
    pass


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class ChainStore:
    """One writer connection (used by one thread at a time) and one reader connection."""

    def __init__(self, folder: Path):
        import fcntl

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # one server per state folder: a second one would apply messages the first never sees
        self._lock = open(self.folder / "chain.lock", "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise StoreError(f"{self.folder} is in use by another chain server; stop it first or choose "
                             "another --state folder") from None
        self.path = self.folder / "chain.sqlite"
        self.db = _connect(self.path)
        self.db.executescript(SCHEMA)
        fmt = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if fmt is None:
            self.db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
        elif fmt[0] != FORMAT:
            raise StoreError(f"{self.path}: chain state format {fmt[0]}, this version reads {FORMAT}")
        self.read = _connect(self.path)

    # ------------------------------------------------------------------ loading
    def checkpoint(self) -> Optional[Checkpoint]:
        row = self.db.execute("SELECT seq, now, lt, minted, fees FROM checkpoint WHERE id = 1").fetchone()
        if row is None:
            return None
        accounts = dict(self.db.execute("SELECT addr, boc FROM accounts"))
        return Checkpoint(row[0], row[1], row[2], int(row[3]), int(row[4]), accounts)

    def entries_after(self, seq: int) -> Iterable[Entry]:
        for s, kind, data, amount in self.db.execute(
                "SELECT seq, kind, data, amount FROM log WHERE seq > ? ORDER BY seq", (seq,)):
            yield Entry(s, kind, data, int(amount or 0))

    def last_seq(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0]

    # ------------------------------------------------------------------ writing (one transaction, one fsync)
    def commit(self, entries: list[Entry], rows: list[TxRow], ck: Optional[Checkpoint] = None) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO log (seq, kind, data, amount) VALUES (?, ?, ?, ?)",
                           [(e.seq, e.kind, e.data, str(e.amount)) for e in entries])
            db.executemany("INSERT OR IGNORE INTO txs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(r.hash, r.account, r.lt, r.utime, r.boc, r.trace, r.in_src, r.in_lt, r.parent, r.block)
                            for r in rows])
            if ck is not None:
                db.executemany("INSERT OR REPLACE INTO accounts VALUES (?, ?)", list(ck.accounts.items()))
                db.execute("INSERT OR REPLACE INTO checkpoint VALUES (1, ?, ?, ?, ?, ?)",
                           (ck.seq, ck.now, ck.lt, str(ck.minted), str(ck.fees)))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ reading transactions
    def transactions(self, account: str, limit: int, lt: Optional[int] = None, hash_: Optional[bytes] = None,
                     to_lt: int = 0) -> list[tuple[str, bytes]]:
        """Newest first, starting at (lt, hash) inclusive when given, down to ``to_lt`` exclusive."""
        q = "SELECT account, boc FROM txs WHERE account = ? AND lt > ?"
        args: list = [account, to_lt]
        if lt is not None:
            q += " AND lt <= ?"
            args.append(lt)
        q += " ORDER BY lt DESC LIMIT ?"
        args.append(limit)
        rows = self.read.execute(q, args).fetchall()
        if hash_ is not None and lt is not None:
            first = self.read.execute("SELECT 1 FROM txs WHERE account = ? AND lt = ? AND hash = ?",
                                      (account, lt, hash_)).fetchone()
            if first is None:
                return []
        return rows

    def last_transaction(self, account: str) -> Optional[tuple[int, bytes]]:
        return self.read.execute("SELECT lt, hash FROM txs WHERE account = ? ORDER BY lt DESC LIMIT 1",
                                 (account,)).fetchone()

    def trace(self, msg_hash: bytes) -> list[tuple[str, bytes]]:
        return self.read.execute("SELECT account, boc FROM txs WHERE trace = ? ORDER BY lt", (msg_hash,)).fetchall()

    def result_tx(self, src: str, dest: str, created_lt: int) -> Optional[tuple[str, bytes, Optional[bytes]]]:
        return self.read.execute("SELECT account, boc, parent FROM txs WHERE account = ? AND in_src = ? AND in_lt = ?",
                                 (dest, src, created_lt)).fetchone()

    def tx_by_hash(self, h: bytes) -> Optional[tuple[str, bytes]]:
        return self.read.execute("SELECT account, boc FROM txs WHERE hash = ?", (h,)).fetchone()

    def close(self) -> None:
        self.read.close()
        self.db.close()
        self._lock.close()

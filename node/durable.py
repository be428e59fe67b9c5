"""Durable state in SQLite for the services: one writer thread with group commit.

Why: a service must not acknowledge money or a receipt before it is on disk (docs/PROTOCOL.md §6:
WAL, synchronous=FULL), but an fsync costs milliseconds and an event loop that waits for one per
request serves a few hundred requests a second at best. So every write is a function ``op(db)``
handed to :class:`GroupCommit`, whose one thread takes every operation queued, runs each in its own
savepoint (an operation that raises changes nothing, the others stand), commits once (one fsync for
the whole batch) and only then releases each caller: the callers of one batch share one fsync, and
the event loop never blocks on the disk. Reads use a second connection (WAL readers never wait for
the writer).

An awaited write that arrives in a quiet moment (nothing queued, no batch begun in the last
INLINE_GAP seconds) and on a fast disk (a COMMIT under INLINE_MAX on average) is committed on the
caller's own thread instead: the event loop waits for the sync either way, and the hand-over to the
writer and back costs two thread switches, each a wake-up of an idle core (about a millisecond per
request through the whole network on a 2-core virtual machine). Under load writes arrive closer
together than that and share the writer's batches.

A write the caller needs durable later but not now (the gateway's authorization row, which commits
while the proxy answers) is :meth:`GroupCommit.behind`: the writer thread commits it while the event
loop goes on.

Writes nothing waits for (a receipt marked as sent, a voucher kept, the worker's row of a receipt it
sent) are :meth:`GroupCommit.submit_lazy`: they ride with the next batch committed anyway, and are
committed on their own only after LAZY_WITHIN seconds without one, so a service serving one request
at a time syncs once per request, not once per write. :meth:`GroupCommit.lazy` is the same with a
future, for a write something follows once it is durable but need not follow at once (the proxy's
signature of a worker's pay, sent when kept).

Used by the proxy's ledger (node/proxy/ledger.py), the worker's store (node/worker/store.py) and the
client gateway's store.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

Op = Callable[[sqlite3.Connection], Any]
Done = Callable[[bool, Any], None]
LAZY_WITHIN = 0.25      # seconds a lazy write may wait for a batch to ride with
INLINE_GAP = 0.003      # seconds since the latest batch began after which an awaited write commits inline
INLINE_MAX = 0.002      # ... if a COMMIT takes less than this (a slow disk never blocks the event loop)
_LAZY = object()        # what the writer's wait returns when nothing came: time to look at lazy writes


def connect(path: Path | str, readonly: bool = False, rows: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL; ``rows``:
    rows as :class:`sqlite3.Row`."""
    if readonly:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA busy_timeout=5000")
    if rows:
        con.row_factory = sqlite3.Row
    return con


class GroupCommit:
    """The database at ``path`` (created with ``schema``), written by one thread with group commit.
    ``await run(op)`` returns ``op(db)``'s result once it is committed and synced (or raises what
    ``op`` raised, having changed nothing); ``read(fn)`` runs ``fn(reader)`` on the read connection."""

    def __init__(self, path: Path | str, schema: str = "", *, name: str = "durable-writer", rows: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = connect(self.path, rows=rows)
        if schema:
            self.db.executescript(schema)
        self.reader = connect(self.path, rows=rows)
        self._rlock = threading.Lock()
        self.commits = 0                   # batches committed (each one fsync)
        self._closed = False
        self._behind: set[asyncio.Future] = set()   # futures of behind() writes not yet durable
        self._q: "queue.SimpleQueue[Optional[tuple[Op, Optional[Done]]]]" = queue.SimpleQueue()
        self._lazy: list[tuple[Op, Optional[Done]]] = []
        self._lazy_due: Optional[float] = None
        self._lazy_lock = threading.Lock()
        self._wlock = threading.Lock()     # held while a batch commits, by the writer or inline
        self._last_start = float("-inf")   # when the latest batch began (time.monotonic)
        self.commit_seconds = 0.0          # a moving average of one COMMIT (the disk's sync)
        self._thread = threading.Thread(target=self._writer, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the writer thread
    def _next(self):
        """The next queued item, or _LAZY after LAZY_WITHIN seconds without one (the writer then
        looks whether lazy writes are due: a lazy write never wakes it)."""
        with self._lazy_lock:
            due = self._lazy_due
        wait = LAZY_WITHIN if due is None else min(LAZY_WITHIN, max(0.0, due - time.monotonic()))
        try:
            return self._q.get(timeout=wait)
        except queue.Empty:
            return _LAZY

    def _take_lazy(self) -> list:
        with self._lazy_lock:
            lazy, self._lazy, self._lazy_due = self._lazy, [], None
        return lazy

    def _writer(self) -> None:
        while True:
            first = self._next()
            if first is _LAZY:
                with self._lazy_lock:
                    due = self._lazy_due
                if due is None or due > time.monotonic():
                    continue              # none, or not due yet: wait for a batch to ride with
            batch, stop = ([] if first is None or first is _LAZY else [first]), first is None
            while not stop:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:           # close(): what was queued before it is committed first
                    stop = True
                    break
                batch.append(nxt)
            with self._wlock:
                batch = self._take_lazy() + batch
                results = self._commit(batch) if batch else []
            for (_op, done), (ok, res) in zip(batch, results):
                if done is not None:
                    done(ok, res)
            if stop:
                return

    def _commit(self, batch: list) -> list[tuple[bool, Any]]:
        """Run ``batch`` in one transaction, each operation in its own savepoint (unless it is alone),
        and commit (the caller holds ``_wlock``); (ok, result or exception) per operation."""
        db = self.db
        results: list[tuple[bool, Any]] = []
        self._last_start = time.monotonic()
        try:
            db.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:   # alone, an operation needs no savepoint: if it raises, nothing is committed
                try:
                    results.append((True, batch[0][0](db)))
                except BaseException as e:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    return [(False, e)]
            else:
                for i, (op, _done) in enumerate(batch):
                    db.execute(f"SAVEPOINT s{i}")
                    try:
                        results.append((True, op(db)))
                        db.execute(f"RELEASE s{i}")
                    except BaseException as e:   # this operation changes nothing; the others stand
                        db.execute(f"ROLLBACK TO s{i}")
                        db.execute(f"RELEASE s{i}")
                        results.append((False, e))
            t = time.perf_counter()
            db.execute("COMMIT")
            took = time.perf_counter() - t
            self.commit_seconds = took if self.commits == 0 else 0.8 * self.commit_seconds + 0.2 * took
            self.commits += 1
        except BaseException as e:            # the commit failed: nothing of the batch is stored
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            results = [(False, e)] * len(batch)
        return results

    def submit_lazy(self, op: Op, done: Optional[Done] = None) -> None:
        """Queue ``op`` to be committed with the next batch, and alone after LAZY_WITHIN seconds (at
        most twice that) if no batch comes. For writes nothing waits for and whose loss in a crash
        costs nothing but a repeat; a lazy write runs before the other writes of its batch, so it must
        not depend on them."""
        if self._closed:
            raise RuntimeError("the database is closed")
        with self._lazy_lock:
            self._lazy.append((op, done))
            if self._lazy_due is None:
                self._lazy_due = time.monotonic() + LAZY_WITHIN

    def lazy(self, op: Op) -> asyncio.Future:
        """:meth:`submit_lazy` with an asyncio future, done with the operation's result once it is
        durable (for a write something must follow, but not at once: a signed pay, sent once kept)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.submit_lazy(op, _resolver(loop, fut))
        return fut

    # ------------------------------------------------------------------ callers
    def submit(self, op: Op, done: Optional[Done] = None) -> None:
        """Queue ``op``; ``done(ok, result_or_exception)`` is called in the writer thread after the
        commit (keep it short: the next batch waits for it)."""
        if self._closed:
            raise RuntimeError("the database is closed")
        self._q.put((op, done))

    def inline(self, op: Op) -> Optional[tuple[bool, Any]]:
        """In a quiet moment on a fast disk (see the module's docstring), ``op`` committed on this
        thread, with the lazy writes queued before it: (ok, result or exception). None otherwise:
        then queue it."""
        if self._closed:
            raise RuntimeError("the database is closed")
        if not (self._q.empty() and time.monotonic() - self._last_start > INLINE_GAP
                and self.commit_seconds < INLINE_MAX and self._wlock.acquire(blocking=False)):
            return None
        try:
            batch = self._take_lazy() + [(op, None)]
            results = self._commit(batch)
        finally:
            self._wlock.release()
        for (_op, done), (ok, res) in zip(batch, results):
            if done is not None:
                done(ok, res)
        return results[-1]

    async def run(self, op: Op) -> Any:
        out = self.inline(op)
        if out is not None:
            ok, res = out
            if not ok:
                raise res
            return res
        return await self.behind(op)

    def behind(self, op: Op) -> asyncio.Future:
        """Queue ``op`` to the writer thread, never committed on this thread: the caller goes on while
        the disk syncs (a write the event loop needs durable later, not now). An asyncio future, done
        with the operation's result when it is durable. :meth:`caught_up` waits for all of them."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._behind.add(fut)
        fut.add_done_callback(self._behind.discard)
        self.submit(op, _resolver(loop, fut))
        return fut

    async def caught_up(self) -> None:
        """Until every write queued by :meth:`behind` so far is durable (or failed)."""
        if self._behind:
            await asyncio.gather(*self._behind, return_exceptions=True)

    def run_sync(self, op: Op) -> Any:
        """:meth:`run` from a thread without an event loop (start-up, status commands, tests)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.submit(op, lambda ok, res: fut.set_result(res) if ok else fut.set_exception(res))
        return fut.result()

    def read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._rlock:
            return fn(self.reader)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close both connections."""
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        self._thread.join(timeout=30)
        self.db.close()
        self.reader.close()


def _resolver(loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> Done:
    """A ``done`` callback (run in whichever thread commits) that settles ``fut`` on its loop."""
    def done(ok: bool, res: Any) -> None:
        try:
            loop.call_soon_threadsafe(_resolve, fut, ok, res)
        except RuntimeError:   # the loop has closed: nobody is waiting any more
            pass
    return done


def _resolve(fut: asyncio.Future, ok: bool, res: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(res)
    else:
        fut.set_exception(res)

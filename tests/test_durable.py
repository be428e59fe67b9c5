"""node/durable.py, the group-commit writer the proxy's ledger and the worker's store share: many
callers share one commit, an operation that raises changes nothing while the rest of its batch
stands, close() commits what was queued, and what run() returned is on disk for a new connection."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from node.durable import GroupCommit

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);"


def _insert(k: int, v: str):
    return lambda db: db.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, v)).lastrowid


def test_callers_share_commits_and_a_failed_op_changes_nothing(tmp_path):
    gc = GroupCommit(tmp_path / "d.sqlite", SCHEMA)
    gate = threading.Event()
    gc.submit(lambda db: gate.wait(10))           # holds the writer so the next ones queue up

    async def main():
        tasks = [asyncio.create_task(gc.run(_insert(k, f"v{k}"))) for k in range(50)]
        tasks.append(asyncio.create_task(gc.run(_insert(7, "dup"))))     # primary key taken: fails
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        res = asyncio.run(main())
        assert res[:50] == list(range(50)) and isinstance(res[50], sqlite3.IntegrityError)
        assert gc.commits <= 3          # the holder's batch, then the 51 together (at most split once)
        assert gc.read(lambda c: c.execute("SELECT COUNT(*), MAX(v) FROM t WHERE k=7").fetchone()) == (1, "v7")
        with pytest.raises(ZeroDivisionError):
            gc.run_sync(lambda db: (db.execute("INSERT INTO t VALUES (100, 'x')"), 1 / 0))
        assert gc.read(lambda c: c.execute("SELECT COUNT(*) FROM t WHERE k=100").fetchone()[0]) == 0
        # alone in a quiet moment (committed on the caller's thread): the same, and the next write stands
        time.sleep(0.01)
        with pytest.raises(ZeroDivisionError):
            asyncio.run(gc.run(lambda db: (db.execute("INSERT INTO t VALUES (101, 'x')"), 1 / 0)))
        assert asyncio.run(gc.run(_insert(102, "y"))) == 102
        assert gc.read(lambda c: c.execute("SELECT k FROM t WHERE k>100").fetchall()) == [(102,)]
    finally:
        gc.close()


def test_close_commits_what_was_queued_and_it_is_on_disk(tmp_path):
    path = tmp_path / "d.sqlite"
    gc = GroupCommit(path, SCHEMA)
    done = []
    for k in range(20):
        gc.submit(_insert(k, "x"), lambda ok, res: done.append(ok))
    gc.close()
    assert done == [True] * 20
    with pytest.raises(RuntimeError):
        gc.submit(_insert(99, "late"))
    con = sqlite3.connect(path)
    assert con.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 20
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_lazy_writes_ride_with_the_next_batch_or_commit_alone_when_due(tmp_path, monkeypatch):
    import node.durable as D

    monkeypatch.setattr(D, "LAZY_WITHIN", 0.3)
    path = tmp_path / "d.sqlite"
    gc = GroupCommit(path, SCHEMA)
    try:
        gc.submit_lazy(_insert(1, "lazy"))
        gc.submit_lazy(_insert(2, "lazy"))
        assert gc.run_sync(_insert(3, "now")) == 3      # one batch: the two lazy writes ride with it
        assert gc.commits == 1
        assert gc.read(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 3
        done = threading.Event()
        gc.submit_lazy(_insert(4, "alone"), lambda ok, res: done.set())
        assert not done.wait(0.1), "a lazy write waits for a batch to ride with"
        assert gc.read(lambda c: c.execute("SELECT COUNT(*) FROM t WHERE k=4").fetchone()[0]) == 0
        assert done.wait(5), "and is committed on its own once due"
        assert gc.commits == 2
        gc.submit_lazy(_insert(5, "at close"))
    finally:
        gc.close()                                      # a lazy write still queued is committed by close()
    con = sqlite3.connect(path)
    assert [r[0] for r in con.execute("SELECT k FROM t ORDER BY k")] == [1, 2, 3, 4, 5]
    con.close()


def test_a_write_in_a_quiet_moment_commits_inline_and_a_slow_disk_keeps_it_in_the_writer(tmp_path, monkeypatch):
    import time

    import node.durable as D

    gc = GroupCommit(tmp_path / "d.sqlite", SCHEMA)
    where = []

    def op(k: int, fail: bool = False):
        def run(db):
            where.append(threading.current_thread() is threading.main_thread())
            db.execute("INSERT INTO t (k, v) VALUES (?, 'x')", (k,))
            if fail:
                raise ValueError("refused")
            return k
        return run

    async def main():
        gc.submit_lazy(_insert(1, "lazy"))
        assert await gc.run(op(2)) == 2                 # quiet: committed here, the lazy write with it
        assert gc.read(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 2
        time.sleep(D.INLINE_GAP * 2)
        gc.commit_seconds = 0.0     # a fast disk, whatever the first commit took on a busy machine
        with pytest.raises(ValueError):
            await gc.run(op(3, fail=True))              # inline too, and it changes nothing
        time.sleep(D.INLINE_GAP * 2)
        gc.commit_seconds = D.INLINE_MAX * 2            # a slow disk: the writer thread commits
        assert await gc.run(op(4)) == 4
        await gc.run(op(5))                             # and writes close together share its batches

    try:
        asyncio.run(main())
        assert where[:2] == [True, True] and where[2:] == [False, False]
        assert gc.read(lambda c: [r[0] for r in c.execute("SELECT k FROM t ORDER BY k")]) == [1, 2, 4, 5]
    finally:
        gc.close()

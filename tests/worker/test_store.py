"""The worker's store on its own (a real SQLite file): what keeps a job id to one receipt for ever."""
from __future__ import annotations

import asyncio
import sqlite3

from node.payments.pricing import Usage
from node.worker.store import Store


def test_a_job_id_is_started_once_and_its_receipt_takes_the_marks_place(tmp_path):
    """The first start of a job id is durable and says so; a second start, before or after the
    receipt's row, says no (no second receipt may follow). A sent receipt is readable and counted at
    once; its row is a lazy write that rides with the next commit (here the next job's mark) and
    replaces the mark in one transaction, and all of it survives reopening."""
    path = tmp_path / "worker.sqlite"
    s = Store(path)

    async def main():
        first, again = s.begin_job("a" * 64), s.begin_job("a" * 64)
        assert await first is True and await again is False
        assert s.started("a" * 64)
        commits = s.commits
        written = s.keep_receipt("a" * 64, "0:" + "c" * 64, "chat", b"\x01" * 32, b"\x02" * 32, Usage(5, 3), 1000,
                                 77, 200, False, b"boc", sent=True)
        assert written is None and s.commits == commits      # lazy: nothing synced for it yet
        assert s.receipt("a" * 64).receipt == b"boc" and s.earned("0:" + "c" * 64) == 77   # before the commit
        assert await s.begin_job("a" * 64) is False         # it may not start again
        assert s.commits == commits + 1                      # one commit took the receipt's row with the mark
        assert not s.started("a" * 64)                      # the receipt's row records it now
        assert await s.begin_job("b" * 64) is True

    asyncio.run(main())
    s.close()
    db = sqlite3.connect(str(path))
    assert db.execute("SELECT job_id FROM jobs").fetchall() == [("b" * 64,)]
    assert db.execute("SELECT fee, sent IS NOT NULL FROM receipts").fetchall() == [(77, 1)]
    db.close()
    s = Store(path)
    assert s.earned() == 77 and s.started("b" * 64) and s.unsent() == []
    s.close()


def test_a_receipt_the_link_could_not_send_is_kept_unsent(tmp_path):
    s = Store(tmp_path / "worker.sqlite")

    async def main():
        assert await s.begin_job("d" * 64)
        await s.keep_receipt("d" * 64, "", "completion", bytes(32), bytes(32), Usage(1, 1), 1000, 0, 200, True,
                             b"cut", sent=False)

    asyncio.run(main())
    assert [r.receipt for r in s.unsent()] == [b"cut"]
    s.close()


def test_the_mark_of_a_job_refused_before_it_ran_is_dropped_once_durable(tmp_path):
    """A job refused before it ran (a bad request, a full queue) signed no receipt: its mark, begun
    as the job arrived, is dropped by a lazy write queued only once the mark is durable, so the drop
    never runs before the mark it removes. Then the id may start again, and so after reopening."""
    path = tmp_path / "worker.sqlite"
    s = Store(path)

    async def main():
        mark = s.begin_job("e" * 64)
        s.drop_start("e" * 64, mark)
        assert await mark is True
        await asyncio.sleep(0)               # the drop is queued as the mark's future completes
        assert s.started("e" * 64)            # lazy: still there until a commit takes it
        assert await s.begin_job("f" * 64) is True      # this commit carries the drop
        assert not s.started("e" * 64)
        s.drop_start("f" * 64, s.begin_job("f" * 64))   # a mark refused as a repeat drops nothing
        assert await s.begin_job("g" * 64) is True
        assert s.started("f" * 64)

    asyncio.run(main())
    s.close()
    s = Store(path)
    assert not s.started("e" * 64) and s.started("f" * 64)

    async def again():
        assert await s.begin_job("e" * 64) is True

    asyncio.run(again())
    s.close()

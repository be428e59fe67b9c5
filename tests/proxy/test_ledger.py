"""The ledger alone (SQLite in a temporary folder): admission, reservations, records, pay, caps, recovery."""
from __future__ import annotations

import asyncio
import os

import pytest

from node.proxy.ledger import Conflict, Ledger, PaymentRequired, read_summary

CH = "0:" + "11" * 32
SIG = b"\x01" * 64


@pytest.fixture
def ledger(tmp_path):
    l = Ledger(tmp_path / "p.sqlite")
    yield l
    l.close()


def run(coro):
    return asyncio.run(coro)


async def admit(l, rid, voucher, max_cost, limit=None):
    return await l.admit(channel=CH, payer_key="0x1", voucher_amount=voucher, voucher_sig=SIG, request_id=rid,
                         job_id=os.urandom(32).hex(), max_cost=max_cost, model="m", endpoint="chat", stream=False,
                         limit=limit)


async def finish(l, job_id, cost, fee=0, worker="w", sign=None):
    return await l.complete(job_id, worker=worker, outcome="succeeded", usage={"prompt_tokens": 1}, coefficient=1000,
                            tokens=3, cost=cost, worker_fee=fee, receipt="r", http_status=200, response=b"{}",
                            latency_ms=5, sign_pay=sign)


def test_admission_covers_settled_in_flight_and_max_cost(ledger):
    async def go():
        a = await admit(ledger, "r1", 100, 100)
        with pytest.raises(PaymentRequired) as e:     # r1 is in flight: r2 needs 100 + 50
            await admit(ledger, "r2", 100, 50)
        assert (e.value.required, e.value.settled) == (150, 100)
        await admit(ledger, "r2", 150, 50)
        billed, _ = await finish(ledger, a.job_id, 30)
        assert billed == 30
        assert ledger.channel(CH).settled == 30 and ledger.reserved(CH) == 50
        with pytest.raises(PaymentRequired, match="top up"):
            await admit(ledger, "r3", 1000, 100, limit=150)
        assert ledger.channel(CH).voucher_amount == 1000   # a refused request's voucher is still kept
    run(go())


def test_a_request_id_is_answered_from_its_record(ledger):
    async def go():
        a = await admit(ledger, "r1", 100, 100)
        again = await admit(ledger, "r1", 100, 100)
        assert again.record is not None and again.record.status == "running" and again.job_id == a.job_id
        await finish(ledger, a.job_id, 40)
        rec = (await admit(ledger, "r1", 500, 100)).record
        assert rec.status == "done" and rec.response == b"{}"
        assert ledger.channel(CH).settled == 40          # billed once
        with pytest.raises(Conflict):
            await finish(ledger, a.job_id, 40)            # a job ends once
    run(go())


def test_cost_above_the_reservation_is_capped_and_pay_is_cumulative(ledger):
    async def go():
        await ledger.worker_connected("w", "ab", "m", 1000)
        await ledger.worker_channel("w", "0:" + "22" * 32)
        signed = []
        sign = lambda ch, amount: signed.append(amount) or bytes(64)  # noqa: E731
        a = await admit(ledger, "r1", 100, 100)
        billed, pay = await finish(ledger, a.job_id, 10**6, fee=7, sign=sign)
        assert billed == 100 and pay.cumulative == 7
        b = await admit(ledger, "r2", 300, 100)
        _, pay = await finish(ledger, b.job_id, 50, fee=5, sign=sign)
        assert pay.cumulative == 12 and signed == [7, 12]
        assert ledger.worker("w")["paid"] == 12
    run(go())


def test_settle_floor_and_caps(ledger):
    async def go():
        a = await admit(ledger, "r1", 100, 100)
        await finish(ledger, a.job_id, 30)
        with pytest.raises(Conflict):
            await ledger.settle(CH, "r1", 29, SIG)          # below what is owed
        with pytest.raises(Conflict):
            await ledger.settle(CH, "r1", 101, SIG)         # above what was authorized
        with pytest.raises(Conflict):
            await ledger.settle(CH, "nope", 30, SIG)
        row = await ledger.settle(CH, "r1", 30, SIG)
        assert row.voucher_amount == 30 == row.settled
        b = await admit(ledger, "r2", 130, 100)
        await finish(ledger, b.job_id, 20)
        assert await ledger.apply_caps(older_than=0) == []  # not yet late
        assert await ledger.apply_caps(older_than=1e12) == [(CH, 80)]
        row = ledger.channel(CH)
        assert (row.settled, row.capped) == (130, 80)
    run(go())


def test_an_authorization_for_a_request_never_answered_is_never_capped(ledger):
    async def go():
        a = await admit(ledger, "r1", 100, 100)
        await finish(ledger, a.job_id, 30)
        await ledger.settle(CH, "r1", 30, SIG)
        b = await admit(ledger, "r2", 130, 100)            # authorizes 30 + 100 ...
        await ledger.release(b.job_id, outcome="no_worker")  # ... but no worker ever answered it
        assert await ledger.apply_caps(older_than=1e12) == []
        row = ledger.channel(CH)
        assert (row.settled, row.capped, row.exact_amount) == (30, 0, 30)
        c = await admit(ledger, "r3", 230, 100)            # billed and never settled: held to the cap
        await finish(ledger, c.job_id, 10)
        assert await ledger.apply_caps(older_than=1e12) == [(CH, 190)]
    run(go())


def test_recover_aborts_running_jobs_and_frees_their_ids(ledger):
    async def go():
        await admit(ledger, "r1", 100, 100)
        assert (await ledger.recover())["aborted_jobs"] == 1
        assert ledger.reserved(CH) == 0 and ledger.request(CH, "r1") is None
        assert (await admit(ledger, "r1", 100, 100)).record is None
    run(go())


def test_group_commit_keeps_each_operation_atomic(ledger):
    async def go():
        # 40 concurrent admissions on one channel authorized for 10 requests of 10: exactly 10 pass
        res = await asyncio.gather(*(admit(ledger, f"r{i}", 100, 10) for i in range(40)), return_exceptions=True)
        ok = [r for r in res if not isinstance(r, Exception)]
        assert len(ok) == 10 and all(isinstance(r, PaymentRequired) for r in res if isinstance(r, Exception))
        assert ledger.reserved(CH) == 100
        assert ledger.commits < 40
    run(go())


def test_status_reads_the_file(ledger, tmp_path):
    async def go():
        a = await admit(ledger, "r1", 100, 100)
        await finish(ledger, a.job_id, 30)
    run(go())
    s = read_summary(tmp_path / "p.sqlite")
    assert (s["clients"], s["jobs"], s["billed"], s["owed"]) == (1, 1, 30, 30)


def test_pays_completed_in_one_group_commit_are_signed_once(ledger):
    """Five jobs of one worker ending in one commit: one signature, for the total after all five,
    stored on the last pay row and the worker's row, and the pay every caller gets back."""
    import sqlite3
    import threading

    async def go():
        await ledger.worker_connected("w", "ab", "m", 1000)
        await ledger.worker_channel("w", "0:" + "22" * 32)
        signed = []
        sign = lambda ch, amount: signed.append(amount) or amount.to_bytes(64, "big")  # noqa: E731
        jobs = [(await admit(ledger, f"r{i}", 1000, 100)).job_id for i in range(5)]
        await finish(ledger, jobs[0], 10, fee=1, sign=sign)           # an earlier commit: paid 1
        gate = threading.Event()
        ledger.submit(lambda db: gate.wait(10))                         # hold the writer: the rest queue up
        tasks = [asyncio.create_task(finish(ledger, j, 10, fee=2, sign=sign)) for j in jobs[1:]]
        tasks.append(asyncio.create_task(finish(ledger, jobs[1], 10, fee=2, sign=sign)))   # fails: already done
        await asyncio.sleep(0.05)
        gate.set()
        res = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(res[-1], Conflict)
        assert signed == [1, 9]
        for billed, pay in res[:-1]:
            assert billed == 10 and (pay.cumulative, pay.signature) == (9, (9).to_bytes(64, "big"))
        return jobs

    jobs = run(go())
    assert ledger.worker("w")["paid"] == 9 and ledger.worker("w")["pay_sig"] == (9).to_bytes(64, "big").hex()
    con = sqlite3.connect(ledger.path)
    rows = dict(con.execute("SELECT cumulative, signature FROM pay").fetchall())
    con.close()
    assert rows == {1: (1).to_bytes(64, "big").hex(), 3: "", 5: "", 7: "", 9: (9).to_bytes(64, "big").hex()}
    assert len(jobs) == 5

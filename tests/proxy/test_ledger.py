"""The ledger alone (SQLite in a temporary folder): admission, reservations, records, pay, caps, recovery."""
from __future__ import annotations

import asyncio
import base64
import os
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.proxy.ledger import Cert, Conflict, Ledger, PaymentRequired, read_summary

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


async def finish(l, job_id, cost, fee=0, worker="w", pay=False):
    return await l.complete(job_id, worker=worker, outcome="succeeded", usage={"prompt_tokens": 1}, coefficient=1000,
                            tokens=3, cost=cost, worker_fee=fee, receipt="r", http_status=200, response=b"{}",
                            latency_ms=5, pay_worker=pay)


def test_admission_covers_settled_in_flight_and_max_cost(ledger):
    async def go():
        a = await admit(ledger, "r1", 100, 100)
        with pytest.raises(PaymentRequired) as e:     # r1 is in flight: r2 needs 100 + 50
            await admit(ledger, "r2", 100, 50)
        assert (e.value.required, e.value.settled, e.value.in_flight) == (150, 0, 100)
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
        a = await admit(ledger, "r1", 100, 100)
        billed, pay = await finish(ledger, a.job_id, 10**6, fee=7, pay=True)
        assert billed == 100 and (pay.cumulative, pay.job_id) == (7, a.job_id)
        b = await admit(ledger, "r2", 300, 100)
        _, pay = await finish(ledger, b.job_id, 50, fee=5, pay=True)
        assert pay.cumulative == 12 and ledger.worker("w")["paid"] == 12
        assert ledger.worker("w")["pay_signed"] == 0 and ledger.pay_due("w").cumulative == 12   # owed, not signed
    run(go())


def test_settle_bounds_and_caps(ledger):
    async def go():
        a = await admit(ledger, "r1", 100, 100)
        await finish(ledger, a.job_id, 30)
        with pytest.raises(Conflict, match="billed"):
            await ledger.settle(CH, "r1", 31, SIG)          # above what was billed
        with pytest.raises(Conflict):
            await ledger.settle(CH, "nope", 30, SIG)
        row = await ledger.settle(CH, "r1", 30, SIG)
        assert row.exact_amount == 30 == row.settled and row.voucher_amount == 100   # the authorization stays
        with pytest.raises(Conflict, match="superseded"):
            await ledger.settle(CH, "r1", 29, SIG)          # below the exact total held: stale
        assert (await ledger.settle(CH, "r1", 30, SIG)).exact_amount == 30   # the same one again: taken
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


def test_a_pay_is_kept_with_the_next_commit_never_lowered_and_owed_until_signed(ledger, tmp_path):
    """A worker's pay is owed at each job's end and signed later (when it is sent): its signature is a
    lazy write that rides with the next commit, is kept only above the one held, and what is owed
    beyond it survives a restart; books from before the signed amount had a column gain it."""
    import sqlite3

    from node.proxy.ledger import PayDue

    async def go():
        await ledger.worker_connected("w", "ab", "m", 1000)
        await ledger.worker_channel("w", "0:" + "22" * 32)
        jobs = [(await admit(ledger, f"r{i}", 1000, 100)).job_id for i in range(3)]
        dues = [(await finish(ledger, j, 10, fee=f, pay=True))[1] for j, f in zip(jobs, (1, 2, 4))]
        assert [d.cumulative for d in dues] == [1, 3, 7]
        commits = ledger.commits
        kept = asyncio.create_task(ledger.store_pay(dues[1], (3).to_bytes(64, "big")))
        await asyncio.sleep(0.01)
        assert not kept.done() and ledger.commits == commits      # waits for a commit to ride with
        nxt = await admit(ledger, "r9", 1000, 100)                 # the next commit takes it along
        assert await kept is True and ledger.commits == commits + 1
        w = ledger.worker("w")
        assert (w["paid"], w["pay_signed"], w["pay_sig"]) == (7, 3, (3).to_bytes(64, "big").hex())
        assert ledger.pay_due("w") == PayDue("w", "0:" + "22" * 32, 7, None)
        assert await ledger.store_pay(dues[0], (1).to_bytes(64, "big")) is False    # lower than held: not kept
        assert await ledger.store_pay(PayDue("w", "0:" + "33" * 32, 7, None), bytes(64)) is False  # another channel
        return nxt

    run(go())
    con = sqlite3.connect(ledger.path)
    rows = dict(con.execute("SELECT cumulative, signature FROM pay").fetchall())
    assert rows == {1: "", 3: (3).to_bytes(64, "big").hex(), 7: ""}
    con.close()
    ledger.close()
    again = Ledger(ledger.path)                      # a restart: 4 owed beyond the pay signed
    assert again.pay_due("w").cumulative == 7
    assert run(again.store_pay(again.pay_due("w"), (7).to_bytes(64, "big"))) is True
    assert again.pay_due("w") is None and again.worker("w")["pay_signed"] == 7
    again.close()
    old = tmp_path / "old.sqlite"                    # books without the column: the signed pay is the paid one
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE workers (owner TEXT PRIMARY KEY, operator_key TEXT NOT NULL, channel TEXT, "
                "deposited INTEGER NOT NULL DEFAULT 0, paid INTEGER NOT NULL DEFAULT 0, pay_sig TEXT, model TEXT, "
                "coefficient INTEGER, state TEXT NOT NULL, reason TEXT, last_seen REAL NOT NULL)")
    con.execute("INSERT INTO workers VALUES ('w', 'ab', 'c', 0, 9, 'aa', 'm', 1000, 'up', NULL, 0)")
    con.execute("INSERT INTO workers VALUES ('v', 'ab', 'c', 0, 0, NULL, 'm', 1000, 'up', NULL, 0)")
    con.commit()
    con.close()
    migrated = Ledger(old)
    assert migrated.worker("w")["pay_signed"] == 9 and migrated.worker("v")["pay_signed"] == 0
    migrated.close()


def test_a_pay_needed_soon_is_kept_by_a_commit_of_its_own(ledger):
    """A pay the worker needs before its next job (it nears its credit) does not wait for the next
    commit to ride with, as a lazy write would for up to LAZY_WITHIN: it commits on its own."""
    from node.durable import LAZY_WITHIN
    from node.proxy.ledger import PayDue

    async def go():
        await ledger.worker_connected("w", "ab", "m", 1000)
        await ledger.worker_channel("w", "0:" + "22" * 32)
        job = (await admit(ledger, "r1", 1000, 100)).job_id
        due = (await finish(ledger, job, 10, fee=5, pay=True))[1]
        assert isinstance(due, PayDue) and due.cumulative == 5
        before = ledger.commits
        kept = asyncio.create_task(ledger.store_pay(due, (5).to_bytes(64, "big"), soon=True))
        done, _ = await asyncio.wait({kept}, timeout=LAZY_WITHIN / 2)     # a lazy write would still wait
        assert done and kept.result() is True and ledger.commits == before + 1
        assert ledger.pay_due("w") is None and ledger.worker("w")["pay_signed"] == 5
    run(go())


def test_an_answer_is_kept_without_its_worker_certificate_and_read_back_as_sent(ledger, tmp_path):
    """The worker certificate every answer carries (base64, a few kilobytes) is kept once in
    ``certs`` and cut from each record; the record reads back byte for byte as sent, even when the
    answer's own text holds the same base64 (the cut is the one in the ``cocoon`` object, last). Books
    from before keep their whole answers and gain the columns."""
    cert = os.urandom(3000)
    b64 = base64.b64encode(cert)
    sent = [b'{"choices":[],"cocoon":{"worker_cert":"' + b64 + b'","cost":1}}',
            b'{"choices":[{"text":"' + b64 + b'"}],"cocoon":{"worker_cert":"' + b64 + b'"}}',
            b'data: {"x":1}\n\ndata: {"cocoon":{"worker_cert":"' + b64 + b'"}}\n\ndata: [DONE]\n\n',
            b'{"cocoon":{"worker_cert":"' + b64 + b'"},"tail":"' + b64[:40] + b'"}']   # a part of it after it

    async def go():
        for i, body in enumerate(sent):
            a = await admit(ledger, f"c{i}", 1000 * (i + 1), 100)
            await ledger.complete(a.job_id, worker="w", outcome="succeeded", usage={"prompt_tokens": 1},
                                  coefficient=1000, tokens=3, cost=10, worker_fee=0, receipt="r", http_status=200,
                                  response=body, latency_ms=5, cert=Cert(cert))
            assert (await admit(ledger, f"c{i}", 1000 * (i + 1), 100)).record.response == body
    run(go())
    con = sqlite3.connect(ledger.path)
    assert con.execute("SELECT COUNT(*), SUM(LENGTH(der)) FROM certs").fetchone() == (1, 3000)
    kept = [r[0] for r in con.execute("SELECT response FROM requests ORDER BY request_id")]
    assert [len(k) for k in kept] == [len(b) - len(b64) for b in sent]
    assert kept[1].count(b64) == 1                   # the answer's own text is kept as it is
    con.close()
    assert [ledger.request(CH, f"c{i}").response for i in range(len(sent))] == sent
    old = tmp_path / "old.sqlite"                    # books without the columns: answers kept whole
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE requests (channel TEXT NOT NULL, request_id TEXT NOT NULL, job_id TEXT NOT NULL, "
                "status TEXT NOT NULL, http_status INTEGER, stream INTEGER NOT NULL, response BLOB, "
                "created_at REAL NOT NULL, finished_at REAL, PRIMARY KEY (channel, request_id))")
    con.execute("INSERT INTO requests VALUES (?, 'r', 'j', 'done', 200, 0, ?, 0, 0)", (CH, sent[0]))
    con.commit()
    con.close()
    migrated = Ledger(old)
    assert migrated.request(CH, "r").response == sent[0]
    migrated.close()


class Payer:
    """The books of a gateway (node/client/gateway.py) on one channel: a request signs settled + the
    maximum costs of all in flight + its own; an answer is paid with the exact settled total."""

    def __init__(self):
        self.settled, self.inflight = 0, {}

    def authorize(self, rid: str, max_cost: int) -> int:
        self.inflight[rid] = max_cost
        return self.settled + sum(self.inflight.values())

    def paid(self, rid: str, cost: int) -> int:
        del self.inflight[rid]
        self.settled += cost
        return self.settled


def test_a_request_authorized_first_and_arriving_last_is_admitted_after_a_settle(ledger):
    """Requests travel over several connections: A is authorized first and reaches the proxy after B
    was answered and settled, and after X, authorized after that settle. The settle must not take
    away what A counts on: A, X and the settle were all signed correctly."""
    async def go():
        p = Payer()
        v_a, v_b = p.authorize("A", 100), p.authorize("B", 100)          # 100, 200
        b = await admit(ledger, "B", v_b, 100)
        await finish(ledger, b.job_id, 30)
        exact = p.paid("B", 30)                                           # the settle of B: 30
        v_x = p.authorize("X", 100)                                       # 30 + A's 100 + X's 100
        await admit(ledger, "X", v_x, 100)                                # X overtakes the settle ...
        await ledger.settle(CH, "B", exact, SIG)                          # ... which arrives next
        await admit(ledger, "A", v_a, 100)                                # A, last: still covered by X's voucher
        row = ledger.channel(CH)
        assert (row.voucher_amount, row.exact_amount, row.settled, ledger.reserved(CH)) == (230, 30, 30, 200)
        # a total that counts requests in flight is not an exact total: refused
        with pytest.raises(Conflict, match="billed"):
            await ledger.settle(CH, "B", 130, SIG)
    run(go())


def test_claiming_the_exact_total_never_bills_a_request_twice(ledger):
    """The proxy claims the exact total while another request runs: its settled total stays what it
    billed, the running request is billed once when it ends, and the next one is admitted."""
    async def go():
        p = Payer()
        a = await admit(ledger, "r1", p.authorize("r1", 100), 100)
        b = await admit(ledger, "r2", p.authorize("r2", 100), 100)
        await finish(ledger, a.job_id, 30)
        await ledger.settle(CH, "r1", p.paid("r1", 30), SIG)
        await ledger.set_claimed(CH, ledger.channel(CH).exact_amount)   # a claim confirmed on chain
        await finish(ledger, b.job_id, 40)
        await ledger.settle(CH, "r2", p.paid("r2", 40), SIG)
        row = ledger.channel(CH)
        assert (row.settled, row.capped, row.claimed, row.exact_amount) == (70, 0, 30, 70)
        c = await admit(ledger, "r3", p.authorize("r3", 100), 100)
        # the payer leaves while r3 runs: claimed with the authorization (the highest voucher, r2's) ...
        assert ledger.close_voucher(CH) == (200, SIG.hex())
        await finish(ledger, c.job_id, 5)
        await ledger.settle(CH, "r3", p.paid("r3", 5), b"\x02" * 64)
        # ... once nothing runs and all that was billed is settled: with the exact total
        assert ledger.close_voucher(CH) == (75, (b"\x02" * 64).hex())
    run(go())


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_no_order_of_arrivals_answers_settles_and_claims_refuses_a_payer_that_signed_correctly(data):
    """A payer signing as the gateway does, the proxy's ledger, and a network that delivers requests
    and settles in any order: no request is refused, no settle is refused except a stale one, a claim
    of the exact total never moves the settled total, and at the end the proxy's settled total, its
    exact total and what the payer paid are one and the same."""
    import tempfile

    draw = data.draw

    async def go(l: Ledger) -> None:
        p = Payer()
        wire: list[tuple] = []                  # requests and settles on their way to the proxy
        running: dict[str, tuple[str, int]] = {}  # at the proxy: request id -> (job id, maximum cost)
        answers: list[tuple[str, int]] = []     # on their way to the payer: (request id, cost)
        made = 0

        async def deliver(i: int) -> None:
            msg = wire.pop(i)
            if msg[0] == "request":
                _, rid, voucher, m = msg
                adm = await admit(l, rid, voucher, m)      # PaymentRequired here is the bug
                running[rid] = (adm.job_id, m)
            else:
                _, rid, total = msg
                try:
                    await l.settle(CH, rid, total, SIG)
                except Conflict as e:
                    assert total < l.channel(CH).exact_amount, e   # only a stale settle is refused

        async def check() -> None:
            row = l.channel(CH)
            if row is not None:
                assert row.settled + l.reserved(CH) <= row.voucher_amount
                assert row.exact_amount <= row.settled and row.capped == 0

        for _ in range(draw(st.integers(5, 40))):
            kinds = ["authorize"] * (made < 10) + ["deliver"] * bool(wire) + ["complete"] * bool(running) + \
                    ["answer"] * bool(answers) + ["claim"]
            kind = draw(st.sampled_from(kinds))
            if kind == "authorize":
                rid, m = f"r{made}", draw(st.sampled_from([100, 150, 200]))
                made += 1
                wire.append(("request", rid, p.authorize(rid, m), m))
            elif kind == "deliver":
                await deliver(draw(st.integers(0, len(wire) - 1)))
            elif kind == "complete":
                rid = draw(st.sampled_from(sorted(running)))
                job_id, m = running.pop(rid)
                cost = draw(st.integers(0, m))
                await finish(l, job_id, cost)
                answers.append((rid, cost))
            elif kind == "answer":
                rid, cost = answers.pop(draw(st.integers(0, len(answers) - 1)))
                wire.append(("settle", rid, p.paid(rid, cost)))
            else:
                row = l.channel(CH)
                if row is not None and row.exact_amount > row.claimed:
                    before = row.settled
                    await l.set_claimed(CH, row.exact_amount)
                    assert l.channel(CH).settled == before
            await check()
        while wire or running or answers:         # everything arrives, in some order
            if wire:
                await deliver(draw(st.integers(0, len(wire) - 1)))
            elif running:
                rid = sorted(running)[0]
                job_id, m = running.pop(rid)
                await finish(l, job_id, m // 2)
                answers.append((rid, m // 2))
            else:
                rid, cost = answers.pop()
                wire.append(("settle", rid, p.paid(rid, cost)))
            await check()
        row = l.channel(CH)
        if row is not None:
            assert row.settled == row.exact_amount == p.settled
            assert l.close_voucher(CH) == (p.settled, SIG.hex()) or p.settled == 0

    with tempfile.TemporaryDirectory() as d:
        l = Ledger(os.path.join(d, "p.sqlite"))
        try:
            run(go(l))
        finally:
            l.close()

"""The routing function: lowest expected wait weighted by reputation, among eligible workers with room."""
from __future__ import annotations

from hypothesis import given, strategies as st

from node.proxy.routing import WorkerLoad, choose, retry_after


def w(key, score=5000, in_flight=0, avg=1.0, coef=1000, model="m", max_jobs=4, up=True):
    return WorkerLoad(key, model, coef, max_jobs, in_flight=in_flight, avg_job_s=avg, score=score, up=up)


def test_equal_load_prefers_better_reputation():
    assert choose([w("a", score=4000), w("b", score=9000), w("c", score=6000)], "m", 1000).key == "b"


def test_equal_reputation_prefers_idle():
    assert choose([w("a", in_flight=2), w("b", in_flight=0), w("c", in_flight=1)], "m", 1000).key == "b"


def test_reputation_weighs_against_load():
    # b is twice as loaded but three times as reputed: (2+1)*1/0.9 = 3.33 < (0+1)*1/0.25 = 4
    assert choose([w("a", score=2500), w("b", score=9000, in_flight=2)], "m", 1000).key == "b"
    # ... but not against a slow history
    assert choose([w("a", score=2500), w("b", score=9000, in_flight=2, avg=3.0)], "m", 1000).key == "a"


def test_filters_model_coefficient_room_and_down():
    ws = [w("other", model="x"), w("dear", coef=1500), w("full", in_flight=4), w("down", up=False), w("ok", score=1)]
    assert choose(ws, "m", 1000).key == "ok"
    assert choose(ws, "m", 1000, exclude=frozenset({"ok"})) is None
    assert choose(ws, "m", 2000).key == "dear"


def test_nobody_with_room_is_none_and_retry_after_is_bounded():
    ws = [w("a", in_flight=4, avg=2.5)]
    assert choose(ws, "m", 1000) is None
    assert retry_after(ws, "m", 1000) == 3
    assert retry_after([], "m", 1000) >= 1


def test_decayed_average():
    x = w("a")
    x.observe(2.0)
    assert x.avg_job_s == 2.0          # the first job replaces the prior
    x.observe(4.0)
    assert 2.0 < x.avg_job_s < 4.0
    x.observe(float("nan"))
    assert 2.0 < x.avg_job_s < 4.0


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7), st.floats(0.01, 100)), min_size=1, max_size=12))
def test_choice_is_minimal_cost(specs):
    ws = [w(str(i), score=s, in_flight=f, avg=a, max_jobs=8) for i, (s, f, a) in enumerate(specs)]
    c = choose(ws, "m", 1000)
    assert c is not None
    assert all(c.cost() <= x.cost() for x in ws)


def test_pays_leave_once_an_interval_unless_the_worker_nears_its_credit():
    """A worker's pay is batched by time (one signature and one check per PAY_EVERY), but leaves at
    once when a quarter of the worker's credit is unpaid: past its credit a worker turns jobs away."""
    from node.proxy.workers import PAY_EVERY, pay_wait
    credit = 1000
    assert pay_wait(10.0, float("-inf"), 10, credit) == 0.0                 # none sent yet: at once
    assert pay_wait(10.0, 10.0 - PAY_EVERY, 10, credit) == 0.0              # the interval is over
    assert abs(pay_wait(10.0, 9.99, 10, credit) - (PAY_EVERY - 0.01)) < 1e-9  # the rest of it
    assert pay_wait(10.0, 9.99, credit // 4 - 1, credit) > 0
    assert pay_wait(10.0, 9.99, credit // 4, credit) == 0.0                 # near the credit: at once
    assert pay_wait(10.0, 9.99, 1, 0) == 0.0                                # no credit: every pay at once


def test_a_link_batches_pays_by_time_and_sends_at_once_near_the_credit():
    """WorkerLink.pay on the services' own event loop (uvloop): pays owed within PAY_EVERY of the last
    one go out together, the latest; a pay that brings the unpaid amount to a quarter of the credit
    goes at once, pulling the batch in; pays owed in one turn of the loop never fail (a scheduled
    send is replaced, not inspected)."""
    import asyncio
    import time

    from node import eventloop
    from node.proxy.ledger import PayDue
    from node.proxy.workers import PAY_EVERY, WorkerLink

    signed: list[tuple[int, float, bool]] = []

    async def signer(p: PayDue, soon: bool):
        signed.append((p.cumulative, time.monotonic(), soon))
        return None                        # not kept: nothing is sent (the link has no socket here)

    async def main():
        link = WorkerLink(None, "0:" + "11" * 32, b"\x00" * 32, "m", "h", 1000, 1000, None, b"",
                          WorkerLoad("0:" + "11" * 32, "m", 1000, 4), signer=signer)
        due = lambda n: PayDue(link.owner, "0:" + "22" * 32, n, None)
        t0 = time.monotonic()
        link.pay(due(10))                  # nothing sent yet: at once
        link.pay(due(20))                  # the same turn: rides with it
        await asyncio.sleep(0.01)
        assert [c for c, _, _ in signed] == [20]
        link.pay(due(30))                  # within PAY_EVERY of the last: waits
        link.pay(due(40))
        await asyncio.sleep(0.01)
        assert [c for c, _, _ in signed] == [20]
        link.pay(due(20 + 250))            # a quarter of the credit unpaid: at once
        await asyncio.sleep(0.01)
        assert [c for c, _, _ in signed] == [20, 270]
        assert signed[1][1] - t0 < PAY_EVERY
        assert [soon for _, _, soon in signed] == [False, True]   # near the credit: its own commit
        link.pay(due(280))
        await asyncio.sleep(PAY_EVERY + 0.03)
        assert [c for c, _, _ in signed] == [20, 270, 280]

    eventloop.run(main())

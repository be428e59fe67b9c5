"""Eight `openai` SDK clients at once on one gateway, some of them hanging up mid-stream: every
request that is not abandoned succeeds (no 402 from books that disagree), an abandoned request is
still paid for exactly what the proxy billed (its receipt fetched by its request id and verified),
and at the end the gateway's total is the proxy's.

The module starts its own network: a worker with two slots and a queue, so eight requests fit.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from tests.client.devnet import DevNet
from tests.procs import COCOON, Procs

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="services run on Linux")
MODEL = "smollm2"
CLIENTS = 8
ROUNDS = 3


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    procs = Procs(tmp_path_factory.mktemp("devnet-concurrent"))
    try:
        yield DevNet(procs, procs.workdir).start(parallel=2, queue=8)
    finally:
        procs.stop_all()


def cocoon_of(obj) -> dict:
    return (getattr(obj, "model_extra", None) or {}).get("cocoon") or {}


def proxy_books(net) -> dict:
    out = subprocess.run([COCOON, "proxy", "status", "--json", "--state", str(net.root / "proxy-state")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def one_client(g, i: int, errors: list, abandoned: list, done: list) -> None:
    c = g.client(timeout=180, max_retries=0)
    for r in range(ROUNDS):
        kind = (i + r) % 4
        msg = [{"role": "user", "content": f"Client {i}, round {r}: count from one to twenty in words."}]
        try:
            if kind == 2:
                resp = c.chat.completions.create(model=MODEL, messages=msg, max_tokens=16, temperature=0)
                assert cocoon_of(resp)["verification"]["ok"]
                done.append(i)
                continue
            stream = c.chat.completions.create(model=MODEL, messages=msg, max_tokens=24, stream=True,
                                               stream_options={"include_usage": True})
            if kind in (1, 3):   # hang up after one or three chunks
                it = iter(stream)
                for _ in range(1 if kind == 1 else 3):
                    next(it)
                stream.close()
                abandoned.append(i)
                continue
            chunks = list(stream)
            assert cocoon_of(chunks[-1])["verification"]["ok"], cocoon_of(chunks[-1])
            done.append(i)
        except Exception as e:  # every failure is reported, none stops the others
            errors.append(f"client {i} round {r} kind {kind}: {type(e).__name__}: {e}")


def test_eight_clients_some_hanging_up_get_no_errors_and_the_books_agree(net):
    g = net.gateway("busy", budget="20")
    errors: list[str] = []
    abandoned: list[int] = []
    done: list[int] = []
    threads = [threading.Thread(target=one_client, args=(g, i, errors, abandoned, done)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "clients still running after 10 minutes"
    assert not errors, "\n".join(errors) + "\n" + g.proc.output()[-4000:]
    assert len(done) + len(abandoned) == CLIENTS * ROUNDS and abandoned
    # the abandoned requests end at the proxy (cancelled, billed for what was delivered) and the
    # gateway pays each from its record: nothing stays in flight, and both books say the same
    deadline = time.monotonic() + 120
    while True:
        st, books = g.status(), proxy_books(net)
        if not st["requests_by_state"].get("authorized") and not books["running"] \
                and st["spent"] == books["settled"]:
            break
        assert time.monotonic() < deadline, (st, books)
        time.sleep(0.5)
    assert st["receipts_failed"] == 0 and st["receipts_verified"] == CLIENTS * ROUNDS, st
    assert books["capped"] == 0
    # and the channel goes on: a request right after is admitted against the same totals
    r = g.client(timeout=120, max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
    co = cocoon_of(r)
    assert co["verification"]["ok"] and co["settled_before"] == st["spent"]

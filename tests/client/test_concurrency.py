"""Eight `openai` SDK clients at once on one gateway, some of them hanging up mid-stream, while the
proxy claims from the channel every second: every request that is not abandoned succeeds (no 402
from books that disagree), an abandoned request is still paid for exactly what the proxy billed (its
receipt fetched by its request id and verified), a claim never bills a request twice, and at the
end the gateway's total is the proxy's. Then a stream that breaks between the proxy and
the gateway is paid the same way, and the next request goes on.

The module starts its own network: a worker with two slots and a queue, so eight requests fit.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

import openai

from tests.client.devnet import DevNet, raw
from tests.procs import COCOON, PYTHON, Procs, free_port, port_ready

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="services run on Linux")
MODEL = "smollm2"
CLIENTS = 8
ROUNDS = 3


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    procs = Procs(tmp_path_factory.mktemp("devnet-concurrent"))
    try:
        yield DevNet(procs, procs.workdir).start(parallel=2, queue=8, claim_often=True)
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
    # claims of the exact total landed while requests ran, and none raised what the proxy counts as owed
    assert books["claims"] >= 1 and books["capped"] == 0 and books["claimed"] <= books["settled"], books
    # and the channel goes on: a request right after is admitted against the same totals
    r = g.client(timeout=120, max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
    co = cocoon_of(r)
    assert co["verification"]["ok"] and co["settled_before"] == st["spent"]


def test_a_stream_broken_before_its_receipt_is_paid_from_the_proxys_record(net):
    """Between the proxy and the gateway, a relay ends the stream after two chunks: the caller gets an
    SSE error at once; the proxy, its client gone, cancels the worker and bills what was delivered;
    the gateway fetches that record by the request id (through the same relay, untouched), verifies its
    receipt and pays it, so the books agree and the next request is admitted."""
    port = free_port()
    net.procs.start("relay-cut", [PYTHON, "-m", "tests.client.relay", "--listen", str(port), "--upstream",
                                  f"127.0.0.1:{net.clients_port}", "--dev-root", str(net.root / "devroot"),
                                  "--measurements", str(net.root / "proxy-image.json"),
                                  "--operator-key-file", str(net.keys["proxy-operator"]),
                                  "--owner", raw(net.proxy_owner), "--mode", "cut"],
                    ready=port_ready(port), timeout=60, cwd=_repo())
    g = net.gateway("cut", extra=("--proxy", raw(net.proxy_owner), "--proxy-endpoint", f"127.0.0.1:{port}"))
    c = g.client(timeout=120, max_retries=0)
    seen = []
    with pytest.raises(openai.APIError) as e:
        for chunk in c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count to ten."}],
                                               max_tokens=24, stream=True):
            seen.append(chunk)
    assert len(seen) == 2 and "receipt" in str(e.value.message)
    deadline = time.monotonic() + 120
    while True:
        st = g.status()
        if st["receipts_verified"] == 1 and not st["requests_by_state"].get("authorized"):
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    assert st["spent"] > 0 and st["receipts_failed"] == 0
    rec = json.loads(g.cli("client", "receipts", "--json").stdout)
    assert len(rec) == 1 and rec[0]["verified"] and rec[0]["paid"] == st["spent"]
    # the proxy billed this channel exactly what the gateway paid
    books = proxy_books(net)
    before = 0   # what the first test's gateway paid on its own channel, when it ran
    if (net.root / "busy").exists():
        before = json.loads(subprocess.run([COCOON, "client", "status", "--json", "--state", str(net.root / "busy")],
                                           capture_output=True, text=True, timeout=60).stdout)["spent"]
    assert books["settled"] == before + st["spent"] and not books["running"], (books, before, st)
    # a non-streaming answer passes the relay whole: the channel goes on from the same totals
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
    co = cocoon_of(r)
    assert co["verification"]["ok"] and co["settled_before"] == st["spent"]


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]

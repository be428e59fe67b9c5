"""Helpers for the end-to-end tests on a whole devnet (node/devnet): a module-scoped network torn down by
pid, a time limit per test, the openai SDK against the gateway, and the books checked on chain."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from node.devnet import Devnet, Reporter, money
from tests.procs import COCOON
from wrappers import TON


def make_devnet(tmp_path_factory, workers: int = 2, budget: str = "200") -> Devnet:
    d = Devnet(tmp_path_factory.mktemp("devnet"), Reporter(lambda s: None, tty=False))
    d.up(workers=workers, ports="free", refresh=1.0, budget=budget, epoch=5)  # stops what it started on failure
    return d


@contextmanager
def time_limit(seconds: int):
    """Fail the test (TimeoutError) if it runs longer than ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"the test ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def openai_client(d: Devnet, name: str = "client", **kw):
    import openai

    rec = d.state.proc(name)
    return openai.OpenAI(base_url=rec.url, api_key="devnet", max_retries=0, timeout=kw.pop("timeout", 120), **kw)


def ask(d: Devnet, text: str = "Say hello.", max_tokens: int = 16, name: str = "client", **kw):
    c = openai_client(d, name)
    return c.chat.completions.create(model=d.state.model_name, messages=[{"role": "user", "content": text}],
                                     max_tokens=max_tokens, temperature=0, **kw)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([COCOON, *args], capture_output=True, text=True, timeout=timeout)


def cli_json(*args: str) -> dict:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def worker_jobs(d: Devnet) -> dict[str, int]:
    return {w.name: cli_json("worker", "status", "--state-dir", w.state_dir)["jobs"] for w in d.state.workers()}


def books(d: Devnet) -> money.Books:
    return asyncio.run(money.read_books(d.state))


def advance(d: Devnet, seconds: int) -> None:
    from node.devnet.demo import _advance

    asyncio.run(_advance(d.state, seconds))


def wait_for(what: str, probe, timeout: float = 60, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def check_books(d: Devnet, timeout: float = 60) -> None:
    """At the end the money adds up on chain:
    * what the receipts say each client spent = what the proxy claimed from its channel + what the proxy
      can still claim (its settled total minus what it claimed);
    * what the proxy signed to workers = what the workers hold; of it, what they claimed is on chain and
      the rest is claimable from what their channels hold;
    * balances plus fees = what the faucet minted."""
    st = d.state

    def client_side():
        proxy = cli_json("proxy", "status", "--state", str(Path(st.dir) / "proxy"))
        b = books(d)
        spent = 0
        for label, _ in money.client_channels(st):
            r = cli("client", "receipts", "--json", "--state", str(Path(st.dir) / label))
            assert r.returncode == 0, r.stderr
            spent += sum(x["paid"] for x in json.loads(r.stdout))
        chain_claimed = sum(c.claimed for c in b.channels if c.name.endswith("→ proxy"))
        ok = (spent == chain_claimed + proxy["owed"] and proxy["claimed"] == chain_claimed
              and proxy["pending_claims"] == 0)
        return ok and (spent, chain_claimed, proxy["owed"])

    wait_for("client receipts = proxy claimed + claimable", client_side, timeout)

    def worker_side():
        proxy = cli_json("proxy", "status", "--state", str(Path(st.dir) / "proxy"))
        b = books(d)
        held = 0
        for w in st.workers():
            s = cli_json("worker", "status", "--state-dir", w.state_dir)
            ch = money.channel_of(b, f"proxy → {w.name}")
            claimed = ch.claimed if ch else 0
            if s["claimed"] != claimed or s["paid"] < claimed or (ch and s["paid"] - claimed > ch.held):
                return False
            held += s["paid"]
        return held == proxy["worker_pay"] and (held, proxy["worker_pay"])

    wait_for("proxy's signed pay = workers' claimed + claimable", worker_side, timeout)
    b = wait_for("balances + fees = minted", lambda: (lambda b: b if b.adds_up else None)(books(d)), timeout)
    assert b.minted == b.balances + b.fees

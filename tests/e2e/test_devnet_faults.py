"""Faults on a whole devnet, with real processes and kill -9: the proxy dies mid-stream and comes back;
a worker dies mid-stream and the next request goes to the other one; the registry revokes a worker's
image and traffic moves to the other worker. At the end the money still adds up on chain.

One devnet serves the module (stopped by pid at the end, whatever happens)."""
from __future__ import annotations

import asyncio
import urllib.request

import pytest

from tests.devnet_kit import check_books, cli, make_devnet, openai_client, time_limit, wait_for, worker_jobs
from node.devnet.network import _worker_connected


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    with time_limit(420):
        d = make_devnet(tmp_path_factory)
    try:
        yield d
    finally:
        d.down(quiet=True)
        assert not d.state.running()


def _stream(d, max_tokens: int = 200):
    c = openai_client(d, timeout=60)
    return c.chat.completions.create(model="smollm2", max_tokens=max_tokens, temperature=0.7, stream=True,
                                     messages=[{"role": "user", "content": "Write a long story about a cat."}],
                                     stream_options={"include_usage": True})


def _read_until_broken(stream, after_chunks: int, on_chunks) -> tuple[int, bool]:
    """Read the stream; call ``on_chunks()`` after ``after_chunks`` content chunks. Returns (chunks read,
    whether the stream finished normally with its receipt)."""
    n, done = 0, False
    try:
        for chunk in stream:
            if any(c.delta.content for c in chunk.choices):
                n += 1
                if n == after_chunks:
                    on_chunks()
            if (chunk.model_extra or {}).get("cocoon"):
                done = True
    except Exception:  # the SDK raises on a broken stream or an SSE error object
        pass
    return n, done


def _active(d) -> dict[str, float]:
    out = {}
    for w in d.state.workers():
        try:
            with urllib.request.urlopen(w.metrics, timeout=3) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("cocoon_worker_active_jobs "):
                        out[w.name] = float(line.split()[1])
        except OSError:
            out[w.name] = 0.0
    return out


def _all_connected(d) -> bool:
    return all(w.alive() and _worker_connected(w.url) for w in d.state.workers())


def _ok(d, max_tokens: int = 8):
    c = openai_client(d, timeout=90)
    r = c.chat.completions.create(model="smollm2", max_tokens=max_tokens, temperature=0,
                                  messages=[{"role": "user", "content": "Say hi."}])
    assert r.model_extra["cocoon"]["receipt"]
    return r


def test_proxy_killed_mid_stream_then_restarted(devnet):
    with time_limit(240):
        proxy = devnet.state.proc("proxy")
        n, done = _read_until_broken(_stream(devnet), 3, proxy.kill9)
        assert n >= 3 and not done, "the stream went on after the proxy died"
        assert not proxy.alive()
        devnet.restart("proxy")
        wait_for("both workers back on the proxy", lambda: _all_connected(devnet), 90)
        wait_for("the gateway to reach the proxy again", lambda: _try_ok(devnet), 90, every=1)


def _try_ok(d) -> bool:
    try:
        _ok(d)
        return True
    except Exception:
        return False


def test_worker_killed_mid_stream_next_request_goes_to_the_other(devnet):
    with time_limit(240):
        wait_for("both workers connected", lambda: _all_connected(devnet), 90)
        victim = {}

        def kill_the_busy_one():
            busy = [name for name, v in _active(devnet).items() if v > 0]
            assert len(busy) == 1, busy
            victim["name"] = busy[0]
            devnet.state.proc(busy[0]).kill9()

        n, done = _read_until_broken(_stream(devnet), 3, kill_the_busy_one)
        assert victim and not done
        other = next(w.name for w in devnet.state.workers() if w.name != victim["name"])
        before = worker_jobs(devnet)
        for _ in range(2):
            _ok(devnet)
        after = worker_jobs(devnet)
        assert after[other] - before[other] == 2
        devnet.restart(victim["name"])   # its state (receipts, vouchers) survives the kill -9


def test_revoked_worker_image_moves_traffic_to_the_other_worker(devnet):
    with time_limit(300):
        wait_for("both workers connected", lambda: _all_connected(devnet), 90)
        st = devnet.state
        image = st.hashes["worker-image-1"]
        r = cli("registry", "remove", "worker-image", image, "--network", st.chain_url, "--registry", st.registry,
                "--mnemonic-file", st.parties["owner"]["mnemonic"])
        assert r.returncode == 0, r.stdout + r.stderr
        w1 = st.proc("worker-1")
        wait_for("the proxy to drop worker-1", lambda: not _worker_connected(w1.url), 30)
        before = worker_jobs(devnet)
        for _ in range(3):
            _ok(devnet)
        after = worker_jobs(devnet)
        assert after["worker-1"] == before["worker-1"]
        assert after["worker-2"] - before["worker-2"] == 3
        # the owner allows the image again (a proposal, the delay passed by time travel) and worker-1 returns
        asyncio.run(devnet._chain_setup(2))
        devnet.restart("worker-1")


def test_the_money_adds_up_after_the_faults(devnet):
    with time_limit(240):
        _ok(devnet)
        check_books(devnet, timeout=120)

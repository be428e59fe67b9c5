"""The whole network on a devnet (one run): what the gateway, the proxy and the worker add to inference,
and what settlement costs.

Baseline: the worker's engine called directly in this process (llama-cpp-python, the same SmolLM2 file,
the same threads and context), taking turns with the devnet so the two never compete for the cores.

  tokens/s         completion tokens over the whole request, end to end through the gateway (the
                   `openai` SDK, streaming) vs the engine directly; bar: at least 90 %
  TTFT added       time to the first streamed token through gateway + proxy + worker minus the
                   engine's, paired request by request; bar: p50 at most 25 ms
  latency added    a one-token request's whole time end to end minus the engine's, paired; bar: p50 at
                   most 15 ms and p99 at most 60 ms
  SDK's own time   the `openai` SDK's own time per call: the same one-token request through the SDK
                   minus through a plain HTTP client, taking turns (shown, not judged)
  requests/s       8 clients at once, short answers; bar: zero errors
  settlement fees  the proxy's claims under its default policy (a claim once its fee estimate, 0.025 TON,
                   is at most 0.5 % of what it settles, i.e. every 5 TON owed): the fee of a real claim,
                   measured on chain from the client's close, over what such a claim settles; this run's
                   request costs are replayed through the policy; bar: at most 0.5 %

The paired TTFT and latency requests go to the gateway with a plain keep-alive HTTP client
(http.client, the standard SSE decoder): what the network adds is the gateway's local HTTP hop, the
proxy and the worker; the engine called directly needs no client library at all, and the `openai` SDK
spends 3 to 5 ms of its own per call here (httpx, response models) that any OpenAI server's caller pays
alike. That figure is measured in the same run and printed; tokens/s and the 8 clients use the SDK.

Prints a table, then one JSON object as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.devnet import Devnet, Reporter, money  # noqa: E402
from node.devnet.network import model_path  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper."
MESSAGES = [{"role": "user", "content": PROMPT}]
SHORT = [{"role": "user", "content": "Say hi."}]


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


HISTOGRAMS = {"client": "cocoon_client_request_seconds", "proxy": "cocoon_proxy_request_seconds",
              "proxy_worker": "cocoon_proxy_worker_seconds", "worker": "cocoon_worker_job_seconds"}


def scrape(d: Devnet) -> dict[str, tuple[float, float]]:
    """(sum, count) of each service's request-time histogram, from its /metrics."""
    import urllib.request

    urls = {"client": d.state.proc("client").metrics, "proxy": d.state.proc("proxy").metrics,
            "proxy_worker": d.state.proc("proxy").metrics, "worker": d.state.proc("worker-1").metrics}
    out = {}
    for k, url in urls.items():
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        total = count = 0.0
        for line in text.splitlines():
            name = line.split("{")[0].split(" ")[0]
            if name == HISTOGRAMS[k] + "_sum":
                total += float(line.rsplit(" ", 1)[1])
            elif name == HISTOGRAMS[k] + "_count":
                count += float(line.rsplit(" ", 1)[1])
        out[k] = (total, count)
    return out


def breakdown(a: dict, b: dict, engine: float) -> dict[str, float]:
    """Mean milliseconds each hop adds per request: gateway, proxy, the link, the worker (over its engine)."""
    mean = {k: (b[k][0] - a[k][0]) / max(1.0, b[k][1] - a[k][1]) for k in a}
    return {"gateway": (mean["client"] - mean["proxy"]) * 1000, "proxy": (mean["proxy"] - mean["proxy_worker"]) * 1000,
            "link": (mean["proxy_worker"] - mean["worker"]) * 1000, "worker": (mean["worker"] - engine) * 1000}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


class Direct:
    """The engine itself: llama-cpp-python with the worker's settings."""

    def __init__(self, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(model_path()), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                         verbose=bool(os.environ.get("COCOON_LLAMA_VERBOSE")), logits_all=False)

    def stream(self, messages, max_tokens: int) -> tuple[float, float, int]:
        """(seconds to the first token, seconds in all, completion tokens)"""
        t0 = time.perf_counter()
        first, n = None, 0
        for ch in self.llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0,
                                                  stream=True):
            if ch["choices"] and ch["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
                n += 1
        t = time.perf_counter()
        return (first or t) - t0, t - t0, n


class E2E:
    def __init__(self, base_url: str):
        import openai

        self.c = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=300)

    def stream(self, messages, max_tokens: int) -> tuple[float, float, int, int]:
        """(seconds to the first token, seconds in all, completion tokens, cost)"""
        t0 = time.perf_counter()
        first, n, cost = None, 0, 0
        s = self.c.chat.completions.create(model="smollm2", messages=messages, max_tokens=max_tokens, temperature=0,
                                           stream=True, stream_options={"include_usage": True})
        for ch in s:
            if ch.choices and ch.choices[0].delta.content:
                first = first or time.perf_counter()
            if ch.usage is not None:
                n = ch.usage.completion_tokens
            coc = (ch.model_extra or {}).get("cocoon")
            if coc:
                cost = coc["cost"]
        t = time.perf_counter()
        return (first or t) - t0, t - t0, n, cost

    def once(self, messages, max_tokens: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        r = self.c.chat.completions.create(model="smollm2", messages=messages, max_tokens=max_tokens, temperature=0)
        return time.perf_counter() - t0, r.model_extra["cocoon"]["cost"]


class Plain:
    """The gateway through a plain keep-alive HTTP connection (http.client): no client library's own
    time in the figure."""

    def __init__(self, base_url: str):
        import http.client
        from urllib.parse import urlsplit

        u = urlsplit(base_url)
        self.path = u.path.rstrip("/") + "/chat/completions"
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)    # as every HTTP client library does
        self.headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}

    def _post(self, body: dict):
        # bytes: http.client sends them with the headers, in one write
        self.conn.request("POST", self.path, body=json.dumps(body).encode(), headers=self.headers)
        r = self.conn.getresponse()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
        return r

    def stream(self, messages, max_tokens: int) -> tuple[float, float, int, int]:
        """(seconds to the first token, seconds in all, completion tokens, cost)"""
        from node.openai.sse import DONE, SSEDecoder, parse_event

        t0 = time.perf_counter()
        r = self._post({"model": "smollm2", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                        "stream": True, "stream_options": {"include_usage": True}})
        first, n, cost, dec = None, 0, 0, SSEDecoder()
        while True:
            data = r.read1(65536)
            if not data:
                break
            for payload in dec.feed(data):
                ev = parse_event(payload)
                if ev == DONE:
                    continue
                ch = ev.get("choices") or []
                if ch and (ch[0].get("delta") or {}).get("content"):
                    first = first or time.perf_counter()
                if ev.get("usage"):
                    n = ev["usage"]["completion_tokens"]
                if ev.get("cocoon"):
                    cost = ev["cocoon"]["cost"]
        t = time.perf_counter()
        return (first or t) - t0, t - t0, n, cost

    def once(self, messages, max_tokens: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        r = self._post({"model": "smollm2", "messages": messages, "max_tokens": max_tokens, "temperature": 0})
        answer = json.loads(r.read())
        return time.perf_counter() - t0, answer["cocoon"]["cost"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="long generations per side (the median is taken)")
    ap.add_argument("--pairs", type=int, default=40, help="paired short requests (TTFT and latency)")
    ap.add_argument("--concurrent", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="llama.cpp threads, the same for the worker and the engine called directly (default: all "
                         "cores but one, which the services use; llama.cpp's threads spin, so more than the free "
                         "cores slows it down)")
    args = ap.parse_args()
    threads = args.threads
    costs: list[int] = []
    with tempfile.TemporaryDirectory(prefix="cocoon-bench-") as tmp:
        # the engine is loaded before anything imports tonpy: both are C++ libraries, and llama.cpp's
        # vocabulary loader fails (std::bad_cast) when tonpy's library was loaded into the process first
        direct = Direct(threads)
        d = Devnet(Path(tmp) / "devnet", Reporter(lambda s: print(s, file=sys.stderr), tty=False))
        try:
            # the services' background work at their own defaults: registry reads every 30 s,
            # settlement passes every 10 s, claim checks every 60 s
            d.up(workers=1, ports="free", budget="1000", refresh=30.0, threads=threads, epoch=3600,
                 settle_every=10.0, claim_interval=60.0)
            e2e = E2E(d.state.base_url)
            plain = Plain(d.state.base_url)
            e2e.stream(SHORT, 4), plain.stream(SHORT, 4), direct.stream(SHORT, 4)  # warm all three
            # 1. tokens per second, long generations, taking turns
            note(f"tokens/s: {args.runs} generations of up to {args.max_tokens} tokens each way")
            tps_e, tps_d = [], []
            for _ in range(args.runs):
                _, t, n = direct.stream(MESSAGES, args.max_tokens)
                tps_d.append(n / t)
                _, t, n, c = e2e.stream(MESSAGES, args.max_tokens)
                tps_e.append(n / t)
                costs.append(c)
            # 2. and 3. paired short requests: TTFT (streamed) and whole latency (one token)
            ttft_add, lat_add, engine_s, sdk_own = [], [], [], []
            before = scrape(d)
            note(f"TTFT and latency: {args.pairs} pairs")
            for i in range(args.pairs):
                if i and i % 10 == 0:
                    note(f"  {i} of {args.pairs} pairs")
                f_d, t_d, _ = direct.stream(SHORT, 4)
                engine_s.append(t_d)
                f_e, _, _, c = plain.stream(SHORT, 4)
                ttft_add.append((f_e - f_d) * 1000)
                costs.append(c)
                _, l_d, _ = direct.stream(SHORT, 1)
                engine_s.append(l_d)
                l_e, c = plain.once(SHORT, 1)
                lat_add.append((l_e - l_d) * 1000)
                costs.append(c)
            hops = breakdown(before, scrape(d), statistics.mean(engine_s))
            # the openai SDK's own time: the same request through it and through the plain client, in
            # turn (the worker's cache in the same state for both: the request just before is the same)
            note(f"the openai SDK's own time: {args.pairs // 2} pairs")
            for _ in range(args.pairs // 2):
                l_p, c1 = plain.once(SHORT, 1)
                l_s, c2 = e2e.once(SHORT, 1)
                sdk_own.append((l_s - l_p) * 1000)
                costs += [c1, c2]
            del direct
            # 4. requests per second with 8 clients at once
            errors, done = [], []
            lock = threading.Lock()

            def client() -> None:
                mine = E2E(d.state.base_url)
                for _ in range(args.per_client):
                    try:
                        _, c = mine.once(SHORT, 8)
                        with lock:
                            done.append(c)
                    except Exception as e:  # counted, never hidden
                        with lock:
                            errors.append(repr(e)[:200])

            note(f"{args.concurrent} clients at once, {args.per_client} requests each")
            t0 = time.perf_counter()
            ts = [threading.Thread(target=client) for _ in range(args.concurrent)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            rps = len(done) / (time.perf_counter() - t0)
            costs += done
            # 5. settlement: a real claim's fee, measured from the client's close
            note("settlement: the client closes, the proxy claims")
            fee = claim_fee(d)
        finally:
            d.down(quiet=True)
    from node.proxy.settings import ClaimPolicy

    value = sum(costs)
    policy = ClaimPolicy()           # the proxy's defaults: it claims once its fee estimate is <= 0.5 % of the pay
    threshold = policy.claim_fee / policy.max_fee_share
    claims, pending = 0, 0
    for c in costs:
        pending += c
        if pending >= threshold:
            claims, pending = claims + 1, 0
    # the measured fee over what each claim the policy makes settles (this run's value, replayed in order)
    share = fee / threshold if claims == 0 else claims * fee / (value - pending)
    rows = [
        ("tokens/s end to end", f"{statistics.median(tps_e):.1f}", f"engine {statistics.median(tps_d):.1f}",
         f"{statistics.median(tps_e) / statistics.median(tps_d):.1%}", ">= 90 %"),
        ("TTFT added p50", f"{pct(ttft_add, 50):.1f} ms", f"p99 {pct(ttft_add, 99):.1f} ms", "", "<= 25 ms"),
        ("latency added p50", f"{pct(lat_add, 50):.1f} ms", f"p99 {pct(lat_add, 99):.1f} ms", "", "<= 15 / 60 ms"),
        ("  of it, mean per hop", " ".join(f"{k} {v:.1f}" for k, v in hops.items()), "ms", "", ""),
        ("openai SDK's own time", f"{pct(sdk_own, 50):.1f} ms", "p50, per call", "not the network's", ""),
        (f"requests/s, {args.concurrent} clients", f"{rps:.2f}", f"{len(errors)} errors", "", "0 errors"),
        ("settlement fees", f"{share:.3%}", f"claim fee {money.ton(fee)} TON", f"of {money.ton(value)} TON settled",
         "<= 0.5 %"),
    ]
    w = [max(len(str(r[i])) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(str(x).ljust(w[i]) for i, x in enumerate(r)))
    for e in errors[:5]:
        print(f"error: {e}")
    result = {
        "tokens_per_s_e2e": round(statistics.median(tps_e), 2), "tokens_per_s_engine": round(statistics.median(tps_d), 2),
        "tokens_ratio": round(statistics.median(tps_e) / statistics.median(tps_d), 4),
        "ttft_added_ms_p50": round(pct(ttft_add, 50), 2), "ttft_added_ms_p99": round(pct(ttft_add, 99), 2),
        "latency_added_ms_p50": round(pct(lat_add, 50), 2), "latency_added_ms_p99": round(pct(lat_add, 99), 2),
        "hops_mean_ms": {k: round(v, 2) for k, v in hops.items()},
        "openai_sdk_own_ms_p50": round(pct(sdk_own, 50), 2), "rps_8_clients": round(rps, 3), "errors": len(errors), "claim_fee_nanoton": fee, "value_nanoton": value,
        "settlement_fee_share": round(share, 6),
        "bars_met": {"tokens": statistics.median(tps_e) >= 0.9 * statistics.median(tps_d),
                     "ttft": pct(ttft_add, 50) <= 25, "latency": pct(lat_add, 50) <= 15 and pct(lat_add, 99) <= 60,
                     "errors": not errors, "settlement": share <= 0.005},
    }
    print(json.dumps(result))
    return 0


def claim_fee(d: Devnet) -> int:
    """Close the client's channel; the proxy claims during the notice: the claim's fee as the chain took it
    (the proxy's hot wallet pays it; the proxy's ledger records it from the transactions)."""
    import subprocess

    from node.devnet.procs import cocoon_argv

    st = d.state
    d.state.proc("client").stop()
    subprocess.run(cocoon_argv() + ["client", "close", "--state", str(d.dir / "client"), "--mnemonic-file",
                                    st.parties["client"]["mnemonic"], "--network", st.chain_url],
                   check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = subprocess.run(cocoon_argv() + ["proxy", "status", "--json", "--state", str(d.dir / "proxy")],
                           capture_output=True, text=True, timeout=60)
        s = json.loads(r.stdout)
        if s["claims"] and s["claim_fees"]:
            return s["claim_fees"] // s["claims"]
        time.sleep(1)
    raise SystemExit("the proxy made no claim after the client's close")


if __name__ == "__main__":
    sys.exit(main())

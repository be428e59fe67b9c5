"""A whole local network as real processes for the gateway's tests: the chain server, a registry with
the test flag (simulated TEE images and the model allowed from the start), a staked and registered
proxy, a staked worker serving SmolLM2, and gateways in front of them.

The chain server, the registry and the stakes come from the one test network kit
(:mod:`tests.devnet_kit`), whose messages go through :mod:`node.chain` over HTTP as any client's would;
every service is a ``cocoon`` process started by :class:`tests.procs.Procs`.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pytoniq_core import Address

from tests import devnet_kit as kit
from tests.devnet_kit import model_file_hash, model_path, raw, write_seed
from tests.procs import COCOON, Procs, free_port, http_ready
from wrappers import TON
from wrappers import registry as R

GOVERNANCE_DELAY = 60
ECONOMICS = R.Economics(price_per_token=100_000, worker_fee_per_token=80_000, prompt_mult=10_000, cached_mult=1_000,
                        completion_mult=20_000, reasoning_mult=20_000, min_escrow_deposit=TON // 100, close_delay=120)


@dataclass
class DevNet:
    procs: Procs
    root: Path
    chain: Optional[kit.Devnet] = None
    registry: Optional[Address] = None
    proxy_owner: Optional[Address] = None
    worker_owner: Optional[Address] = None
    ghost_owner: Optional[Address] = None
    ghost_port: int = 0
    clients_port: int = 0
    workers_port: int = 0
    keys: dict = field(default_factory=dict)
    claim_often: bool = False

    @property
    def chain_url(self) -> str:
        return self.chain.url

    @property
    def trust(self) -> Path:
        return self.chain.trust

    # ---------------------------------------------------------------- set-up
    def start(self, proxy_refresh: float = 600.0, parallel: int = 1, queue: int = 0,
              claim_often: bool = False, worker_args: tuple = ()) -> "DevNet":
        """``claim_often``: the proxy claims from a channel at each settlement pass (every second) once
        a claim's fee is below what it would pay, so claims land while requests are in flight.
        ``worker_args``: more `cocoon worker run` options (e.g. an HTTP engine)."""
        self.claim_often = claim_often
        self.chain = kit.Devnet(self.procs, self.root)
        try:
            self.chain.start({"smollm2": model_file_hash(model_path())}, governance_delay=GOVERNANCE_DELAY,
                             economics=ECONOMICS, max_proxies=8)
            (self.root / "proxy-image.json").write_text(json.dumps({"name": kit.PROXY_IMAGE}))
            (self.root / "worker-image.json").write_text(json.dumps({"name": kit.WORKER_IMAGE}))
            self.registry = self.chain.registry
            self.clients_port, self.workers_port, self.ghost_port = free_port(), free_port(), free_port()
            # the ghost proxy has the larger stake, so `auto` tries it first; nothing listens there
            parties = {}
            for who, role, amount in (("ghost", R.ROLE_PROXY, 80 * TON), ("proxy", R.ROLE_PROXY, 60 * TON),
                                      ("worker", R.ROLE_WORKER, 20 * TON)):
                parties[who] = p = self.chain.party(who)
                self.keys[who], self.keys[f"{who}-operator"] = p.wallet_key_file, p.operator_key_file
                self.chain.stake(p, role, amount)
            self.chain.register_proxy(parties["ghost"], f"127.0.0.1:{self.ghost_port} 127.0.0.1:{free_port()}")
            self.chain.register_proxy(parties["proxy"], f"127.0.0.1:{self.clients_port} 127.0.0.1:{self.workers_port}")
            self.ghost_owner, self.proxy_owner = parties["ghost"].address, parties["proxy"].address
            self.worker_owner = parties["worker"].address
            info = self.chain.run(self.chain.net.contract(R.Registry, self.registry).get_proxy(self.proxy_owner))
            assert info is not None and info.active, "the proxy did not register"
        finally:
            self.chain.close()
        self.start_proxy(proxy_refresh)
        self.start_worker(parallel, queue, worker_args)
        return self

    def start_proxy(self, refresh: float) -> None:
        self.proxy_metrics = free_port()
        self.proxy = self.procs.start("proxy", [
            COCOON, "proxy", "run", "--registry", raw(self.registry), "--network", self.chain_url,
            "--operator-key-file", str(self.keys["proxy-operator"]), "--key-file", str(self.keys["proxy"]),
            "--clients", f"127.0.0.1:{self.clients_port}", "--workers", f"127.0.0.1:{self.workers_port}",
            "--metrics", f"127.0.0.1:{self.proxy_metrics}", "--tee", "simulated",
            "--dev-root", str(self.root / "devroot"), "--measurements", str(self.root / "proxy-image.json"),
            "--state", str(self.root / "proxy-state"), "--refresh", str(refresh), "--settle-every", "1",
            "--max-output-tokens", "64", *(("--max-fee-share", "1", "--claim-fee", "0.000001") if self.claim_often else ())],
            ready=http_ready(f"http://127.0.0.1:{self.proxy_metrics}/metrics"), timeout=90)

    def start_worker(self, parallel: int = 1, queue: int = 0, extra: tuple = ()) -> None:
        self.worker_metrics = free_port()
        self.worker = self.procs.start("worker", [
            COCOON, "worker", "run", "--owner", raw(self.worker_owner),
            "--operator-key-file", str(self.keys["worker-operator"]), "--hot-key-file", str(self.keys["worker"]),
            "--network", self.chain_url, "--registry", raw(self.registry), "--model", str(model_path()),
            "--model-name", "smollm2", "--threads", str(max(1, 2 // parallel)), "--parallel", str(parallel),
            "--queue", str(queue),
            "--max-output-tokens", "64", "--tee", "simulated", "--dev-root", str(self.root / "devroot"),
            "--measurements", str(self.root / "worker-image.json"), "--proxy", raw(self.proxy_owner),
            "--state-dir", str(self.root / "worker-state"), "--metrics-port", str(self.worker_metrics), *extra],
            ready=http_ready(f"http://127.0.0.1:{self.worker_metrics}/metrics"), timeout=120)

    # ---------------------------------------------------------------- gateways
    def gateway(self, name: str, *, budget: str = "5", extra: tuple = (), api_key: Optional[str] = None,
                port: Optional[int] = None, wait_models: bool = True, stake_ttl: str = "0",
                env: Optional[dict] = None) -> "Gateway":
        key = self.root / f"{name}.seed"
        if not key.exists():
            write_seed(key, name)
        port = port or free_port()
        argv = [COCOON, "client", "run", "--registry", raw(self.registry), "--network", self.chain_url,
                "--key-file", str(key), "--port", str(port), "--state", str(self.root / name),
                "--allow-simulated", str(self.trust), "--budget", budget, "--refresh", "1", "--stake-ttl", stake_ttl,
                *extra]
        if api_key:
            argv += ["--api-key", api_key]
        p = self.procs.start(name, argv, ready=http_ready(f"http://127.0.0.1:{port}/metrics"), timeout=90, env=env)
        g = Gateway(self, name, p, port, self.root / name, api_key, argv)
        if wait_models:
            g.wait_for_model()
        return g


@dataclass
class Gateway:
    net: DevNet
    name: str
    proc: object
    port: int
    state: Path
    api_key: Optional[str]
    argv: list

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "unused", **kw)

    def wait_for_model(self, model: str = "smollm2", timeout: float = 120.0) -> None:
        """Until the worker has joined the proxy and the model is listed through this gateway."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                ids = [m.id for m in self.client(max_retries=0).models.list().data]
                if model in ids:
                    return
                last = ids
            except Exception as e:  # the proxy may not be chosen yet
                last = e
            time.sleep(0.5)
        raise AssertionError(f"{model} never listed through {self.name}: {last}\n{self.proc.output()[-3000:]}")

    def status(self) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/cocoon/status",
                                     headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return r.read().decode()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([COCOON, *args, "--state", str(self.state)], capture_output=True, text=True, timeout=120)

    def restart(self, kill: bool = True) -> "Gateway":
        procs = self.net.procs
        if self.proc.popen.poll() is not None:
            pass                      # it died already (a failpoint)
        elif kill:
            procs.kill9(self.proc)
        else:
            procs.stop(self.proc)
        self.proc = procs.start(self.name, self.argv, ready=http_ready(f"http://127.0.0.1:{self.port}/metrics"),
                                timeout=90)
        return self

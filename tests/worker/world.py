"""The chain a worker test runs against: a test registry that allows a simulated worker image, a
simulated proxy image and the model; a proxy staked and registered; a worker staked with its
operator key bound; the proxy's channel to the worker open. Saved to a state file the worker process
reads (``--network embedded --chain-state FILE``)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pytoniq_core import Address

from node import lifecycle as L
from node.tee.providers import SimulatedProvider
from node.tee.quote import parse_quote
from node.tee.ratls import Identity
from node.tee.registry_chain import read_snapshot
from node.tee.simulated import DevRoot, SimulatedTdx, default_measurements
from wrappers import registry as R
from wrappers import TON

WORKER_IMAGE_NAME, PROXY_IMAGE_NAME = "worker-image", "proxy-image"


def image_hash(root: DevRoot, name: str, role: str) -> bytes:
    ident = Identity.create(SimulatedProvider(SimulatedTdx(root, default_measurements(name))), role=role)
    return parse_quote(ident.quote).image_hash


def file_hash(path) -> bytes:
    return hashlib.sha256(Path(path).read_bytes()).digest()


def raw(a: Address) -> str:
    return a.to_str(is_user_friendly=False)


@dataclass
class World:
    net: L.Network
    root: DevRoot
    dev_root_dir: Path
    state_file: Path
    worker_key_file: Path
    model_hash: bytes
    worker_image: bytes
    proxy_image: bytes

    @property
    def chain(self):
        return self.net.chain

    @property
    def registry(self) -> Address:
        return self.net.reg.address

    @property
    def worker(self) -> L.Party:
        return self.net.workers["worker-a"]

    @property
    def proxy(self) -> L.Party:
        return self.net.proxy

    @property
    def channel(self):
        return self.net.channels[("proxy", "worker-a")]

    def snapshot(self):
        return read_snapshot(self.chain.get_method, self.registry)

    def save(self) -> None:
        self.chain.save(self.state_file)

    def reload(self) -> None:
        """Take the chain as the worker process left it (after its claims)."""
        from wrappers.chain.emulated import EmbeddedChain

        fresh = EmbeddedChain.load(self.state_file)
        self.net.chain.__dict__.update(fresh.__dict__)

    def revoke(self, kind: str, h: bytes) -> None:
        self.net.revoke(kind, int.from_bytes(h, "big"))
        self.save()

    def worker_args(self, state_dir: Path, proxy_port: int, metrics_port: int, *extra: str) -> list[str]:
        return ["worker", "run", "--owner", raw(self.worker.wallet.address),
                "--operator-key-file", str(self.worker_key_file), "--network", "embedded",
                "--chain-state", str(self.state_file), "--registry", raw(self.registry),
                "--tee", "simulated", "--dev-root", str(self.dev_root_dir), "--image", WORKER_IMAGE_NAME,
                "--proxy-endpoint", f"127.0.0.1:{proxy_port}", "--state-dir", str(state_dir),
                "--metrics-port", str(metrics_port), "--threads", "1", "--registry-refresh", "1", "-v", *extra]


def build(tmp: Path, model_path, proxy_port: int, *, allow_model: bool = True, allow_image: bool = True,
          worker_stake: int = 20 * TON, lang: str = "func") -> World:
    root = DevRoot.generate()
    dev_dir = tmp / "devroot"
    root.save(dev_dir)
    n = L.Network(lang)
    n.deploy()
    wimg, pimg = image_hash(root, WORKER_IMAGE_NAME, "worker"), image_hash(root, PROXY_IMAGE_NAME, "proxy")
    mhash = file_hash(model_path)
    other = hashlib.sha256(b"other").digest()
    pids = [n.allow("worker_image", int.from_bytes(wimg if allow_image else other, "big")),
            n.allow("proxy_image", int.from_bytes(pimg, "big"))]
    pids.append(n.allow("model", int.from_bytes(mhash if allow_model else other, "big")))
    n.chain.advance(n.params.governance_delay)
    for pid in pids:
        n.execute(pid)
    n.stake(n.proxy, R.ROLE_PROXY, 60 * TON)
    n.stake(n.workers["worker-a"], R.ROLE_WORKER, worker_stake)
    n.register_proxy(f"127.0.0.1:{proxy_port} 127.0.0.1:{proxy_port}")
    n.open_channel(n.proxy, n.workers["worker-a"], 2 * TON)
    key_file = tmp / "operator.key"
    key_file.write_text(n.workers["worker-a"].key.private_bytes_raw().hex())
    key_file.chmod(0o600)
    w = World(n, root, dev_dir, tmp / "chain.json", key_file, mhash, wimg, pimg)
    w.save()
    return w

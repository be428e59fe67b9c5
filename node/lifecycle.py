"""A whole job lifecycle on the embedded chain: every contract, every party, real signatures.

:class:`Network` sets up the cast (an owner, a treasury, a proxy, workers, a client, a watcher) and
gives each step of the network's life one method, built only from the wrappers. :func:`run_story`
plays the story `cocoon demo` narrates; the end-to-end tests play it and the unhappy lives with the
same methods. Every step checks its on-chain outcome and raises :class:`StepFailed` if a contract
did something other than expected.

Money moves by vouchers, as in production: before a job the client signs the previous total plus
the job's maximum cost; after the answer it signs the exact new total; the proxy pays the worker the
same way. Costs come from :mod:`node.payments.pricing` with the registry's prices and multipliers.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Optional

from pytoniq_core import Address

from wrappers import keys as K
from node.payments import vouchers as V
from wrappers import escrow as E
from wrappers import registry as R
from wrappers import reputation as P
from wrappers import stake as S
from wrappers.build import load_code
from wrappers.chain.contract import Instant
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider
from wrappers.chain.records import TxRecord
from node.payments.pricing import COEF_ONE, Usage, charge, max_cost
from node.payments.receipts import Receipt, content_hash
from wrappers import TON

DAY = 86400


class StepFailed(Exception):
    """A contract did not do what the step expected."""


def image_hash(label: str) -> int:
    return int.from_bytes(hashlib.sha256(label.encode()).digest(), "big")


WORKER_IMAGE, PROXY_IMAGE = image_hash("cocoon-worker-image:v1"), image_hash("cocoon-proxy-image:v1")
MODEL = image_hash("tiny-llama-2L-64@gguf")

STORY_PARAMS_ECONOMICS = R.Economics(price_per_token=50_000, worker_fee_per_token=40_000, prompt_mult=10_000,
                                     cached_mult=1_000, completion_mult=20_000, reasoning_mult=20_000,
                                     min_escrow_deposit=1 * TON, close_delay=3600)


@dataclass
class Party:
    name: str
    wallet: object
    key: object = None  # Ed25519 operator or payment key
    stake: Optional[Instant] = None  # its Stake
    coefficient: int = COEF_ONE


@dataclass
class Channel:
    """One payment channel and both sides' views of it."""
    escrow: Instant  # its Escrow
    signer: V.VoucherSigner       # the payer's side
    tracker: V.VoucherTracker     # the payee's side
    payer: Party
    payee: Party


@dataclass
class Job:
    job_id: int
    worker: str
    usage: Usage
    client_cost: int
    worker_fee: int
    authorized: int


@dataclass
class Ledger:
    jobs: list[Job] = field(default_factory=list)

    @property
    def client_total(self) -> int:
        return sum(j.client_cost for j in self.jobs)

    def worker_total(self, name: str) -> int:
        return sum(j.worker_fee for j in self.jobs if j.worker == name)


class Network:
    def __init__(self, lang: str = "tolk", log: Callable[[str], None] = lambda s: None,
                 economics: R.Economics = STORY_PARAMS_ECONOMICS, governance_delay: int = DAY):
        self.lang, self.log = lang, log
        self.chain = EmbeddedChain()
        self.txs: list[TxRecord] = []
        self.names: dict[str, str] = {}
        mk = lambda n: self._party(n)
        self.owner, self.dao, self.proxy, self.client, self.watcher = (
            mk(n) for n in ("owner", "treasury", "proxy", "client", "watcher"))
        self.workers = {n: mk(n) for n in ("worker-a", "worker-b")}
        self.codes = R.ChildCodes(S.stake_code(lang), E.escrow_code(lang), load_code("reputation", lang))
        self.params = R.NetworkParams(
            staking=R.Staking(treasury=self.dao.wallet.address, min_worker_stake=10 * TON,
                              min_proxy_stake=50 * TON, unbonding_period=7 * DAY, slash_bps=5_000,
                              reporter_bps=1_000),
            economics=economics, is_test=True, governance_delay=governance_delay, max_proxies=8)
        self.provider = EmbeddedProvider(self.chain)
        self.reg: Optional[Instant] = None  # the Registry
        self.channels: dict[tuple[str, str], Channel] = {}
        self.ledger = Ledger()
        self.next_job = 1
        self.start_balances: dict[str, int] = {}

    # ------------------------------------------------------------------------ bookkeeping
    def _party(self, name: str) -> Party:
        w = self.chain.treasury(name, balance=1_000 * TON)
        self.names[f"0:{w.address.hash_part.hex()}"] = name
        return Party(name, w, S.derive_operator_key(name))

    def _name(self, address: Address, label: str) -> None:
        self.names[f"{address.wc}:{address.hash_part.hex()}"] = label

    def _run(self, txs: list[TxRecord], target: Address, what: str, expect_ok: bool = True,
             code: Optional[int] = None) -> list[TxRecord]:
        self.txs += txs
        mine = [t for t in txs if t.account.hash_part == target.hash_part and not t.bounced]
        if not mine:
            raise StepFailed(f"{what}: the message never reached {target.to_str()}")
        ok = all(t.success for t in mine) if expect_ok else not mine[0].success
        if not ok or (code is not None and mine[0].exit_code != code):
            detail = "; ".join(t.describe() for t in txs)
            raise StepFailed(f"{what}: unexpected outcome ({detail})")
        return txs

    def parties(self) -> dict[str, Address]:
        """Every account the story touches, by name: wallets and contracts."""
        out = {p.name: p.wallet.address for p in (self.owner, self.dao, self.proxy, self.client, self.watcher,
                                                  *self.workers.values())}
        if self.reg:
            out["registry"] = self.reg.address
        for p in (self.proxy, *self.workers.values()):
            if p.stake:
                out[f"stake:{p.name}"] = p.stake.address
        for (a, b), ch in self.channels.items():
            out[f"escrow:{a}->{b}"] = ch.escrow.address
        for n, w in self.workers.items():
            if self.reg:
                out[f"reputation:{n}"] = P.reputation_address(self.codes.reputation, self.reg.address,
                                                              w.wallet.address)
        return out

    def balances(self) -> dict[str, int]:
        return {n: self.chain.balance(a) for n, a in self.parties().items()}

    # ------------------------------------------------------------------------ registry and governance
    def deploy(self) -> None:
        self.start_balances = self.balances()
        self.reg = Instant(R.Registry.from_init(self.provider, self.owner.wallet.address, self.params, self.codes,
                                                lang=self.lang))
        txs = self.reg.send_deploy(self.owner.wallet)
        self._name(self.reg.address, "registry")
        self.txs += txs
        if self.chain.state(self.reg.address)[0] != "active":
            raise StepFailed("the registry did not deploy")

    def allow(self, kind: str, h: int) -> int:
        pid = self.reg.read.proposals()[1]
        self._run(self.reg.send_propose(self.owner.wallet, R.action_add(kind, h)), self.reg.address, f"propose {kind}")
        return pid

    def execute(self, pid: int, who: Optional[Party] = None) -> None:
        self._run(self.reg.send_execute_proposal((who or self.watcher).wallet, pid), self.reg.address,
                  f"execute proposal #{pid}")

    def revoke(self, kind: str, h: int) -> None:
        self._run(self.reg.send_revoke(self.owner.wallet, kind, h), self.reg.address, f"revoke {kind}")

    def propose_params(self, params: R.NetworkParams) -> int:
        pid = self.reg.read.proposals()[1]
        self._run(self.reg.send_propose(self.owner.wallet, R.action_set_params(params)), self.reg.address,
                  "propose parameters")
        return pid

    # ------------------------------------------------------------------------ stakes
    def stake(self, p: Party, role: int, amount: int) -> None:
        p.stake = Instant(S.Stake.from_init(self.provider, self.reg.address, p.wallet.address, role,
                                            code=self.codes.stake))
        self._name(p.stake.address, f"stake:{p.name}")
        self._run(p.stake.send_deposit(p.wallet, amount + S.DEPOSIT_FEE), p.stake.address, f"{p.name} deposits")
        self._run(p.stake.send_set_operator(p.wallet, K.public_key_int(p.key)), p.stake.address,
                  f"{p.name} binds its operator key")

    def register_proxy(self, endpoint: str = "proxy.example:8443") -> None:
        self._run(self.proxy.stake.send_register_proxy(self.proxy.wallet, endpoint), self.reg.address,
                  "the proxy registers")
        if not self.reg.read.proxy(self.proxy.wallet.address).active:
            raise StepFailed("the registry does not list the proxy as active")

    def unbond(self, p: Party, amount: int) -> None:
        self._run(p.stake.send_unbond(p.wallet, amount), p.stake.address, f"{p.name} unbonds")

    def withdraw(self, p: Party) -> list[TxRecord]:
        return self._run(p.stake.send_withdraw(p.wallet), p.stake.address, f"{p.name} withdraws")

    def equivocation(self, p: Party, job_id: int) -> tuple[S.SignedStatement, S.SignedStatement]:
        """Two different receipts for the same job, both signed by the worker's key."""
        base = dict(worker_stake=p.stake.address, job_id=job_id, request_hash=content_hash("same request"),
                    coefficient=p.coefficient)
        a = Receipt(response_hash=content_hash("answer one"), usage=Usage(100, 50), **base).sign(p.key)
        b = Receipt(response_hash=content_hash("answer two"), usage=Usage(100, 500), **base).sign(p.key)
        return a, b

    def report_equivocation(self, p: Party, evidence, reporter: Optional[Party] = None) -> list[TxRecord]:
        reporter = reporter or self.watcher
        return self._run(p.stake.send_report_equivocation(reporter.wallet, *evidence),
                         p.stake.address, f"{reporter.name} reports {p.name}'s equivocation")

    # ------------------------------------------------------------------------ escrows
    def open_channel(self, payer: Party, payee: Party, amount: int) -> Channel:
        esc = Instant(E.Escrow.from_init(self.provider, self.reg.address, payer.wallet.address, payee.wallet.address,
                                         K.public_key_int(payer.key), code=self.codes.escrow))
        self._name(esc.address, f"escrow:{payer.name}->{payee.name}")
        self._run(esc.send_open(payer.wallet, amount, K.public_key_int(payee.key)), esc.address,
                  f"{payer.name} opens a channel to {payee.name}")
        if esc.read.channel().state != E.State.OPEN:
            raise StepFailed(f"the channel {payer.name}->{payee.name} did not open")
        if not esc.read.payee_key_is(payee.key.public_key()):
            raise StepFailed("the channel names another payee key")
        ch = Channel(esc, V.VoucherSigner(esc.address, payer.key),
                     V.VoucherTracker(esc.address, payer.key.public_key()), payer, payee)
        self.channels[(payer.name, payee.name)] = ch
        return ch

    def claim(self, payer: str, payee: str) -> int:
        """The payee claims with the latest voucher it holds; returns what it was paid."""
        ch = self.channels[(payer, payee)]
        before = ch.escrow.read.channel().claimed
        self._run(ch.escrow.send_claim(ch.payee.wallet, ch.tracker.latest), ch.escrow.address, f"{payee} claims")
        return ch.escrow.read.channel().claimed - before

    # ------------------------------------------------------------------------ jobs
    def run_job(self, worker: str, usage: Usage, max_tokens: int = 1024, client_signs_final: bool = True) -> Job:
        """One request: authorize the cap, route (or not), serve, receipt, settle both hops off chain."""
        e = self.reg.read.params().economics
        w = self.workers[worker]
        up, down = self.channels[("client", "proxy")], self.channels[("proxy", worker)]
        settled = self.ledger.client_total                      # what the client owes so far
        cap = max_cost(usage.prompt_tokens, max_tokens, w.coefficient, e)
        auth = up.signer.authorize_request(settled, cap)        # before serving: previous + max cost
        up.tracker.accept(auth)
        job_id = self.next_job
        self.next_job += 1
        if not self.reg.read.is_allowed("worker_image", WORKER_IMAGE):
            # the registry revoked the worker's image: the proxy does not route the request; the
            # client settles at the previous total, nobody pays for the job
            up.tracker.settle(up.signer.settle_request(settled, 0, cap), settled)
            job = Job(job_id, worker, Usage(0, 0), 0, 0, auth.amount)
            self.ledger.jobs.append(job)
            return job
        receipt = Receipt(w.stake.address, job_id, content_hash(f"request {job_id}"),
                          content_hash(f"answer {job_id}"), usage, w.coefficient).sign(w.key)
        if not receipt.verify(K.public_key_int(w.key)):
            raise StepFailed("the worker's receipt does not verify")
        ch = charge(Receipt.from_statement(receipt.statement).usage, w.coefficient, e)
        if ch.client_cost > cap:
            raise StepFailed("a job cost more than its authorization")
        paid = ch.client_cost
        if client_signs_final:
            up.tracker.settle(up.signer.settle_request(settled, ch.client_cost, cap), settled)
        else:
            paid = cap                                          # the proxy holds the cap and claims it
        down.tracker.accept(down.signer.pay(ch.worker_fee))
        job = Job(job_id, worker, usage, paid, ch.worker_fee, auth.amount)
        self.ledger.jobs.append(job)
        return job

    # ------------------------------------------------------------------------ reputation
    def report(self, worker: str, succeeded: int, failed: int = 0, timed_out: int = 0, tokens: int = 0,
               latency_ms: int = 800) -> None:
        w = self.workers[worker]
        rep = P.build_report(self.reg.address, self.proxy.wallet.address, w.wallet.address, self.chain.now,
                             succeeded=succeeded, failed=failed, timed_out=timed_out, tokens=tokens,
                             latency_ms=latency_ms if succeeded else 0)
        addr = P.reputation_address(self.codes.reputation, self.reg.address, w.wallet.address)
        self._name(addr, f"reputation:{worker}")
        self._run(self.reg.send(self.proxy.wallet, P.signed_submission(rep, self.proxy.key), P.SUBMIT_VALUE),
                  addr, f"the proxy reports on {worker}")


def ready(lang: str, jobs: int = 0, log: Callable[[str], None] = lambda s: None,
          client_deposit: int = 5 * TON) -> Network:
    """Deployed, governed, staked, registered, channels open: the point where requests flow."""
    n = Network(lang, log)
    n.deploy()
    pids = [n.allow("worker_image", WORKER_IMAGE), n.allow("proxy_image", PROXY_IMAGE), n.allow("model", MODEL)]
    n.chain.advance(n.params.governance_delay)
    for pid in pids:
        n.execute(pid)
    n.stake(n.proxy, R.ROLE_PROXY, 60 * TON)
    for w in n.workers.values():
        n.stake(w, R.ROLE_WORKER, 20 * TON)
    n.register_proxy()
    n.open_channel(n.client, n.proxy, client_deposit)
    for w in n.workers.values():
        n.open_channel(n.proxy, w, 2 * TON)
    for i in range(jobs):
        n.run_job("worker-a", job_usage(i))
    return n


# ---------------------------------------------------------------------------- the story
@dataclass
class StoryResult:
    network: Network
    start: dict[str, int]
    end: dict[str, int]
    fees: int
    claimed: dict[str, int]
    slashed: int
    reporter_reward: int

    @property
    def changes(self) -> dict[str, int]:
        return {k: self.end.get(k, 0) - self.start.get(k, 0) for k in sorted(set(self.start) | set(self.end))}


def job_usage(i: int) -> Usage:
    """A deterministic spread of request shapes: some cached prompt, some reasoning."""
    prompt = 300 + (i * 137) % 700
    completion = 80 + (i * 211) % 600
    return Usage(prompt, completion, cached_tokens=(prompt // 4) if i % 3 == 0 else 0,
                 reasoning_tokens=(completion // 3) if i % 4 == 1 else 0)


def run_story(lang: str = "tolk", log: Callable[[str], None] = lambda s: None, jobs: int = 24) -> StoryResult:
    """The demo's story, step by step; ``log`` receives the narration."""
    n = Network(lang, log)
    step = iter(range(1, 100))

    def say(text: str) -> None:
        log(f"[{next(step)}] {text}")

    fees0 = n.chain.fees_collected()
    say(f"The owner deploys the registry ({lang} build) with the stake, escrow and reputation codes.")
    n.deploy()
    say("The owner proposes a worker image, a proxy image and a model; anyone executes them a day later.")
    pids = [n.allow("worker_image", WORKER_IMAGE), n.allow("proxy_image", PROXY_IMAGE), n.allow("model", MODEL)]
    n.chain.advance(n.params.governance_delay)
    for pid in pids:
        n.execute(pid)
    say("The proxy stakes 60 TON and binds its operator key; two workers stake 20 TON each.")
    n.stake(n.proxy, R.ROLE_PROXY, 60 * TON)
    for w in n.workers.values():
        n.stake(w, R.ROLE_WORKER, 20 * TON)
    say("The proxy registers through its stake contract; the registry lists it as active.")
    n.register_proxy()
    say("The client opens a 5 TON channel to the proxy; the proxy opens 2 TON channels to each worker.")
    n.open_channel(n.client, n.proxy, 5 * TON)
    for w in n.workers.values():
        n.open_channel(n.proxy, w, 2 * TON)
    say(f"{jobs} requests run: each is authorized at its maximum cost, served, receipted by the worker "
        "and settled at its exact cost on both hops.")
    for i in range(jobs):
        n.run_job("worker-a" if i % 2 == 0 else "worker-b", job_usage(i))
    led = n.ledger
    log(f"    client owes {led.client_total / TON:.6f} TON; workers earned "
        f"{led.worker_total('worker-a') / TON:.6f} and {led.worker_total('worker-b') / TON:.6f} TON")
    say("Claims settle on chain: the proxy claims from the client, each worker from the proxy.")
    claimed = {"proxy": n.claim("client", "proxy")}
    for name in n.workers:
        claimed[name] = n.claim("proxy", name)
    say("The proxy reports each worker's epoch to its on-chain reputation record.")
    for name in n.workers:
        mine = [j for j in led.jobs if j.worker == name]
        n.report(name, succeeded=len(mine), tokens=sum(j.usage.prompt_tokens + j.usage.completion_tokens for j in mine))
    say("worker-b leaves: it unbonds its whole stake and withdraws after the unbonding period.")
    n.unbond(n.workers["worker-b"], 20 * TON)
    n.chain.advance(n.params.staking.unbonding_period)
    n.withdraw(n.workers["worker-b"])
    say("worker-a signs two different receipts for the same job; a watcher submits both and is rewarded.")
    wa = n.workers["worker-a"]
    before = wa.stake.read.state()
    n.report_equivocation(wa, n.equivocation(wa, job_id=led.jobs[0].job_id))
    after = wa.stake.read.state()
    if not after.jailed:
        raise StepFailed("the equivocating worker was not jailed")
    slashed = (before.active + before.unbonding) - (after.active + after.unbonding)
    reward = slashed * n.params.staking.reporter_bps // 10_000
    say("The client closes its channel: after the close delay anyone finishes and the rest returns.")
    up = n.channels[("client", "proxy")]
    n._run(up.escrow.request_close(n.client.wallet), up.escrow.address, "the client asks to close")
    n.chain.advance(n.params.economics.close_delay)
    n._run(up.escrow.finish(n.watcher.wallet), up.escrow.address, "the channel is finished")
    end = n.balances()
    fees = n.chain.fees_collected() - fees0
    if n.chain.money_leak() != 0:
        raise StepFailed("money appeared or vanished")
    return StoryResult(n, n.start_balances, end, fees, claimed, slashed, reward)

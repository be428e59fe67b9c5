"""The story ``cocoon demo`` tells, on a fresh devnet: a real question answered by SmolLM2 through the
client gateway, an attested proxy and an attested worker, paid by signed vouchers, with a checked
receipt, claims on chain, a reputation report and money that adds up.

Nothing here is staged: every line comes from the processes of :mod:`node.devnet` (their answers,
their state folders, ``cocoon`` commands an auditor would run) or from the chain.
"""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

from pytoniq_core import Address

from . import money
from .network import WORKER_CLAIM_FEE_SHARE, Devnet
from .procs import DevnetError, Reporter, cocoon_argv

QUESTION = "In one or two sentences: why is the sky blue?"
DEMO_DIR = Path(".cocoon/demo")


class Story:
    def __init__(self, echo: Callable[[str], None], bold: Callable[[str], str] = lambda s: s,
                 write: Optional[Callable[[str], None]] = None):
        self.echo, self.bold = echo, bold
        self.write = write or (lambda s: echo(s))
        self.t0 = time.monotonic()
        self.facts: dict = {}

    def section(self, title: str) -> None:
        self.echo("")
        self.echo(self.bold(f"{title}  [{time.monotonic() - self.t0:.0f} s]"))

    def line(self, text: str) -> None:
        self.echo("  " + text)


def _start(d: Devnet, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cocoon_argv() + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(d.dir))


def _run(d: Devnet, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cocoon_argv() + args, capture_output=True, text=True, timeout=timeout, cwd=str(d.dir))


def run(story: Story, directory: Path = DEMO_DIR, workers: int = 2, lang: str = "tolk", question: str = QUESTION,
        keep: bool = False, max_tokens: int = 60) -> dict:
    """Play the story; stops every process it started unless ``keep``. Returns the facts it showed."""
    directory = Path(directory)
    old = Devnet(directory, Reporter(story.line))
    if old.state.procs:
        old.down(quiet=True)
    if directory.exists():
        if any(directory.iterdir()) and not (directory / "devnet.json").exists():
            raise DevnetError(f"{directory} is not empty and holds no devnet; the demo wipes its folder, "
                              "so pass --dir with a new or a demo folder")
        shutil.rmtree(directory)  # a fresh chain every time: the story starts from nothing
    d = Devnet(directory, Reporter(story.line))
    story.section("1. The network comes up: the owner deploys and allows the images and the model; providers stake")
    try:
        d.up(workers=workers, lang=lang, ports="free", epoch=3, refresh=1.0)
        _attestation(story, d)
        answer = _question(story, d, question, max_tokens)
        _receipt(story, d, answer)
        _vouchers(story, d)
        _claims(story, d)
        _reputation(story, d)
        _money(story, d)
    finally:
        if not keep:
            story.echo("")
            story.echo(f"stopping the {len(d.state.procs)} processes the demo started...")
            d.down(quiet=True)
    story.facts["seconds"] = time.monotonic() - story.t0
    return story.facts


# ---------------------------------------------------------------------------------------------- steps
def _attestation(story: Story, d: Devnet) -> None:
    st = d.state
    story.section("2. Attestation: the proxy's and the workers' TEEs are checked against the registry")
    snap = asyncio.run(_snapshot(st))
    story.line(f"the registry's allow-lists, read from the chain: {snap.name}")
    r = _run(d, ["attest", "verify", f"127.0.0.1:{st.ports['clients']}", "--role", "proxy", "--allow-simulated",
                 str(d.trust), "--registry-snapshot", str(snap), "--json"])
    try:
        v = json.loads(r.stdout)
    except ValueError:
        raise DevnetError(f"cocoon attest verify printed no verdict: {r.stderr.strip()[-300:]}") from None
    checks = v.get("checks", [])
    passed = sum(1 for c in checks if c.get("result") == "pass")
    story.line(f"proxy  127.0.0.1:{st.ports['clients']}: `cocoon attest verify` "
               f"{'PASSED' if r.returncode == 0 else 'FAILED'} ({passed}/{len(checks)} checks), image "
               f"{st.hashes['proxy-image'][:16]}… allowed, simulated TDX (test registry)")
    story.facts["proxy_attested"] = r.returncode == 0
    log = Path(st.proc("proxy").log).read_text(errors="replace")
    for w in st.workers():
        owner = st.parties[w.name]["address"]
        ok = f"worker {owner} admitted" in log
        story.line(f"{w.name}: mutual RA-TLS with the proxy {'verified' if ok else 'NOT verified'}: image "
                   f"{w.extra['image']} ({st.hashes[w.extra['image']][:16]}…), model {st.hashes['model'][:16]}…, "
                   "stake active and bound to the key in its certificate")
    if r.returncode != 0:
        raise DevnetError("the proxy's attestation failed:\n" + r.stdout[-1500:])


async def _snapshot(st) -> Path:
    """The registry's allow-lists as `cocoon attest verify --registry-snapshot` reads them."""
    from node.chain import open_network
    from wrappers import registry as R

    net = await open_network(st.chain_url)
    try:
        reg = net.contract(R.Registry, Address(st.registry))
        trust, params, version = await reg.get_trust(), await reg.get_params(), await reg.get_version()
    finally:
        await net.close(save=False)
    hexes = lambda d: sorted(f"{h:064x}" for h in d)  # noqa: E731
    path = Path(st.dir) / "registry-snapshot.json"
    path.write_text(json.dumps({"worker_image_hashes": hexes(trust["worker_images"]),
                                "proxy_image_hashes": hexes(trust["proxy_images"]),
                                "model_hashes": hexes(trust["models"]), "is_test": params.is_test,
                                "version": version}, indent=2))
    return path


def _question(story: Story, d: Devnet, question: str, max_tokens: int) -> dict:
    try:
        from openai import OpenAI
    except ImportError:
        raise DevnetError("the demo asks its question with the openai package: pip install openai") from None
    st = d.state
    story.section("3. A question, answered by SmolLM2 through the client gateway, the proxy and a worker")
    story.line(f"from openai import OpenAI; OpenAI(base_url=\"{st.base_url}\", api_key=\"devnet\")")
    story.line(f"user: {question}")
    client = OpenAI(base_url=st.base_url, api_key="devnet", max_retries=2, timeout=120)
    t0 = time.monotonic()
    first = None
    text, cocoon = [], None
    story.write("  SmolLM2: ")
    stream = client.chat.completions.create(model=st.model_name, messages=[{"role": "user", "content": question}],
                                            max_tokens=max_tokens, temperature=0.2, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        extra = chunk.model_extra or {}
        if extra.get("cocoon"):
            cocoon = extra["cocoon"]
        for c in chunk.choices:
            piece = c.delta.content or ""
            if piece:
                first = first or time.monotonic()
                text.append(piece)
                story.write(piece)
    story.write("\n")
    elapsed = time.monotonic() - t0
    if cocoon is None:
        raise DevnetError("the answer carried no receipt (no `cocoon` field in its last chunk)")
    usage = cocoon["usage"]
    n = usage.get("completion_tokens", 0)
    gen = max(1e-6, elapsed - ((first or t0) - t0))
    story.line(f"{n} tokens in {elapsed:.1f} s (first after {((first or t0) - t0) * 1000:.0f} ms, {n / gen:.0f} tokens/s); "
               f"cost {money.ton(cocoon['cost'])} TON; job {cocoon['job_id'][:16]}…")
    cert = d.dir / "answer-worker.der"
    cert.write_bytes(base64.b64decode(cocoon["worker_cert"]))
    # the worker's certificate and the receipt are checked at once: two auditors' commands, in parallel
    receipt = _start(d, ["receipt", "verify", cocoon["job_id"], "--state", str(d.dir / "client"), "--network",
                         st.chain_url, "--allow-simulated", str(d.trust)])
    r = _run(d, ["attest", "verify", str(cert), "--role", "worker", "--allow-simulated", str(d.trust),
                 "--registry-snapshot", str(d.dir / "registry-snapshot.json"), "--json"])
    cocoon["_receipt_check"] = receipt
    story.line(f"the answering worker's certificate (in the answer): `cocoon attest verify` "
               f"{'PASSED' if r.returncode == 0 else 'FAILED'}: its key signed the receipt below")
    story.facts.update(answer="".join(text), usage=usage, cost=cocoon["cost"], job_id=cocoon["job_id"],
                       worker_attested=r.returncode == 0)
    return cocoon


def _receipt(story: Story, d: Devnet, cocoon: dict) -> None:
    story.section("4. The receipt, checked as an auditor would: `cocoon receipt verify`")
    proc = cocoon.pop("_receipt_check")
    out, err = proc.communicate(timeout=120)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    for ln in (r.stdout or r.stderr).strip().splitlines()[:14]:
        story.line(ln)
    story.facts["receipt_ok"] = r.returncode == 0
    if r.returncode != 0:
        raise DevnetError("the receipt did not verify")


def _status(d: Devnet, *args: str) -> dict:
    """What `cocoon client status` / `cocoon worker status` show, read from the state folder in this
    process (the services may be running: SQLite in WAL mode lets a reader in)."""
    kind, folder = args[0], Path(args[-1])
    if kind == "client":
        from node.client.gateway import status_from_store
        from node.client.store import Store

        store = Store(folder / "client.sqlite")
        try:
            return status_from_store(store)
        finally:
            getattr(store, "close", lambda: None)()
    from node.worker.store import Store as WorkerStore

    ws = WorkerStore(folder / "worker.sqlite")
    try:
        t = ws.totals()
        return dict(t, paid=sum(a for _, _, a in ws.vouchers()), claimed=ws.claimed())
    finally:
        ws.close()


def _vouchers(story: Story, d: Devnet) -> None:
    story.section("5. Vouchers: each payer signs what it owes, off chain")
    c = _status(d, "client", "status", "--state", str(d.dir / "client"))
    story.line(f"client → proxy: the gateway signed a cumulative voucher for {money.ton(c['spent'])} TON on channel "
               f"{(c['channel'] or '')[:20]}… (deposit {money.ton(c['deposited'])} TON)")
    paid = 0
    for w in d.state.workers():
        s = _status(d, "worker", "status", "--state-dir", w.state_dir)
        paid += s["paid"]
        story.line(f"proxy → {w.name}: the proxy signed {money.ton(s['paid'])} TON for {s['jobs']} job(s) "
                   f"(earned {money.ton(s['earned'])})")
    story.line(f"the proxy keeps the difference: {money.ton(c['spent'] - paid)} TON")
    story.facts.update(client_signed=c["spent"], worker_signed=paid)


def _claims(story: Story, d: Devnet) -> None:
    st = d.state
    story.section("6. Claims: payees take what the vouchers say, on chain")
    books = asyncio.run(money.read_books(st))
    paid = {w.name: _status(d, "worker", "status", "--state-dir", w.state_dir)["paid"] for w in st.workers()}
    for name, amount in paid.items():
        if amount <= 0:
            continue
        from wrappers.escrow import CLAIM_FEE

        if not (amount > CLAIM_FEE and CLAIM_FEE <= amount * WORKER_CLAIM_FEE_SHARE):
            story.line(f"{name} holds a voucher for {money.ton(amount)} TON and waits: a claim's fee "
                       f"({money.ton(CLAIM_FEE)} TON) would be more than {WORKER_CLAIM_FEE_SHARE:.0%} of it")
            paid[name] = 0
            continue

        def claimed(name=name) -> bool:
            ch = money.channel_of(asyncio.run(money.read_books(st)), f"proxy → {name}")
            return ch is not None and ch.claimed >= amount
        d.say.wait(f"{name} to claim {money.ton(amount)} TON (it claims when the fee is at most "
                   f"{WORKER_CLAIM_FEE_SHARE:.0%} of the claim)", claimed, 30, every=0.5)
        story.line(f"{name} claimed {money.ton(amount)} TON from its channel")
    ch = books.channels[0] if books.channels and books.channels[0].name == "client → proxy" else None
    if ch is None:
        raise DevnetError("the client has no channel on chain")
    r = _run(d, ["client", "close", "--state", str(d.dir / "client"), "--mnemonic-file",
                 st.parties["client"]["mnemonic"], "--network", st.chain_url])
    if r.returncode != 0:
        raise DevnetError(f"cocoon client close failed: {r.stderr.strip()[-300:]}")
    story.line("the client asks to close its channel (`cocoon client close`): the proxy may still claim during "
               "the close delay")
    owed = _status(d, "client", "status", "--state", str(d.dir / "client"))["spent"]

    def proxy_claimed() -> bool:
        c = money.channel_of(asyncio.run(money.read_books(st)), "client → proxy")
        return c is not None and c.claimed >= owed
    d.say.wait(f"the proxy to claim {money.ton(owed)} TON", proxy_claimed, 30, every=0.5)
    story.line(f"the proxy saw the close notice and claimed {money.ton(owed)} TON at once, before the notice ends")
    delay = asyncio.run(_close_delay(st))
    asyncio.run(_advance(st, delay + 1))
    story.line(f"time moves {delay + 1} s forward (the chain server's /dev/advance): the close delay is over")
    r = _run(d, ["client", "close", "--finish", "--state", str(d.dir / "client"), "--mnemonic-file",
                 st.parties["client"]["mnemonic"], "--network", st.chain_url])
    story.line("after the delay the client finishes the close: the rest of its deposit returns to its wallet"
               if r.returncode == 0 else f"finish failed: {r.stderr.strip()[-200:]}")
    story.facts.update(proxy_claimed=owed, workers_claimed=sum(paid.values()))


async def _close_delay(st) -> int:
    from node.chain import open_network
    from wrappers import registry as R

    net = await open_network(st.chain_url)
    try:
        return (await net.contract(R.Registry, Address(st.registry)).get_params()).economics.close_delay
    finally:
        await net.close(save=False)


async def _advance(st, seconds: int) -> None:
    from node.chain import open_network

    net = await open_network(st.chain_url)
    try:
        await net.advance(seconds)
    finally:
        await net.close(save=False)


def _reputation(story: Story, d: Devnet) -> None:
    st = d.state
    story.section("7. Reputation: the proxy reports each worker's jobs, signed by its operator key")

    async def totals(owner: str):
        from node.chain import open_network
        from wrappers import registry as R
        from wrappers import reputation as P

        net = await open_network(st.chain_url)
        try:
            addr = await net.contract(R.Registry, Address(st.registry)).get_reputation_address(Address(owner))
            rec = net.contract(P.Reputation, addr)
            if not await rec.is_deployed():
                return None
            return await rec.get_totals(), await rec.get_score()
        finally:
            await net.close(save=False)

    served = [w for w in st.workers() if _status(d, "worker", "status", "--state-dir", w.state_dir)["jobs"] > 0]
    for w in served:
        owner = st.parties[w.name]["address"]
        got: dict = {}

        def landed() -> bool:
            got["r"] = asyncio.run(totals(owner))
            return got["r"] is not None and got["r"][0].reports > 0
        d.say.wait(f"the proxy's report on {w.name}", landed, 30, every=0.5)
        t, score = got["r"]
        story.line(f"{w.name}: {t.reports} report(s) on chain: {t.succeeded} job(s) succeeded, {t.failed} failed, "
                   f"{t.tokens} tokens; score {score / 100:.2f} %")
        story.facts.setdefault("reports", {})[w.name] = t.reports


def _money(story: Story, d: Devnet) -> None:
    st = d.state
    story.section("8. The money, read from the chain (TON)")
    books = asyncio.run(money.read_books(st))
    for ln in money.table(books):
        story.echo(ln)
    story.facts["adds_up"] = books.adds_up
    story.line("")
    story.line(f"the client paid {money.ton(story.facts.get('proxy_claimed', 0))} TON for its answer; the proxy "
               f"signed {money.ton(story.facts.get('worker_signed', 0))} TON to the workers, of which "
               f"{money.ton(story.facts.get('workers_claimed', 0))} is claimed; stakes stay locked; fees are what "
               "the chain's validators took")
    if not books.adds_up:
        raise DevnetError("the money does not add up")

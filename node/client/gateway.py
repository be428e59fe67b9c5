"""The gateway's serving logic: pick and attest a proxy, keep the channel funded, pay each answer
exactly once its receipt verifies (docs/PROTOCOL.md §4–§6).

Per request, on the channel to the chosen proxy:

1. the body is validated locally (400 before anything is signed); ``max_tokens`` is set to the
   model's ``max_output_tokens`` when the caller gave none; the bytes sent are what the receipt's
   request hash must cover;
2. its maximum cost is ``node.payments.pricing.request_max_cost``; the budget is checked (402 when spent)
   and the escrow topped up within it if the deposit is short;
3. the voucher for settled + the maximum costs of the requests in flight is recorded in SQLite, then
   sent with the request;
4. the answer's receipt is checked (:mod:`node.payments.receipts`) before the caller sees the end of
   it; a verified answer is paid with the exact new total, the settled total alone (``POST
   /v1/cocoon/settle``), a failed one is not paid, is reported to the caller and its cost is recorded
   as disputed;
5. a request whose answer is not read to its end (the caller hung up, the proxy's stream broke) stays
   in flight: the proxy may still bill it (it cancels the worker and bills what was delivered), so the
   gateway asks the proxy for the record of its request id and pays that like any answer.

The books of one channel change under a lock, and one :class:`LiveChannel` holds all that is in
flight on it, so every voucher covers settled + the maximum costs of all requests in flight, as the
proxy's reservations do; the requests themselves run concurrently. Settles go out after the answer,
in order. A settle only names what is owed: the proxy keeps it as the exact total it claims, and
never lowers the authorization requests are admitted against with it, since a request authorized
earlier may reach the proxy after the settle (requests travel over several connections).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq_core import Address

from node import fastjson
from node.chain import CocoonError
from node.openai import headers as H
from node.openai import sse
from node.openai.errors import APIError, payment_required, unavailable
from node.openai.protocol import ENDPOINT_PATHS, delivered, parse_request
from node.tee.collateral import PccsCollateral
from node.tee.ratls import Identity, PeerVerifier, RaTlsError
from node.tee.registry_source import SnapshotSource
from node.tee.simulated import DevTrust
from node.tee.verify import Policy
from node.payments import vouchers as V
from wrappers import escrow as E
from wrappers import keys as K
from wrappers import stake as S
from node.payments.pricing import request_max_cost

from .chain import ClientChain, RegistryView, payment_key, raw
from .metrics import Metrics
from .proxies import ProxyConnection, candidates, describe_failure, with_clients_address
from node.payments.receipts import Evidence, EvidenceError, ReceiptVerdict, ReceiptVerifier, view_record
from .settings import Settings
from . import store as SQL
from .store import ChannelRow, Store

log = logging.getLogger(__name__)
RESUME_WAIT = 60.0   # seconds a restarted gateway waits for jobs it started before to end at the proxy


@dataclass
class LiveChannel:
    """A channel in use: its row, its payment key and what is in flight on it."""
    row: ChannelRow
    address: Address
    key: Ed25519PrivateKey
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)          # admissions and the books
    settle_lock: asyncio.Lock = field(default_factory=asyncio.Lock)   # settles go out one at a time
    inflight: dict[str, int] = field(default_factory=dict)   # request id -> maximum cost
    resumed: bool = False

    @property
    def settled(self) -> int:
        return self.row.settled

    def voucher(self, amount: int) -> str:
        v = V.Voucher.sign(self.key, self.address, amount)
        return H.format_voucher(v.amount, v.signature)


class StakeCache:
    """Workers' stake readings, reused for ``ttl`` seconds; one older than half of that is read again in
    the background, so an answer waits for the chain only when a reading has expired."""

    def __init__(self, chain: ClientChain, ttl: float):
        self.chain, self.ttl = chain, ttl
        self._d: dict[str, tuple[float, Optional[S.StakeState]]] = {}
        self._reading: dict[str, asyncio.Task] = {}

    async def __call__(self, address: Address) -> Optional[S.StakeState]:
        k = raw(address)
        hit = self._d.get(k)
        if hit is not None:
            age = time.monotonic() - hit[0]
            if age < self.ttl:
                if age > self.ttl / 2 and k not in self._reading:
                    self._reading[k] = asyncio.get_running_loop().create_task(self._ahead(k, address))
                return hit[1]
        return await self._read(k, address)

    async def _read(self, k: str, address: Address) -> Optional[S.StakeState]:
        t = time.monotonic()
        st = await self.chain.stake(address)
        self._d[k] = (t, st)
        return st

    async def _ahead(self, k: str, address: Address) -> None:
        try:
            await self._read(k, address)
        except Exception as e:   # the reading in hand stays until it expires
            log.warning("cannot read the stake %s ahead of time: %s", k, e)
        finally:
            self._reading.pop(k, None)


class Gateway:
    def __init__(self, settings: Settings, store: Store, chain: ClientChain, metrics: Metrics):
        self.settings, self.store, self.chain, self.metrics = settings, store, chain, metrics
        self.view: Optional[RegistryView] = None
        self.snapshots: Optional[SnapshotSource] = None
        self.proxy: Optional[ProxyConnection] = None
        self.channel: Optional[LiveChannel] = None
        self.excluded: dict[int, str] = {}      # owner hash -> why this proxy is not used
        self.last_error: Optional[str] = None
        self._select_lock = asyncio.Lock()
        self._channel_lock = asyncio.Lock()
        self._live: dict[str, LiveChannel] = {}   # channel address -> its one LiveChannel
        self._identity = Identity.create(None)
        self.wallet_address: Optional[Address] = None
        self._tasks: set[asyncio.Task] = set()
        self.receipts: Optional[ReceiptVerifier] = None

    # ------------------------------------------------------------------ start and refresh
    async def start(self) -> None:
        s = self.settings
        self.view = await self.chain.read_registry()

        async def fetch():
            self.view = await self.chain.read_registry()
            self._on_registry()
            return self.view.snapshot

        self.snapshots = SnapshotSource(fetch=fetch, interval=s.refresh)
        await self.snapshots.start()
        dev = DevTrust.load(s.dev_trust) if s.dev_trust else None
        collateral = PccsCollateral(s.pccs_url, cache_dir=str(s.state_dir)) if s.pccs_url else None
        tcb = frozenset(s.accept_tcb)
        self.proxy_base = PeerVerifier(Policy("proxy", accepted_tcb=tcb, dev_trust=dev), self.snapshots, collateral)
        workers = PeerVerifier(Policy("worker", accepted_tcb=tcb, dev_trust=dev), self.snapshots, collateral)
        self.stakes = StakeCache(self.chain, s.stake_ttl)
        self.receipts = ReceiptVerifier(workers=workers, registry=self.chain.registry, stake_code=self.view.codes.stake,
                                        economics=self.view.params.economics, max_coefficient=s.max_coefficient,
                                        stake_lookup=self.stakes, cert_ttl=min(60.0, s.refresh))
        self.wallet_address = await self.chain.wallet_address()
        self.store.set_meta("wallet", raw(self.wallet_address))
        self.store.set_meta("registry", raw(self.chain.registry))
        self.store.set_meta("network", s.network)
        self.store.set_meta("budget", str(s.budget))
        self.store.set_meta("listen", f"http://{s.host}:{s.port}")
        for k, why in json.loads(self.store.get_meta("excluded") or "{}").items():
            self.excluded[int(k)] = why
        try:
            await self.ensure_proxy()
        except APIError as e:
            log.warning("no proxy yet: %s", e.message)

    def _on_registry(self) -> None:
        """After each refresh: new prices, and stop using a proxy that left the registry."""
        if self.view is None or self.receipts is None:
            return
        self.receipts.economics = self.view.params.economics
        self.receipts.stake_code = self.view.codes.stake
        if self.proxy is not None and self._registered(self.proxy.cand.info.owner_hash) is None:
            log.warning("proxy %s is no longer registered and active; switching", raw(self.proxy.cand.owner))
            self.excluded.setdefault(self.proxy.cand.info.owner_hash, "no longer registered")
            asyncio.get_running_loop().create_task(self._drop_proxy())

    def _registered(self, owner_hash: int):
        for p in self.view.proxies if self.view else ():
            if p.owner_hash == owner_hash and p.active:
                return p
        return None

    async def _drop_proxy(self) -> None:
        p, self.proxy, self.channel = self.proxy, None, None
        if p is not None:
            await p.close()

    async def stop(self) -> None:
        if self._tasks:   # settles and recoveries; one cut short is taken up again when the channel resumes
            _, pending = await asyncio.wait(list(self._tasks), timeout=10)
            for t in pending:
                t.cancel()
        await self._drop_proxy()
        if self.snapshots is not None:
            await self.snapshots.stop()

    # ------------------------------------------------------------------ proxy choice
    async def ensure_proxy(self) -> ProxyConnection:
        if self.proxy is not None:
            return self.proxy
        async with self._select_lock:
            if self.proxy is not None:
                return self.proxy
            wanted = self.settings.proxy
            cands = [c for c in candidates(self.view.proxies if self.view else [], wanted)
                     if wanted != "auto" or c.info.owner_hash not in self.excluded]
            if self.settings.proxy_endpoint and cands:
                cands = [with_clients_address(cands[0], self.settings.proxy_endpoint)]
            if not cands:
                what = "no registered, active proxy" if wanted == "auto" else f"the proxy {wanted} is not registered and active"
                why = "; ".join(self.excluded.values())
                raise unavailable(f"{what}{f' (excluded: {why})' if why else ''}")
            problems = []
            reachable: list[tuple[float, ProxyConnection]] = []
            for c in cands[:5]:
                conn = ProxyConnection(c, self.proxy_base, lambda h=c.info.owner_hash: self._registered(h),
                                       self._identity, self.settings.request_timeout)
                try:
                    models = await conn.fetch_models()
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError) as e:
                    problems.append(f"{c.endpoint.clients_url}: {describe_failure(e)}")
                    log.warning("proxy %s at %s passed over: %s", raw(c.owner), c.endpoint.clients_url,
                                describe_failure(e))
                    self.metrics.proxy_failures.labels("attestation" if isinstance(e, RaTlsError) else "unreachable").inc()
                    await conn.close()
                    continue
                reachable.append((self._price(models), conn))
                if len(reachable) >= 3:
                    break
            if not reachable:
                self.last_error = "; ".join(problems)
                raise unavailable(f"no proxy could be used: {self.last_error}")
            reachable.sort(key=lambda pc: pc[0])
            self.proxy = reachable[0][1]
            for _, other in reachable[1:]:
                await other.close()
            self.last_error = None
            self.store.set_meta("proxy", json.dumps({"owner": raw(self.proxy.cand.owner),
                                                     "url": self.proxy.cand.endpoint.clients_url}))
            log.info("using proxy %s at %s", raw(self.proxy.cand.owner), self.proxy.cand.endpoint.clients_url)
            return self.proxy

    @staticmethod
    def _price(models: dict[str, dict]) -> float:
        """A proxy's price: the lowest coefficient it offers (1.0 when it names none)."""
        best = float("inf")
        for m in models.values():
            coefs = (m.get("cocoon") or {}).get("coefficients") or []
            for c in coefs if isinstance(coefs, list) else []:
                if isinstance(c, (int, float)):
                    best = min(best, c)
        return best if best != float("inf") else 1000.0

    def exclude(self, owner_hash: int, why: str) -> None:
        self.excluded[owner_hash] = why
        self.store.set_meta("excluded", json.dumps({str(k): v for k, v in self.excluded.items()}))

    # ------------------------------------------------------------------ the channel
    async def ensure_channel(self, conn: ProxyConnection, need: int) -> LiveChannel:
        """The live channel to ``conn``'s proxy, opened (and resumed) if needed. There is one
        :class:`LiveChannel` per channel, so every request on it shares one view of what is in flight."""
        owner = raw(conn.cand.owner)
        ch = self.channel
        if ch is not None and ch.resumed and ch.row.proxy_owner == owner:
            return ch
        async with self._channel_lock:
            ch = self.channel
            if ch is None or ch.row.proxy_owner != owner:
                row = self.store.live_channel(owner)
                if row is None:
                    row = await self._open(conn, need)
                ch = self._live.get(row.address)
                if ch is None:
                    ch = LiveChannel(row, Address(row.address), payment_key(self.chain.keys, row.counter))
                    self._live[row.address] = ch
                self.channel = ch
            if not ch.resumed:
                await self._resume(conn, ch)
            return ch

    async def _open(self, conn: ProxyConnection, need: int) -> ChannelRow:
        s, view = self.settings, self.view
        remaining = s.budget - self.store.spent_total()
        minimum = view.params.economics.min_escrow_deposit
        amount = min(remaining, max(s.deposit_step, need, minimum))
        if amount < max(need, minimum):
            raise payment_required(f"the budget has {remaining / 1e9:g} TON left; opening a channel needs "
                                   f"{max(need, minimum) / 1e9:g} TON (the registry's minimum deposit or this "
                                   "request's maximum cost)", required=max(need, minimum), settled=0)
        counter = self.store.next_counter()
        key = payment_key(self.chain.keys, counter)
        payer_key = K.public_key_int(key)
        payee, payee_key = conn.cand.owner, conn.cand.info.operator_key
        code = view.codes.escrow
        if code is None:
            raise unavailable("the registry has no escrow code")
        addr = E.escrow_address(code, self.chain.registry, self.wallet_address, payee, payer_key)
        # the row exists before any money moves, so a crash during the open loses nothing
        self.store.add_channel(counter, raw(addr), raw(payee), f"{payee_key:064x}",
                              conn.cand.endpoint.clients_url)
        try:
            await self.chain.open_escrow(code, payee, payee_key, payer_key, amount, timeout=s.open_timeout,
                                         on_progress=lambda m: log.info("%s", m))
        except CocoonError as e:
            raise unavailable(f"cannot open the escrow: {e}") from None
        ch = await self.chain.escrow(addr)
        self.store.update_channel(raw(addr), deposited=ch.deposited if ch else amount)
        self.metrics.chain_ops.labels("open").inc()
        return self.store.channel(raw(addr))  # type: ignore[return-value]

    async def _resume(self, conn: ProxyConnection, ch: LiveChannel) -> None:
        """Take up where the proxy is: finish the answers a crash cut off from their rows, re-send
        unacknowledged settles, then adopt the proxy's settled total if the voucher it holds is our own
        signature (and not for a disputed answer)."""
        if not await self._finish_unrecorded(conn, ch):
            return
        for request_id, final in self.store.settling(ch.row.address):
            ok = await self._post_settle(conn, ch, request_id, final, quiet=True)
            self.store.submit(SQL.mark_op(request_id, {True: "settled", False: "superseded", None: "settling"}[ok]))
        # nothing of this process is in flight yet: a reservation the proxy reports is a job from before
        # a restart that is still ending; its cost lands in the proxy's total when it ends, so wait for it
        deadline = time.monotonic() + RESUME_WAIT
        while True:
            try:
                async with conn.http.get("/v1/cocoon/channel", params={"channel": ch.row.address}) as r:
                    body = await r.json(content_type=None) if r.status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                log.warning("cannot read the channel from the proxy: %s", e)
                return
            if not (isinstance(body, dict) and body.get("reserved")) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        ch.resumed = True
        if not isinstance(body, dict) or not body.get("voucher"):
            return
        try:
            v = body["voucher"]
            if isinstance(v, str):
                amount, sig = H.parse_voucher(v)
            else:
                amount, sig = int(v["amount"]), bytes.fromhex(v["signature"])
            theirs = int(body.get("settled", 0))
        except (ValueError, KeyError, TypeError):
            log.warning("the proxy's channel record is unreadable: %r", body)
            return
        if not V.Voucher(ch.address, amount, sig).verify(K.public_key_int(ch.key)):
            log.warning("the proxy holds a voucher that is not this gateway's signature; its totals are ignored")
            return
        owed = theirs - ch.row.disputed
        if owed > ch.row.settled and theirs <= amount:
            log.info("resuming channel %s at the proxy's settled total %d (ours was %d)", ch.row.address, owed,
                     ch.row.settled)
            self.store.update_channel(ch.row.address, settled=owed)
        self.store.update_channel(ch.row.address, signed_max=max(ch.row.signed_max, amount))
        ch.row = self.store.channel(ch.row.address)  # type: ignore[assignment]

    async def _finish_unrecorded(self, conn: ProxyConnection, ch: LiveChannel) -> bool:
        """Requests authorized before a crash whose answers have no row (the process died before it
        wrote them, maybe after returning them): each is paid from the proxy's record of its request id,
        once its receipt verifies against the request hash kept, exactly as it would have been; one
        without a record was never billed. Done before the proxy's total is adopted, which counts them.
        False when the proxy cannot be reached (the rows wait for the next resume)."""
        rows = self.store.unfinished(ch.row.address)
        for request_id, endpoint, model, stream, request_hash, max_cost in rows:
            req = SimpleNamespace(model=model, stream=bool(stream))
            probe = fastjson.dumps({"model": model, "max_tokens": 1, "stream": bool(stream), **(
                {"messages": [{"role": "user", "content": "record"}]} if endpoint == "chat" else {"prompt": "record"})})
            job = _Job(self, conn, ch, None, endpoint, req, probe, request_id, max_cost, time.perf_counter())
            job.request_hash = bytes.fromhex(request_hash)
            job.authorized = asyncio.get_running_loop().create_future()
            job.authorized.set_result(None)               # its row is on disk
            ch.inflight[request_id] = max_cost
            if not await self.recover(job, at_resume=True):
                return False
            if not job.ended:    # the proxy kept it in progress: never counted here, so never paid twice later
                self.store.submit(SQL.mark_op(request_id, "unresolved"))
        if rows:
            await self.store.caught_up()
            log.info("finished %d request(s) a restart cut off from their rows", len(rows))
        return True

    async def _fund(self, ch: LiveChannel, need_total: int) -> None:
        """Top the escrow up so it holds ``need_total`` in all, within the budget; else 402."""
        s = self.settings
        row = ch.row
        if need_total <= row.deposited:
            return
        spent = self.store.spent_total(besides=row.address) + row.settled
        remaining = s.budget - spent
        room = remaining - (row.deposited - row.settled)       # what the budget still allows to deposit
        short = need_total - row.deposited
        amount = min(room, max(short, s.deposit_step))
        if amount < short:
            raise payment_required(
                f"the budget is spent: {spent / 1e9:g} of {s.budget / 1e9:g} TON paid; this "
                f"request may cost up to {(need_total - row.settled - sum(ch.inflight.values())) / 1e9:g} TON",
                required=need_total, settled=row.settled)
        try:
            await self.chain.top_up(ch.address, amount)
        except CocoonError as e:
            raise unavailable(f"cannot top up the escrow: {e}") from None
        c = await self.chain.escrow(ch.address)
        row.deposited = c.deposited if c else row.deposited + amount
        self.store.update_channel(row.address, deposited=row.deposited)
        self.metrics.chain_ops.labels("top_up").inc()

    # ------------------------------------------------------------------ requests
    async def models(self) -> dict:
        conn = await self.ensure_proxy()
        try:
            models = await conn.fetch_models()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            await self._proxy_failed(conn, e)
            raise unavailable(f"the proxy did not list its models: {describe_failure(e)}") from None
        return {"object": "list", "data": list(models.values())}

    async def _proxy_failed(self, conn: ProxyConnection, e: BaseException) -> None:
        if self.proxy is conn:
            if isinstance(e, RaTlsError) and self.settings.proxy == "auto":
                self.exclude(conn.cand.info.owner_hash, f"attestation failed: {e.verdict.reason()}")
            await self._drop_proxy()

    async def handle(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        t0 = time.perf_counter()
        body = await request.read()
        req = parse_request(endpoint, body)
        conn = await self.ensure_proxy()
        model = conn.models.get(req.model)
        if model is None:
            await conn.fetch_models()
            model = conn.models.get(req.model)
        if model is None:
            raise APIError(404, f"The model '{req.model}' does not exist or the proxy does not serve it.",
                           param="model", code="model_not_found")
        sent, doc = body, req.raw
        if req.sampling.max_tokens is None:
            mot = (model.get("cocoon") or {}).get("max_output_tokens", model.get("max_output_tokens"))
            if not isinstance(mot, int) or mot < 1:
                raise APIError(400, "max_tokens is required: the proxy names no max_output_tokens for this model",
                               param="max_tokens", code="missing_required_parameter")
            doc = dict(req.raw)
            doc["max_tokens"] = mot
            sent = fastjson.dumps(doc)
        economics = self.view.params.economics
        max_cost = request_max_cost(sent, self.settings.max_coefficient, economics, doc)   # parsed once
        request_id = uuid.uuid4().hex
        while True:
            ch = await self.ensure_channel(conn, max_cost)
            async with ch.lock:
                if self.store.channel_state(ch.row.address) != "open":   # closed by `cocoon client close`: open another
                    if self.channel is ch:
                        self.channel = None
                    continue
                voucher, authorization = await self._authorize(ch, endpoint, request_id, max_cost, req, sent)
            break
        # The request goes out without the lock: the proxy keeps the highest voucher it was sent, and
        # each one covers every request in flight, so admissions need no order among themselves.
        headers = {H.CHANNEL: ch.row.address, H.VOUCHER: voucher, H.REQUEST_ID: request_id,
                   H.MAX_COEFFICIENT: str(self.settings.max_coefficient), "Content-Type": "application/json"}
        self.metrics.overhead.labels("authorize").observe(time.perf_counter() - t0)
        job = _Job(self, conn, ch, request, endpoint, req, sent, request_id, max_cost, t0)
        # the authorization row is queued once the request has gone out (waking the writer before would
        # cost the first token a thread switch) and commits while the proxy answers
        asyncio.get_running_loop().call_soon(job.record, authorization)
        try:
            try:
                job.resp = await conn.http.post(ENDPOINT_PATHS[endpoint], data=sent, headers=headers)
            except (aiohttp.ClientConnectorError, RaTlsError) as e:   # it never reached the proxy
                ch.inflight.pop(request_id, None)
                job.ended = True
                job.mark("failed")
                await self._proxy_failed(conn, e)
                self.metrics.requests.labels(endpoint, "unavailable").inc()
                raise unavailable(f"the proxy could not be reached: {describe_failure(e)}") from None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:   # it may have: its record says
                job.recover()
                self.metrics.requests.labels(endpoint, "unavailable").inc()
                raise unavailable(f"the proxy did not answer: {describe_failure(e)}; what it billed for this "
                                  "request is paid once its receipt verifies") from None
            if job.resp.status != 200:
                return await job.refused()
            if req.stream:
                return await job.stream()
            return await job.plain()
        finally:
            if job.resp is not None:
                job.resp.release()
            job.recover()   # a request that ended neither paid nor released stays in flight until its record says

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recover(self, job: "_Job", at_resume: bool = False) -> bool:
        """A request whose answer was not read to its end here (the caller hung up, the proxy's stream
        broke): it stays in flight, since the proxy may still bill it, until the proxy's record of its
        request id says what was billed; that is then paid like any answer once its receipt verifies.
        The record is asked for with a zero voucher, which never starts a new job (PROTOCOL.md §4).
        ``at_resume``: a request from before a restart; waits at most RESUME_WAIT for a job in
        progress, and returns False at once (the request still in flight) when the proxy cannot be
        reached."""
        ch = job.ch
        headers = {H.CHANNEL: ch.row.address, H.VOUCHER: ch.voucher(0), H.REQUEST_ID: job.request_id,
                   H.MAX_COEFFICIENT: str(self.settings.max_coefficient), "Content-Type": "application/json"}
        deadline = time.monotonic() + (0 if at_resume else self.settings.request_timeout) + RESUME_WAIT
        delay, server_errors = 0.2, 0
        while True:
            status, body, why = None, b"", "the proxy is not in use"
            conn = job.conn
            if conn.http.closed:   # the proxy was dropped meanwhile; its connection may be open again
                p = self.proxy
                conn = p if p is not None and raw(p.cand.owner) == ch.row.proxy_owner else None
            try:
                if conn is not None:
                    async with conn.http.post(ENDPOINT_PATHS[job.endpoint], data=job.sent, headers=headers) as r:
                        status, body = r.status, await r.read()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                why = describe_failure(e)
            if status is None and at_resume:
                log.warning("request %s from before the restart: the proxy cannot be reached (%s); asked again at "
                            "the next resume", job.request_id, why)
                ch.inflight.pop(job.request_id, None)
                return False
            if status == 200:
                break
            if status is not None:
                why = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
                in_progress = status == 409 and b'"in_progress"' in body
                server_errors += status >= 500
                if not in_progress and (status < 500 or server_errors >= 3):
                    # no record (the proxy never admitted it or freed the id), or one of an unbilled error
                    log.info("request %s was not billed (%s)", job.request_id, why)
                    await self.release(job)
                    return True
            if time.monotonic() > deadline:
                log.warning("request %s: the proxy's record could not be read (%s); it is no longer counted in "
                            "flight", job.request_id, why)
                async with ch.lock:
                    ch.inflight.pop(job.request_id, None)
                return True
            await asyncio.sleep(delay)
            delay = min(2 * delay, 5.0)
        try:
            cocoon, content, calls = _record(job.endpoint, job.req.stream, body)
        except (ValueError, UnicodeDecodeError) as e:
            log.warning("request %s: the proxy's record is unreadable (%s); not paid", job.request_id, e)
            cocoon, content, calls = None, "", []
        if cocoon is None:
            await self.release(job)
            return True
        ev, verdict, why = await job._verify(cocoon, content, calls)
        vd = await self.settle(job, verdict, ev)
        self.metrics.requests.labels(job.endpoint, "recovered").inc()
        log.info("request %s ended without being read to its end; its record: %s, paid %d", job.request_id,
                 "verified" if vd["ok"] else f"receipt failed ({why or '; '.join(vd.get('failed', []))})", vd["paid"])
        return True

    async def _authorize(self, ch: LiveChannel, endpoint: str, request_id: str, max_cost: int, req: Any,
                         sent: bytes) -> tuple[str, SQL.Op]:
        """Under the channel's lock: check the budget, fund the escrow, sign settled + everything in flight +
        this request's maximum cost; (the voucher header's value, the write that records it)."""
        reserved = sum(ch.inflight.values())
        spent = self.store.spent_total(besides=ch.row.address) + ch.settled
        if spent + reserved + max_cost > self.settings.budget:
            self.metrics.requests.labels(endpoint, "budget").inc()
            raise payment_required(
                f"the budget is spent: {spent / 1e9:g} of {self.settings.budget / 1e9:g} TON paid, and this "
                f"request may cost up to {max_cost / 1e9:g} TON", required=ch.settled + reserved + max_cost,
                settled=ch.settled)
        authorized = ch.settled + reserved + max_cost
        await self._fund(ch, authorized)
        voucher = ch.voucher(authorized)
        ch.inflight[request_id] = max_cost
        return voucher, SQL.authorize_op(request_id, ch.row.address, ch.settled, max_cost, authorized, endpoint,
                                         req.model, req.stream, hashlib.sha256(sent).digest())

    # ------------------------------------------------------------------ paying
    async def settle(self, job: "_Job", verdict: Optional[ReceiptVerdict], ev: Optional[Evidence]) -> dict:
        """Pay for a verified answer or record why not; returns the ``verification`` object."""
        ch, conn = job.ch, job.conn
        ok = verdict is not None and verdict.ok and ev is not None
        problems = []
        if ok and ev.cost > job.max_cost:
            ok, problems = False, [f"the proxy charges {ev.cost}, above the {job.max_cost} authorized"]
        vd = verdict.to_dict() if verdict is not None else {"ok": False, "failed": ["receipt_format"], "checks": []}
        if problems:
            vd["ok"] = False
            vd["failed"] = vd.get("failed", []) + ["price"]
            vd["checks"] = vd.get("checks", []) + [{"name": "price", "result": "FAIL", "detail": problems[0]}]
        cost = ev.cost if ev is not None else 0
        vd["paid"] = cost if ok else 0
        receipt = view = None
        if ev is not None:
            record = ev.to_json()
            view = self._view_key()
            record["registry_view"] = view[0]
            receipt = dict(request_id=job.request_id, channel=ch.row.address, proxy_owner=ch.row.proxy_owner,
                           endpoint=job.endpoint, model=job.req.model, job_id=f"{ev.job_id:064x}", ok=ok,
                           paid=vd["paid"], prompt_tokens=ev.usage.prompt_tokens,
                           completion_tokens=ev.usage.completion_tokens, record=record, verdict=vd)
        if job.authorized is not None:   # the row a restart recovers this answer from is durable
            try:
                await job.authorized
            except Exception as e:
                log.error("request %s: its authorization row was not written (%s)", job.request_id, e)
        job.ended = True
        if self.settings.failpoint == "answer-unrecorded":   # crash tests: the answer goes out, its row never
            return self._die_after_answer(vd)
        async with ch.lock:   # the books in memory first; their row is written behind them, in order
            ch.inflight.pop(job.request_id, None)
            if ok:
                ch.row.settled += cost
                # the exact total: what this gateway owes, nothing for the requests still in flight (each
                # of them carried its own authorization, which the proxy keeps; PROTOCOL.md §4)
                final = ch.row.settled
                durable = self.store.behind(SQL.finish_op(job.request_id, "settling", cost, ch.row.address,
                                                         ch.row.settled, final, receipt=receipt, view=view))
                self.spawn(self._settle_in_order(conn, ch, job.request_id, final, durable))
            else:
                ch.row.disputed += cost
                self.store.behind(SQL.finish_op(job.request_id, "unpaid", 0, ch.row.address, ch.row.settled,
                                                None, cost, receipt=receipt, view=view))
        # the receipt and the total commit right behind the answer; the settle goes out once they are durable
        if ev is not None:
            u = ev.usage
            self.metrics.tokens.labels("prompt").inc(u.prompt_tokens)
            self.metrics.tokens.labels("completion").inc(u.completion_tokens)
        self.metrics.receipts.labels("verified" if ok else "failed").inc()
        if ok:
            self.metrics.spent.inc(cost)
        else:
            reason = "; ".join(problems) or (verdict.reason() if verdict else "no receipt")
            log.warning("receipt of request %s failed, not paid: %s", job.request_id, reason)
            if self.settings.proxy == "auto" and ev is not None and cost > 0:
                self.exclude(conn.cand.info.owner_hash, f"billed {cost} for an answer whose receipt failed")
                await self._drop_proxy()
        return vd

    def _die_after_answer(self, vd: dict) -> dict:
        import os
        import signal

        asyncio.get_running_loop().call_later(0.3, os.kill, os.getpid(), signal.SIGKILL)
        return vd

    def _view_key(self) -> tuple[str, str]:
        """(hash, JSON) of the registry view receipts are checked against now; computed once per view."""
        v = self.view
        key = (v.snapshot, v.params.economics, v.codes.stake.hash if v.codes.stake is not None else None)
        if getattr(self, "_view_at", None) != key:
            self._view_at = key
            self._view = SQL.view_key(view_record(self.chain.registry, v.snapshot, v.params.economics, v.codes.stake))
        return self._view

    async def _settle_in_order(self, conn: ProxyConnection, ch: LiveChannel, request_id: str, final: int,
                               durable: Optional[asyncio.Future] = None) -> None:
        async with ch.settle_lock:
            if durable is not None:
                try:
                    await durable
                except Exception:
                    return
            acked = await self._post_settle(conn, ch, request_id, final, quiet=True)
            if acked is not None:   # a lost mark only re-sends a settle after a restart
                self.store.submit(SQL.mark_op(request_id, "settled" if acked else "superseded"))

    async def release(self, job: "_Job") -> None:
        """A request that ended without an answer to pay: nothing is owed, so nothing is settled (the
        exact total is unchanged; what the proxy billed stays what the answers cost)."""
        ch = job.ch
        job.ended = True
        async with ch.lock:
            ch.inflight.pop(job.request_id, None)
            job.mark("refused")

    async def _post_settle(self, conn: ProxyConnection, ch: LiveChannel, request_id: str, amount: int,
                           quiet: bool = False) -> Optional[bool]:
        """True: the proxy holds this total; False: it refused it; None: it could not be reached."""
        if conn.http.closed:   # the proxy was dropped: the next settle (or a restart) covers this total
            return None
        body = {"channel": ch.row.address, "request_id": request_id, "voucher": ch.voucher(amount)}
        try:
            async with conn.http.post("/v1/cocoon/settle", json=body) as r:
                if r.status == 200:
                    return True
                text, result = (await r.text())[:300], False
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            text, result = describe_failure(e), None
        if not quiet or result is None:
            log.warning("the proxy did not take the settle of %s: %s", request_id, text)
        return result

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        return status_from_store(self.store, self.settings.budget, proxy_error=self.last_error)


def status_from_store(store: Store, budget: Optional[int] = None, proxy_error: Optional[str] = None) -> dict:
    """What ``cocoon client status`` shows, from the state folder alone."""
    if budget is None:
        budget = int(store.get_meta("budget") or 0)
    chans = store.channels()
    live = [c for c in chans if c.state != "closed"]
    spent = store.spent_total()
    stats = store.receipt_stats()
    counts = store.request_counts()
    proxy = json.loads(store.get_meta("proxy") or "null")
    return {
        "wallet": store.get_meta("wallet"), "registry": store.get_meta("registry"),
        "network": store.get_meta("network"), "listen": store.get_meta("listen"),
        "proxy": proxy, "proxy_error": proxy_error,
        "excluded_proxies": json.loads(store.get_meta("excluded") or "{}"),
        "channels": [{"address": c.address, "proxy_owner": c.proxy_owner, "state": c.state, "deposited": c.deposited,
                      "settled": c.settled, "signed_max": c.signed_max, "disputed": c.disputed,
                      "payment_key_index": c.counter} for c in chans],
        "channel": live[-1].address if live else None,
        "deposited": sum(c.deposited for c in live), "spent": spent, "budget": budget,
        "remaining_budget": max(0, budget - spent),
        "requests": sum(counts.values()), "requests_by_state": counts,
        "tokens": {"prompt": stats["prompt_tokens"], "completion": stats["completion_tokens"]},
        "receipts": stats["receipts"], "receipts_verified": stats["verified"], "receipts_failed": stats["failed"],
    }


def _record(endpoint: str, stream: bool, body: bytes) -> tuple[Optional[dict], str, list]:
    """(cocoon object or None, content, tool calls) of a request's record as the proxy replays it: the
    whole SSE transcript of a stream, or the JSON answer."""
    if not stream:
        answer = fastjson.loads(body)
        if not isinstance(answer, dict):
            raise ValueError("the answer is not an object")
        cocoon = answer.pop("cocoon", None)
        content, calls = delivered(endpoint, answer)
        return cocoon, content, calls
    chunks, cocoon = [], None
    for payload in sse.SSEDecoder().feed(body + b"\n\n"):
        obj = sse.parse_event(payload)
        if obj == sse.DONE:
            break
        if "cocoon" in obj:
            cocoon = obj["cocoon"]
            break
        if "error" not in obj:
            chunks.append(obj)
    content, calls = delivered(endpoint, chunks)
    return cocoon, content, calls


class _SSEResponse(web.StreamResponse):
    """A stream whose headers leave with its first event (as aiohttp's ``web.Response`` does): one
    write, so one wake-up of the caller, for the first token."""
    _send_headers_immediately = False


class _Job:
    """One forwarded request and its answer. It ends paid (:meth:`Gateway.settle`) or released
    (:meth:`Gateway.release`); one that cannot end here goes to :meth:`Gateway.recover`."""

    def __init__(self, gw: Gateway, conn: ProxyConnection, ch: LiveChannel, request: web.Request, endpoint: str,
                 req: Any, sent: bytes, request_id: str, max_cost: int, t0: float):
        self.gw, self.conn, self.ch, self.request, self.endpoint = gw, conn, ch, request, endpoint
        self.req, self.sent, self.request_id, self.max_cost, self.t0 = req, sent, request_id, max_cost, t0
        self.resp: Optional[aiohttp.ClientResponse] = None
        self.authorized: Optional[asyncio.Future] = None   # the authorization row, durable when done
        self.request_hash: Optional[bytes] = None           # set when ``sent`` is not the body sent (a recovery)
        self.ended = False        # paid or released: no longer in flight
        self.recovering = False
        self.gone = False         # the caller hung up

    def record(self, op: SQL.Op) -> None:
        """Queue the authorization row (it commits while the proxy answers)."""
        self.authorized = self.gw.store.behind(op)

    def mark(self, state: str, deferred: bool = False) -> None:
        """Note how the request ended (a lazy write), after its authorization row, which it updates."""
        op = SQL.mark_op(self.request_id, state)
        if self.authorized is None and not deferred:   # the row is queued at the loop's next turn: follow it
            asyncio.get_running_loop().call_soon(self.mark, state, True)
        elif self.authorized is None or self.authorized.done():
            self.gw.store.submit(op)
        else:
            self.authorized.add_done_callback(lambda _f: self.gw.store.submit(op))

    def recover(self) -> None:
        if not (self.ended or self.recovering):
            self.recovering = True
            self.gw.spawn(self.gw.recover(self))

    async def refused(self) -> web.Response:
        """The proxy refused (4xx/5xx before any answer): pass its error on, Retry-After included."""
        status = self.resp.status
        try:
            body = json.loads(await self.resp.read())
        except (ValueError, aiohttp.ClientError):
            body = None
        err = APIError.from_dict(status, body)
        if "Retry-After" in self.resp.headers:
            err.headers["Retry-After"] = self.resp.headers["Retry-After"]
        if status == 402:
            c = err.extra.get("cocoon") or {}
            if isinstance(c, dict) and isinstance(c.get("settled"), int) and c["settled"] > self.ch.settled:
                err.message += (f" (the proxy has billed {c['settled']} nanoTON on this channel, this gateway has "
                                f"paid {self.ch.settled}; answers whose receipts failed are not paid, and answers "
                                "still on their way are paid when they arrive)")
        await self.gw.release(self)
        self.gw.metrics.requests.labels(self.endpoint, f"http_{status}").inc()
        raise err

    async def _verify(self, cocoon: Any, content: str, calls: list) -> tuple[Optional[Evidence], Optional[ReceiptVerdict], Optional[str]]:
        t = time.perf_counter()
        try:
            ev = Evidence.from_cocoon(cocoon, self.sent, content, calls)
            ev.max_cost = self.max_cost
            if self.request_hash is not None:
                ev.request_hash = self.request_hash
        except EvidenceError as e:
            return None, None, str(e)
        verdict = await self.gw.receipts.verify(ev, cap=self.max_cost)
        self.gw.metrics.overhead.labels("verify").observe(time.perf_counter() - t)
        return ev, verdict, None

    def _cocoon(self, cocoon: Any, vd: dict) -> dict:
        out = dict(cocoon) if isinstance(cocoon, dict) else {}
        out["verification"] = vd
        return out

    def _failure(self, vd: dict, why: Optional[str]) -> APIError:
        reason = why or "; ".join(f"{c['name']}: {c['detail']}" for c in vd.get("checks", []) if c.get("result") == "FAIL")
        return APIError(502, f"The answer's receipt failed verification, so it was not paid for: {reason}",
                        type="receipt_invalid", code="receipt_invalid", extra={"cocoon": {"verification": vd}})

    async def plain(self) -> web.Response:
        try:
            data = await self.resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            self.recover()
            raise unavailable(f"the proxy's answer broke off: {describe_failure(e)}; what it billed for this request "
                              "is paid once its receipt verifies") from None
        try:
            answer = fastjson.loads(data)
            if not isinstance(answer, dict):
                raise ValueError("not an object")
        except ValueError as e:
            await self.gw.release(self)
            raise unavailable(f"the proxy's answer was unreadable: {e}") from None
        cocoon = answer.pop("cocoon", None)
        content, calls = delivered(self.endpoint, answer)
        ev, verdict, why = await self._verify(cocoon, content, calls)
        vd = await self.gw.settle(self, verdict, ev)
        self.gw.metrics.latency.labels(self.endpoint).observe(time.perf_counter() - self.t0)
        if not vd["ok"]:
            self.gw.metrics.requests.labels(self.endpoint, "receipt_failed").inc()
            err = self._failure(vd, why)
            err.extra["cocoon"] = self._cocoon(cocoon, vd)
            raise err
        self.gw.metrics.requests.labels(self.endpoint, "ok").inc()
        answer["cocoon"] = self._cocoon(cocoon, vd)
        return web.Response(body=fastjson.dumps(answer), content_type="application/json")

    async def _send(self, out: web.StreamResponse, data: bytes) -> bool:
        """Write to the caller; False once it has hung up (aiohttp raises ClientConnectionResetError,
        a ConnectionError, for a closed transport)."""
        if self.gone:
            return False
        try:
            await out.write(data)
            return True
        except (ConnectionError, RuntimeError):
            self.gone = True
            return False

    async def _receipt(self, out: web.StreamResponse, obj: dict, chunks: list) -> None:
        """The stream's last chunk: verify its receipt, pay, then pass it on and end the stream."""
        cocoon = obj.pop("cocoon")
        content, calls = delivered(self.endpoint, chunks)
        ev, verdict, why = await self._verify(cocoon, content, calls)
        vd = await self.gw.settle(self, verdict, ev)
        obj["cocoon"] = self._cocoon(cocoon, vd)
        if not self.req.include_usage:
            obj.pop("usage", None)
        if vd["ok"]:
            self.gw.metrics.requests.labels(self.endpoint, "ok").inc()
            self.gw.metrics.latency.labels(self.endpoint).observe(time.perf_counter() - self.t0)
            ending = sse.DONE_EVENT
        else:
            self.gw.metrics.requests.labels(self.endpoint, "receipt_failed").inc()
            ending = sse.error_event(self._failure(vd, why))
        await self._send(out, sse.event(obj) + ending)

    async def stream(self) -> web.StreamResponse:
        out = _SSEResponse(status=200, headers=sse.HEADERS)
        await out.prepare(self.request)
        decoder = sse.SSEDecoder()
        chunks: list[dict] = []
        first, finished, broke, error_sent = True, False, None, False
        try:
            async for data in self.resp.content.iter_any():
                for payload in decoder.feed(data):
                    obj = sse.parse_event(payload)
                    if obj == sse.DONE:
                        finished = True
                        break
                    if self.ended:      # after the receipt nothing more is expected
                        continue
                    if "cocoon" in obj:
                        await self._receipt(out, obj, chunks)
                        continue
                    if "error" in obj:  # passed on; a receipt for what was delivered may still follow
                        error_sent = await self._send(out, sse.event(payload))
                        continue
                    chunks.append(obj)
                    if first:
                        self.gw.metrics.first_token.labels(self.endpoint).observe(time.perf_counter() - self.t0)
                        first = False
                    if not await self._send(out, sse.event(payload)):
                        break
                if finished or self.gone:
                    break
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            broke = describe_failure(e)
        if self.ended:     # paid or refused with its receipt: the proxy's connection is reused if it ended well
            return out
        # no receipt read: the proxy may still bill this request (it cancels the worker when its client
        # goes away, and bills what was delivered), so it stays in flight until its record says
        self.resp.close()
        self.recover()
        if self.gone:
            self.gw.metrics.requests.labels(self.endpoint, "caller_gone").inc()
            return out
        self.gw.metrics.requests.labels(self.endpoint, "stream_error").inc()
        if broke is not None or not error_sent:
            why = f"the proxy's stream broke: {broke}" if broke else "the proxy's stream ended without a receipt"
            await self._send(out, sse.error_event(unavailable(f"{why}; what it billed for this request is paid only "
                                                              "once its receipt verifies")))
        return out

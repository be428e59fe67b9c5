"""The proxy's state and serving logic: start-up checks, client requests, worker pay.

:class:`ProxyCore` holds everything one proxy process has: settings, the ledger, the chain view, the
registry snapshot source, the RA-TLS identity and verifiers, the worker pool and the metrics. The
HTTP routes (:mod:`.app`) are thin: they call the methods here. Every error a client can cause is an
:class:`~node.openai.errors.APIError` with a 4xx status; only the proxy's own failures are 5xx.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

from aiohttp import web
from pytoniq_core import Address, Cell

from node import fastjson
from node.chain import CocoonError, keys_from_seed, open_network
from node.link import frames as F
from node.openai import errors as OE
from node.openai import headers as H
from node.openai import sse
from node.openai.protocol import ENDPOINT_PATHS, delivered, parse_request
from node.payments.pricing import COEF_ONE, charge, request_max_cost, usage_to_openai
from node.payments.receipts import Receipt, content_hash, response_hash
from node.payments.vouchers import Voucher
from node.tee.providers import ConfigfsTsmProvider, SimulatedProvider
from node.tee.ratls import Identity, PeerVerifier
from node.tee.registry_source import SnapshotSource
from node.tee.simulated import DevRoot, SimulatedTdx, default_measurements, load_measurements
from node.tee.verify import Policy
from wrappers import escrow as E
from wrappers import keys as K
from wrappers import stake as S

from . import routing
from .chainview import ChainView, ClientChannel, raw
from .ledger import Conflict, Ledger, PayDue, PaymentRequired
from .metrics import Metrics
from .settings import ProxySettings
from .workers import LINK_LOST, WorkerLink, WorkerPool

log = logging.getLogger(__name__)

CORE: "web.AppKey[ProxyCore]" = web.AppKey("cocoon_proxy_core", object)  # type: ignore[arg-type]
RECEIPT_WAIT = 30.0        # seconds to wait for a receipt after the answer (or a cancel)
VERIFIED_CACHE = 4096       # vouchers remembered as verified
CHANNEL_TTL = 15.0         # seconds a client channel's chain state is trusted before re-reading


CLIENT_ERRORS = frozenset({400, 404, 413, 415, 422})   # a worker's answer that is the request's fault


async def _next_item(q: asyncio.Queue, timeout: float):
    """The next frame of a job: at once when one is queued (no timer task), else waited for up to
    ``timeout`` seconds (asyncio.TimeoutError)."""
    if not q.empty():
        return q.get_nowait()
    async with asyncio.timeout(timeout):
        return await q.get()


def worker_side(status: int) -> bool:
    """A worker's error that is not the client's: its queue is full (429), the proxy owes it too much
    (402), or it failed (5xx). Such a job goes to another worker, or the client gets 429/503."""
    return status >= 400 and status not in CLIENT_ERRORS


class StartupError(Exception):
    """A start-up check failed; the text says which and what to do."""


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    request_id: str
    max_cost: int
    settled_before: int


@dataclass
class Outcome:
    """How a job ended, as the serving loop saw it."""
    kind: str                      # receipt | error | lost | timeout
    receipt: Optional[F.ReceiptFrame] = None
    result: Optional[F.Result] = None


class ProxyCore:
    def __init__(self, settings: ProxySettings):
        self.s = settings
        self.metrics = Metrics()
        self.pool = WorkerPool()
        self.ledger: Optional[Ledger] = None
        self.chain: Optional[ChainView] = None
        self.snapshots: Optional[SnapshotSource] = None
        self.identity: Optional[Identity] = None
        self.client_verifier: Optional[PeerVerifier] = None
        self.worker_verifier: Optional[PeerVerifier] = None
        self.operator = K.signing_key(settings.operator_seed)
        self.operator_public = K.public_key_int(self.operator)
        self.owner_raw = ""
        self.image_hash: Optional[bytes] = None
        self.channels: dict[str, ClientChannel] = {}
        self.waiters: dict[tuple[str, str], asyncio.Event] = {}
        self.verified: dict[tuple, bool] = {}     # vouchers whose signature verified (bounded, oldest out)
        self.net = None
        self.started_at = time.time()

    # ------------------------------------------------------------------------ start and stop
    async def start(self) -> None:
        s = self.s
        self.ledger = Ledger(s.ledger_path)
        try:
            self.net = await open_network(s.network, api_key=s.api_key)
        except CocoonError as e:
            raise StartupError(str(e)) from None
        wallet_keys = keys_from_seed(s.wallet_private[:32])
        try:
            wallet = await self.net.wallet(wallet_keys, s.wallet_version)
        except CocoonError as e:
            raise StartupError(f"the hot wallet: {e}") from None
        owner = Address(s.owner) if s.owner else wallet.address
        self.owner_raw = raw(owner)
        try:
            registry = Address(s.registry)
        except Exception:
            raise StartupError(f"{s.registry!r} is not a registry address") from None
        self.chain = ChainView(self.net, registry, owner, wallet, self.operator_public)
        try:
            await self.chain.load()
        except CocoonError as e:
            raise StartupError(f"cannot read the registry {s.registry}: {e}") from None
        if self.chain.codes is None or self.chain.codes.escrow is None or self.chain.codes.stake is None:
            raise StartupError("the registry has no child codes yet; deploy it completely first (`cocoon deploy`)")
        self.snapshots = SnapshotSource(fetch=self.chain.snapshot, interval=s.refresh)
        try:
            await self.snapshots.start()
        except CocoonError as e:
            raise StartupError(f"cannot read the registry's trust lists: {e}") from None
        self.identity = await asyncio.to_thread(self._make_identity)
        await self._check_registration()
        dev_trust = DevRoot.load(s.dev_root).trust() if s.dev_root else None
        collateral = None
        if s.pccs_url:
            from node.tee.collateral import PccsCollateral

            collateral = PccsCollateral(s.pccs_url, cache_dir=str(s.state_dir))
        self.worker_verifier = PeerVerifier(Policy(role="worker", dev_trust=dev_trust), self.snapshots, collateral)
        self.client_verifier = PeerVerifier(Policy(role="client", dev_trust=dev_trust), self.snapshots, collateral)
        self.snapshots.add_listener(self._on_snapshot)
        recovered = await self.ledger.recover()
        if recovered["aborted_jobs"]:
            log.warning("%d jobs were running when the proxy stopped; they were never answered and are not billed",
                        recovered["aborted_jobs"])
        await self.reconcile_claims()

    def _make_identity(self) -> Identity:
        s = self.s
        if s.tee == "simulated":
            if not s.dev_root:
                raise StartupError("a simulated TEE needs --dev-root (from `cocoon attest dev-root`)")
            try:
                root = DevRoot.load(s.dev_root)
                meas = load_measurements(s.measurements) if s.measurements else default_measurements(s.image)
            except (OSError, ValueError) as e:
                raise StartupError(str(e)) from None
            provider = SimulatedProvider(SimulatedTdx(root, meas))
        elif s.tee == "tdx":
            provider = ConfigfsTsmProvider()
            if not provider.available():
                raise StartupError("no TDX quote provider (configfs-tsm) on this machine; use --tee simulated on a "
                                   "test network")
        else:
            raise StartupError(f"unknown TEE mode {s.tee!r}; choose tdx or simulated")
        ident = Identity.create(provider, role="proxy", operator=self.owner_raw, key=self.operator)
        from node.tee.quote import parse_quote

        self.image_hash = parse_quote(ident.quote).image_hash
        return ident

    async def _check_registration(self) -> None:
        info = await self.chain.proxy_info()
        reg = self.chain.registry.to_str()
        if info is None:
            raise StartupError(f"this proxy (owner {self.owner_raw}) is not registered in the registry {reg}: "
                               f"run `cocoon stake register-proxy \"{self.s.endpoint}\"` with the owner's key")
        if info.operator_key != self.operator_public:
            raise StartupError("the registry lists another operator key for this proxy: bind this key with "
                               "`cocoon stake set-operator` and register again")
        if info.endpoint != self.s.endpoint:
            raise StartupError(f"the registry lists the endpoint {info.endpoint!r}, not {self.s.endpoint!r}: "
                               "register this endpoint or start with the registered one (--public-endpoint)")
        if not info.active:
            raise StartupError("the proxy's stake is not active (below the minimum, jailed or unbonding): "
                               "deposit with `cocoon stake deposit`")
        snap = self.snapshots.current()
        if self.image_hash not in snap.proxy_image_hashes:
            raise StartupError(f"this proxy's image {self.image_hash.hex()} is not allowed in the registry")
        if self.s.tee == "simulated" and not snap.is_test:
            raise StartupError("the registry has no test flag, so it accepts no simulated TEE: run on real TDX")

    async def stop(self) -> None:
        for link in list(self.pool.links.values()):
            link.lost()
            await link.ws.close()
        if self.snapshots is not None:
            await self.snapshots.stop()
        if self.net is not None:
            try:
                await self.net.close(save=False)
            except Exception:
                pass
        if self.ledger is not None:
            self.ledger.close()

    # ------------------------------------------------------------------------ registry changes
    async def _on_snapshot(self, old, new) -> None:
        await self.recheck_workers()

    async def recheck_workers(self) -> None:
        """Drop workers the registry no longer allows: image or model revoked, stake no longer active
        or bound to another key. Scores are refreshed on the way."""
        snap = self.snapshots.current()
        for link in list(self.pool.links.values()):
            if link.closed:
                continue
            reason = None
            if link.image_hash is not None and link.image_hash not in snap.worker_image_hashes:
                reason = "the registry revoked the worker's image"
            elif bytes.fromhex(link.model_hash) not in snap.model_hashes:
                reason = "the registry revoked the worker's model"
            else:
                st = await self.chain.worker_stake(link.owner_address)
                if st is None or not st.is_active:
                    reason = "the worker's stake is no longer active"
                elif st.operator_key != link.operator_int:
                    reason = "the worker's stake is bound to another operator key"
            if reason:
                log.warning("dropping worker %s: %s", link.owner, reason)
                self.metrics.refused_workers.labels("revoked").inc()
                link.dropped = reason
                await link.send(F.Refused(reason))
                link.lost()
                await self.ledger.worker_state(link.owner, link.operator_key.hex(), "revoked", reason)
                await link.ws.close(code=F.CLOSE_REVOKED, message=b"revoked")
                continue
            try:
                link.load.score = await self.chain.score(link.owner_address)
                self.metrics.worker_score.labels(link.owner).set(link.load.score)
            except CocoonError:
                pass

    # ------------------------------------------------------------------------ paying workers
    async def worker_channel(self, link: WorkerLink) -> tuple[str, int, Optional[Voucher]]:
        """The channel to a worker (opened on first sight), what was paid and the latest voucher."""
        rec = await self.ledger.worker_connected(link.owner, link.operator_key.hex(), link.model, link.coefficient)
        addr, _si = self.chain.worker_channel(link.owner_address)
        channel = raw(addr)
        if rec.get("channel") != channel or not rec.get("deposited"):
            keys = await self.chain.worker_channel_keys(addr)
            if keys is not None and keys[1] not in (0, link.operator_int):
                raise RuntimeError("the channel to this worker names another payee key; the worker must use the "
                                   "operator key it opened with")
            fid = await self.ledger.record_funding(link.owner, channel, "open", self.s.worker_deposit)
            _, deposited = await self.chain.open_worker_channel(link.owner_address, link.operator_int,
                                                                self.s.worker_deposit)
            await self.ledger.worker_channel(link.owner, channel)
            await self.ledger.funding_done(fid, "done", deposited)
            rec = self.ledger.worker(link.owner)
        signed, sig = rec["pay_signed"], rec["pay_sig"]
        voucher = Voucher(addr, signed, bytes.fromhex(sig)) if sig and signed else None
        return channel, signed if voucher else 0, voucher

    def sign_pay(self, channel: str, amount: int) -> bytes:
        """The operator key's voucher for a worker's cumulative pay."""
        return Voucher.sign(self.operator, Address(channel), amount).signature

    async def signed_pay(self, due: PayDue, soon: bool = False) -> Optional[bytes]:
        """Sign a worker's cumulative pay and keep it: the signature once it is durable (the ``pay``
        frame may go out), None if a pay at least as high is held already; ``soon``: kept by a commit
        of its own, not with the next one (:meth:`Ledger.store_pay`)."""
        sig = self.sign_pay(due.channel, due.cumulative)
        return sig if await self.ledger.store_pay(due, sig, soon) else None

    async def top_up_workers(self) -> None:
        """Keep each worker channel's deposit ahead of the pay signed on it."""
        for w in self.ledger.workers():
            if not w["channel"] or w["state"] != "up":
                continue
            if w["deposited"] - w["paid"] >= self.s.worker_top_up_below:
                continue
            amount = self.s.worker_deposit
            fid = await self.ledger.record_funding(w["owner"], w["channel"], "top_up", amount)
            try:
                deposited = await self.chain.top_up_worker_channel(Address(w["channel"]), amount)
                await self.ledger.funding_done(fid, "done", deposited)
            except CocoonError as e:
                log.warning("top-up of the channel to %s failed: %s", w["owner"], e)
                await self.ledger.funding_done(fid, "failed")

    # ------------------------------------------------------------------------ client channels
    async def client_channel(self, address: str, refresh: bool = False) -> ClientChannel:
        ch = self.channels.get(address)
        if ch is None or refresh or time.monotonic() - ch.read_at > CHANNEL_TTL:
            try:
                ch = await self.chain.client_channel(address)
            except CocoonError as e:
                raise OE.APIError(402, f"the channel {address} cannot pay this proxy: {e}", code="bad_channel",
                                  extra={"cocoon": {"required": 0, "settled": 0}}) from None
            self.channels[address] = ch
        return ch

    # ------------------------------------------------------------------------ the models
    def models(self) -> dict:
        e = self.chain.economics
        data = []
        for model, links in sorted(self.pool.models().items()):
            data.append({
                "id": model, "object": "model", "created": int(min(l.connected_at for l in links)), "owned_by": "cocoon",
                "cocoon": {
                    "price_per_token": e.price_per_token, "worker_fee_per_token": e.worker_fee_per_token,
                    "multipliers": {"prompt": e.prompt_mult, "cached": e.cached_mult, "completion": e.completion_mult,
                                    "reasoning": e.reasoning_mult},
                    "coefficients": sorted({l.coefficient for l in links}),
                    "free_capacity": sum(max(0, l.load.max_jobs - l.load.in_flight) for l in links),
                    "workers": len(links),
                    "max_output_tokens": self.s.max_output_tokens,
                },
            })
        return {"object": "list", "data": data}

    # ------------------------------------------------------------------------ paid requests
    async def completions(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        t0 = time.perf_counter()
        path = ENDPOINT_PATHS[endpoint]
        status = 500
        try:
            resp = await self._completions(request, endpoint, t0)
            status = resp.status
            return resp
        except OE.APIError as e:
            status = e.status
            raise
        finally:
            self.metrics.requests.labels(path, str(status)).inc()

    async def _completions(self, request: web.Request, endpoint: str, t0: float) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > self.s.max_body:
            raise OE.APIError(413, f"The request body is larger than {self.s.max_body} bytes.", code="request_too_large")
        body = await request.read()
        if len(body) > self.s.max_body:
            raise OE.APIError(413, f"The request body is larger than {self.s.max_body} bytes.", code="request_too_large")
        channel, amount, sig, request_id, max_coef = _paid_headers(request)
        req = parse_request(endpoint, body)
        if req.sampling.max_tokens is None:
            raise OE.bad_request("'max_tokens' is required by this proxy (the gateway sets it from /v1/models)",
                                 "max_tokens", "missing_required_parameter")
        try:
            max_cost = request_max_cost(body, max_coef, self.chain.economics, req.raw)   # parsed once
        except ValueError as e:
            raise OE.bad_request(str(e), "max_tokens") from None
        ch = await self.client_channel(channel)
        if amount is None:
            raise self._payment_required(f"a paid request carries {H.VOUCHER}: the settled total plus this request's "
                                         "maximum cost, signed by the channel's payer key", channel, max_cost,
                                         "payment_required")
        if not self._voucher_ok(channel, amount, sig, ch.payer_key):
            raise self._payment_required(f"the {H.VOUCHER} is not signed by the channel's payer key", channel,
                                         max_cost, "bad_voucher")
        if amount == 0:   # authorizes nothing: the payer asks for the record of this id, never a new job
            if self.ledger.request(channel, request_id) is None:
                raise OE.APIError(404, f"request {request_id} has no record on this channel", code="no_record")
            return await self._replay(channel, request_id)
        tried: set[str] = set()
        try:
            link = self._route(req.model, max_coef, tried)
        except OE.APIError:
            # no worker has room, but a retried id is answered from its record all the same
            if self.ledger.request(channel, request_id) is not None:
                return await self._replay(channel, request_id)
            raise
        job_id = os.urandom(32).hex()
        link.open_job(job_id)       # the slot is held while the admission is committed
        try:
            if ch.state.state != E.State.OPEN:
                ch = await self.client_channel(channel, refresh=True)
                if ch.state.state != E.State.OPEN:
                    raise self._payment_required(f"the channel is {ch.state.state_name}, not open: open a new one",
                                                 channel, max_cost, "channel_closed")
            admit = dict(channel=channel, payer_key=hex(ch.payer_key), voucher_amount=amount, voucher_sig=sig,
                         request_id=request_id, job_id=job_id, max_cost=max_cost, model=req.model,
                         endpoint=endpoint, stream=req.stream, worker=link.owner)
            try:
                adm = await self.ledger.admit(**admit, limit=ch.limit)
            except PaymentRequired as p:
                fresh = await self.client_channel(channel, refresh=True) if p.required > ch.limit else ch
                if fresh.limit <= ch.limit:   # not a deposit the proxy had not seen yet
                    raise OE.payment_required(str(p), p.required, p.settled, p.in_flight) from None
                try:
                    adm = await self.ledger.admit(**admit, limit=fresh.limit)
                except PaymentRequired as p2:
                    raise OE.payment_required(str(p2), p2.required, p2.settled, p2.in_flight) from None
        except BaseException:
            link.close_job(job_id)
            raise
        if adm.record is not None:   # a retried id: answered from the record, never served twice
            link.close_job(job_id)
            return await self._replay(channel, request_id)
        ev = self.waiters.setdefault((channel, request_id), asyncio.Event())
        self.metrics.in_flight.inc()
        try:
            return await self._serve(request, endpoint, req, body, channel, request_id, job_id, adm.settled_before,
                                     max_cost, max_coef, link, tried, t0)
        finally:
            self.metrics.in_flight.dec()
            ev.set()
            self.waiters.pop((channel, request_id), None)

    def _voucher_ok(self, channel: str, amount: int, sig: bytes, payer_key: int) -> bool:
        """The voucher's signature check; a voucher already verified (a client reusing an
        authorization that still covers its requests) is not verified again."""
        key = (channel, amount, sig, payer_key)
        if key in self.verified:
            return True
        if not Voucher(Address(channel), amount, sig).verify(payer_key):
            return False
        if len(self.verified) >= VERIFIED_CACHE:
            self.verified.pop(next(iter(self.verified)))
        self.verified[key] = True
        return True

    def _payment_required(self, message: str, channel: str, max_cost: int, code: str) -> OE.APIError:
        """A 402 naming what the channel must authorize for this request: settled + in flight + its
        maximum cost."""
        row = self.ledger.channel(channel)
        settled, in_flight = (row.settled if row else 0), self.ledger.reserved(channel)
        err = OE.payment_required(message, settled + in_flight + max_cost, settled, in_flight)
        err.code = code
        return err

    def _route(self, model: str, max_coef: int, tried: set[str]) -> WorkerLink:
        loads = self.pool.loads()
        w = routing.choose(loads, model, max_coef, frozenset(tried))
        if w is None:
            self.metrics.routing.labels("no_room").inc()
            if not any(l.model == model for l in loads) and not tried and not self._model_known(model):
                raise OE.APIError(404, f"The model '{model}' does not exist on this proxy; see /v1/models.",
                                  param="model", code="model_not_found")
            raise OE.overloaded(routing.retry_after(loads, model, max_coef))
        w.last_chosen = time.monotonic()
        self.metrics.routing.labels("retried" if tried else "chosen").inc()
        return self.pool.links[w.key]

    def _model_known(self, model: str) -> bool:
        return any(w.get("model") == model for w in self.ledger.workers())

    async def _replay(self, channel: str, request_id: str) -> web.StreamResponse:
        rec = self.ledger.request(channel, request_id)
        if rec is not None and rec.status == "running":
            ev = self.waiters.get((channel, request_id))
            if ev is not None:
                try:
                    await asyncio.wait_for(ev.wait(), self.s.job_timeout + RECEIPT_WAIT)
                except asyncio.TimeoutError:
                    pass
            rec = self.ledger.request(channel, request_id)
        if rec is None or rec.status != "done":
            raise OE.APIError(409, f"request {request_id} is still being served; retry later", code="in_progress",
                              headers={"Retry-After": "1"})
        if rec.stream and rec.http_status == 200:
            return web.Response(status=200, body=rec.response, headers=sse.HEADERS)
        return web.Response(status=rec.http_status or 200, body=rec.response or b"", content_type="application/json")

    async def _serve(self, request, endpoint, req, body, channel, request_id, job_id, settled_before, max_cost,
                     max_coef, link: WorkerLink, tried: set[str], t0: float) -> web.StreamResponse:
        stream = req.stream
        frame = F.Job(job_id, endpoint, body, stream, self.s.job_timeout)
        request_hash = content_hash(body)
        first = True
        while True:
            tried.add(link.owner)
            q = link.jobs[job_id]
            if not first:   # a retry elsewhere: the books name the worker that serves it
                await self.ledger.assign(job_id, link.owner)
            first = False
            t_sent = time.perf_counter()
            if not await link.send(frame):
                link.close_job(job_id)
                outcome: Outcome = Outcome("lost")
            elif stream:
                return await self._stream(request, endpoint, req, channel, request_id, job_id, settled_before,
                                          max_cost, link, q, request_hash, tried, max_coef, body, t0)
            else:
                outcome = await self._collect(link, job_id, q)
                if outcome.kind == "receipt":
                    self.metrics.upstream.labels(ENDPOINT_PATHS[endpoint], "false").observe(time.perf_counter() - t_sent)
            if outcome.kind == "lost" or (outcome.kind == "error" and worker_side(outcome.result.status)):
                self._worker_failed(link, job_id, outcome)
                nxt = self._next(req.model, max_coef, tried, job_id)
                if nxt is not None:
                    link = nxt
                    continue
                await self.ledger.release(job_id, worker=link.owner, outcome="failed")
                raise self._no_worker(outcome.result.status if outcome.kind == "error" else 503, req.model, max_coef)
            link.close_job(job_id)
            if outcome.kind == "timeout":   # nothing delivered: not billed, and the id stays free for a retry
                await self.ledger.release(job_id, worker=link.owner, outcome="timed_out")
                raise OE.timeout(f"the worker did not answer within {self.s.job_timeout:.0f} s; nothing was billed")
            return await self._finish_json(endpoint, channel, request_id, job_id, settled_before, max_cost, link,
                                           outcome, request_hash, t0)

    def _no_worker(self, status: int, model: str, max_coef: int) -> OE.APIError:
        if status in (429, 402):    # full, or waiting for the proxy's pay: both pass in moments
            return OE.overloaded(routing.retry_after(self.pool.loads(), model, max_coef))
        return OE.unavailable("the workers serving this model failed; nothing was billed, retry later")

    def _next(self, model, max_coef, tried, job_id) -> Optional[WorkerLink]:
        try:
            nxt = self._route(model, max_coef, tried)
        except OE.APIError:
            return None
        nxt.open_job(job_id)
        return nxt

    def _worker_failed(self, link: WorkerLink, job_id: str, outcome: Outcome) -> None:
        link.close_job(job_id)
        if outcome.kind == "lost":
            link.load.up = False
        else:                       # its queue was full, the proxy is behind with its pay, or it failed
            body = outcome.result.body if isinstance(outcome.result.body, dict) else {}
            err = body.get("error") if isinstance(body.get("error"), dict) else {}
            log.warning("worker %s turned job %s away: %d %s", link.owner, job_id[:16], outcome.result.status,
                        err.get("code") or "")

    async def _collect(self, link: WorkerLink, job_id: str, q: asyncio.Queue) -> Outcome:
        """Wait for a non-streaming job's result, then its receipt. A job past its timeout is
        cancelled (504, nothing delivered, nothing billed); a result with no receipt after it is the
        worker's failure (502), so the job may go to another worker."""
        deadline = time.monotonic() + self.s.job_timeout
        result: Optional[F.Result] = None
        while True:
            try:
                item = await _next_item(q, max(deadline - time.monotonic(), 0.01))
            except asyncio.TimeoutError:
                if result is None:
                    await link.send(F.Cancel(job_id))
                    return Outcome("timeout", None, F.Result(job_id, 504, OE.timeout().to_dict()))
                err = OE.APIError(502, "the worker sent no receipt for its answer", code="no_receipt")
                return Outcome("error", None, F.Result(job_id, 502, err.to_dict()))
            if item is LINK_LOST:
                return Outcome("lost")
            if isinstance(item, F.Result):
                result = item
                if item.status >= 400:
                    return Outcome("error", None, item)
                deadline = time.monotonic() + RECEIPT_WAIT
            elif isinstance(item, F.ReceiptFrame):
                if result is None:
                    return Outcome("lost")
                return Outcome("receipt", item, result)

    async def late_receipt(self, link: WorkerLink, rf: F.ReceiptFrame) -> None:
        """A receipt for a job the proxy aborted when it stopped: pay the worker for its work (the
        client, never answered, pays nothing)."""
        job = self.ledger.job(rf.job_id)
        if job is None or job["status"] != "aborted" or job["worker"] != link.owner:
            return
        why = self._check_receipt(link, rf.job_id, rf, None, None)
        if why is not None:
            log.warning("worker %s re-sent a receipt that does not verify: %s", link.owner, why)
            return
        fee = charge(rf.usage, rf.coefficient, self.chain.economics).worker_fee
        due = await self.ledger.pay_late(rf.job_id, worker=link.owner, usage=usage_to_openai(rf.usage),
                                         coefficient=rf.coefficient, worker_fee=fee,
                                         receipt=base64.b64encode(rf.receipt).decode())
        if due is not None:
            self.metrics.worker_pay.inc(fee)
            link.pay(due)

    def _check_receipt(self, link: WorkerLink, job_id: str, rf: F.ReceiptFrame, request_hash: Optional[bytes],
                       content: Optional[tuple[str, list]]) -> Optional[str]:
        """None if the receipt is the worker's, for this job and these bytes; else why not."""
        if request_hash is not None and content is not None and rf.coefficient == link.coefficient:
            # the common case, without parsing: the receipt these facts make, in the canonical form
            expected = Receipt(link.stake_address, int(job_id, 16), request_hash, response_hash(*content), rf.usage,
                               rf.coefficient)
            if expected.signs(rf.receipt, link.public_key):
                return None
        try:
            st = S.SignedStatement.from_cell(Cell.one_from_boc(rf.receipt))
            if not st.verify(link.operator_key):
                return "the receipt is not signed by the worker's operator key"
            r = Receipt.from_statement(st.statement)
        except Exception as e:
            return f"the receipt does not parse: {e}"
        if r.job_id != int(job_id, 16):
            return "the receipt is for another job"
        if request_hash is not None and r.request_hash != request_hash:
            return "the receipt's request hash is not the hash of the body sent"
        if r.usage != rf.usage or r.coefficient != rf.coefficient or r.coefficient != link.coefficient:
            return "the receipt's usage or coefficient differs from what the worker reported"
        if raw(r.worker_stake) != link.stake:
            return "the receipt names another stake"
        if content is not None and r.response_hash != response_hash(content[0], content[1]):
            return "the receipt's response hash does not match the answer"
        return None

    async def _bill(self, link: WorkerLink, job: "JobInfo", rf: F.ReceiptFrame, outcome: str, status: int,
                    response_for: "callable", t0: float) -> tuple[int, dict]:
        """Store the job's end (receipt, cost, pay) and return (cost billed, the cocoon object)."""
        job_id = job.job_id
        c = charge(rf.usage, rf.coefficient, self.chain.economics)
        latency_ms = int((time.perf_counter() - t0) * 1000)
        cocoon = {"request_id": job.request_id, "job_id": job_id, "receipt": base64.b64encode(rf.receipt).decode(),
                  "worker_cert": link.cert_b64, "coefficient": rf.coefficient,
                  "usage": usage_to_openai(rf.usage), "cost": min(c.client_cost, job.max_cost),
                  "settled_before": job.settled_before}
        tokens = rf.usage.prompt_tokens + rf.usage.completion_tokens
        billed, pay = await self.ledger.complete(
            job_id, worker=link.owner, outcome=outcome, usage=usage_to_openai(rf.usage), coefficient=rf.coefficient,
            tokens=tokens, cost=c.client_cost, worker_fee=c.worker_fee, receipt=cocoon["receipt"], http_status=status,
            response=response_for(cocoon), latency_ms=latency_ms, cert=link.cert)
        link.load.observe(time.perf_counter() - t0)
        self.metrics.billed.inc(billed)
        self.metrics.worker_pay.inc(c.worker_fee)
        u = rf.usage
        for kind, n in (("prompt", u.prompt_tokens - u.cached_tokens), ("cached", u.cached_tokens),
                        ("completion", u.completion_tokens - u.reasoning_tokens), ("reasoning", u.reasoning_tokens)):
            if n:
                self.metrics.tokens.labels(kind).inc(n)
        if pay is not None:
            live = self.pool.get(pay.worker)
            if live is not None:    # else it is sent when the worker's link reopens
                try:
                    live.pay(pay)
                except Exception:   # the answer is billed: it goes out; the pay owed is sent later
                    log.exception("the pay of %d to worker %s could not be scheduled", pay.cumulative, pay.worker)
        return billed, cocoon

    async def _finish_json(self, endpoint, channel, request_id, job_id, settled_before, max_cost, link,
                           outcome: Outcome, request_hash, t0) -> web.Response:
        path = ENDPOINT_PATHS[endpoint]
        if outcome.kind in ("error", "timeout") or outcome.receipt is None:
            res = outcome.result
            body = json.dumps(res.body).encode()
            await self.ledger.answer_unbilled(job_id, worker=link.owner, outcome="failed" if res.status >= 500 else
                                              "client_error", http_status=res.status, response=body)
            self.metrics.latency.labels(path, "false").observe(time.perf_counter() - t0)
            return web.Response(status=res.status, body=body, content_type="application/json")
        rf, res = outcome.receipt, outcome.result
        why = self._check_receipt(link, job_id, rf, request_hash, delivered(endpoint, res.body))
        if why is not None:
            log.warning("worker %s: %s; the job is not billed", link.owner, why)
            err = OE.APIError(502, f"the worker's receipt was refused: {why}; nothing was billed", code="bad_receipt")
            body = json.dumps(err.to_dict()).encode()
            await self.ledger.answer_unbilled(job_id, worker=link.owner, outcome="failed", http_status=502, response=body)
            return web.Response(status=502, body=body, content_type="application/json")

        encoded: list[bytes] = []

        def answer(cocoon: dict) -> bytes:      # encoded once: stored, then sent as stored
            encoded.append(fastjson.dumps({**res.body, "cocoon": cocoon}))
            return encoded[-1]

        job = JobInfo(job_id, request_id, max_cost, settled_before)
        _billed, cocoon = await self._bill(link, job, rf, "succeeded", res.status, answer, t0)
        self.metrics.latency.labels(path, "false").observe(time.perf_counter() - t0)
        return web.Response(status=res.status, body=encoded[-1] if encoded else answer(cocoon),
                            content_type="application/json")

    async def _stream(self, request, endpoint, req, channel, request_id, job_id, settled_before, max_cost,
                      link: WorkerLink, q: asyncio.Queue, request_hash, tried, max_coef, body,
                      t0) -> web.StreamResponse:
        path = ENDPOINT_PATHS[endpoint]
        resp: Optional[web.StreamResponse] = None
        sent: list[bytes] = []
        chunks: list[dict] = []
        held: Optional[dict] = None        # the worker's usage chunk, sent last with the cocoon field
        client_gone = False
        deadline = time.monotonic() + self.s.job_timeout
        cancelled = False
        t_sent = time.perf_counter()

        async def write(data: bytes) -> None:
            nonlocal client_gone
            sent.append(data)
            if client_gone:
                return
            try:
                await resp.write(data)
            except (ConnectionError, RuntimeError):
                client_gone = True

        while True:
            timeout = deadline - time.monotonic()
            try:
                item = await _next_item(q, max(timeout, 0.01))
            except asyncio.TimeoutError:
                if not cancelled:
                    cancelled = True
                    await link.send(F.Cancel(job_id))
                    deadline = time.monotonic() + RECEIPT_WAIT
                    continue
                item = LINK_LOST
            if item is LINK_LOST or (isinstance(item, F.Result) and worker_side(item.status) and resp is None):
                self._worker_failed(link, job_id, Outcome("lost" if item is LINK_LOST else "error"))
                if resp is None:   # no byte reached the client: another worker may serve it
                    nxt = self._next(req.model, max_coef, tried, job_id)
                    if nxt is not None:
                        link = nxt
                        q = link.jobs[job_id]
                        tried.add(link.owner)
                        await self.ledger.assign(job_id, link.owner)
                        t_sent = time.perf_counter()
                        if await link.send(F.Job(job_id, endpoint, body, True, self.s.job_timeout)):
                            deadline = time.monotonic() + self.s.job_timeout
                            continue
                        self._worker_failed(link, job_id, Outcome("lost"))
                    await self.ledger.release(job_id, worker=link.owner, outcome="failed")
                    raise self._no_worker(item.status if isinstance(item, F.Result) else 503, req.model, max_coef)
                err = OE.APIError(502, "the worker serving this stream failed; you are billed only for what you "
                                  "received", code="worker_failed")
                await write(sse.error_event(err))
                kind = "timed_out" if cancelled else "failed"
                await self.ledger.answer_unbilled(job_id, worker=link.owner, outcome=kind, http_status=200,
                                                  response=b"".join(sent))
                self.metrics.latency.labels(path, "true").observe(time.perf_counter() - t0)
                return resp
            if isinstance(item, F.Result):
                if resp is None:
                    link.close_job(job_id)
                    body_b = json.dumps(item.body).encode()
                    await self.ledger.answer_unbilled(job_id, worker=link.owner, outcome="client_error",
                                                      http_status=item.status, response=body_b)
                    return web.Response(status=item.status, body=body_b, content_type="application/json")
                await write(sse.error_event(OE.APIError.from_dict(item.status, item.body)))
                continue
            if isinstance(item, F.Chunk):
                if resp is None:
                    resp = web.StreamResponse(status=200, headers=sse.HEADERS)
                    await resp.prepare(request)
                    self.metrics.ttft.labels(path).observe(time.perf_counter() - t0)
                chunks.append(item.data)
                if item.data.get("choices") == [] and "usage" in item.data:
                    held = item.data
                    continue
                await write(sse.event(item.data))
                if client_gone and not cancelled:
                    cancelled = True
                    await link.send(F.Cancel(job_id))
                    deadline = time.monotonic() + RECEIPT_WAIT
                continue
            if isinstance(item, F.ReceiptFrame):
                self.metrics.upstream.labels(path, "true").observe(time.perf_counter() - t_sent)
                link.close_job(job_id)
                if resp is None:
                    resp = web.StreamResponse(status=200, headers=sse.HEADERS)
                    await resp.prepare(request)
                content = None if cancelled else delivered(endpoint, chunks)
                why = self._check_receipt(link, job_id, item, request_hash, content)
                if why is not None:
                    log.warning("worker %s: %s; the job is not billed", link.owner, why)
                    await write(sse.error_event(OE.APIError(502, f"the worker's receipt was refused: {why}; nothing "
                                                            "was billed", code="bad_receipt")))
                    await self.ledger.answer_unbilled(job_id, worker=link.owner, outcome="failed", http_status=200,
                                                      response=b"".join(sent))
                    return resp
                last = dict(held) if held is not None else {
                    "id": (chunks[0].get("id") if chunks else f"cmpl-{job_id[:24]}"),
                    "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
                    "created": (chunks[0].get("created") if chunks else int(time.time())), "model": req.model,
                    "choices": []}

                def transcript(cocoon: dict) -> bytes:
                    return b"".join(sent) + sse.event({**last, "cocoon": cocoon}) + sse.DONE_EVENT

                outcome = "timed_out" if cancelled and not client_gone else "succeeded"
                job = JobInfo(job_id, request_id, max_cost, settled_before)
                _billed, cocoon = await self._bill(link, job, item, outcome, 200, transcript, t0)
                await write(sse.event({**last, "cocoon": cocoon}))
                await write(sse.DONE_EVENT)
                self.metrics.latency.labels(path, "true").observe(time.perf_counter() - t0)
                return resp

    # ------------------------------------------------------------------------ the Cocoon endpoints
    async def settle(self, request: web.Request) -> web.Response:
        try:
            d = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise OE.bad_request("the body is a JSON object {channel, request_id, voucher}") from None
        if not isinstance(d, dict) or set(d) != {"channel", "request_id", "voucher"}:
            raise OE.bad_request("the body is a JSON object with exactly channel, request_id and voucher")
        channel = _channel(d["channel"])
        rid = d["request_id"]
        if not isinstance(rid, str) or not H.valid_request_id(rid):
            raise OE.bad_request("request_id is 1-64 characters [A-Za-z0-9_-]", "request_id")
        try:
            amount, sig = H.parse_voucher(d["voucher"] if isinstance(d["voucher"], str) else "")
        except ValueError as e:
            raise OE.bad_request(str(e), "voucher") from None
        ch = await self.client_channel(channel)
        if not Voucher(Address(channel), amount, sig).verify(ch.payer_key):
            raise OE.bad_request("the voucher is not signed by the channel's payer key", "voucher", "bad_voucher")
        try:
            row = await self.ledger.settle(channel, rid, amount, sig)
        except Conflict as e:
            raise OE.APIError(409, str(e), code="settle_refused") from None
        return web.json_response({"channel": channel, "settled": row.settled,
                                  "exact": f"{row.exact_amount}:{row.exact_sig}"})

    async def channel_info(self, request: web.Request) -> web.Response:
        channel = _channel(request.query.get("channel", ""))
        row = self.ledger.channel(channel)
        if row is None:
            return web.json_response({"channel": channel, "settled": 0, "voucher": None, "exact": None, "reserved": 0})
        return web.json_response({"channel": channel, "settled": row.settled,
                                  "voucher": f"{row.voucher_amount}:{row.voucher_sig}" if row.voucher_sig else None,
                                  "exact": f"{row.exact_amount}:{row.exact_sig}" if row.exact_sig else None,
                                  "reserved": self.ledger.reserved(channel), "claimed": row.claimed,
                                  "capped": row.capped})

    # ------------------------------------------------------------------------ claims after a restart
    async def reconcile_claims(self) -> None:
        """Claims recorded or sent before a stop: confirmed if the chain's claimed total reached
        them, otherwise given up (the next settlement pass decides afresh)."""
        from .settlement import reconcile

        await reconcile(self)


def _channel(value) -> str:
    if not isinstance(value, str) or not value:
        raise OE.bad_request(f"{H.CHANNEL} (the client's channel address) is required", "channel")
    try:
        return raw(value)
    except Exception:
        raise OE.bad_request(f"{value!r} is not a channel address", "channel") from None


def _paid_headers(request: web.Request) -> tuple[str, Optional[int], Optional[bytes], str, int]:
    """The Cocoon headers (400 for a malformed one); the voucher is None when there is none."""
    channel = _channel(request.headers.get(H.CHANNEL, ""))
    v = request.headers.get(H.VOUCHER)
    amount, sig = None, None
    if v:
        try:
            amount, sig = H.parse_voucher(v)
        except ValueError as e:
            raise OE.bad_request(str(e), "voucher") from None
    rid = request.headers.get(H.REQUEST_ID, "")
    if not H.valid_request_id(rid):
        raise OE.bad_request(f"{H.REQUEST_ID} is required: 1-64 characters [A-Za-z0-9_-]", "request_id")
    mc = request.headers.get(H.MAX_COEFFICIENT, str(COEF_ONE))
    if not mc.isdigit() or not 0 < int(mc) <= 65535:
        raise OE.bad_request(f"{H.MAX_COEFFICIENT} is an integer from 1 to 65535 (1000 = 1.0)", "max_coefficient")
    return channel, amount, sig, rid, int(mc)

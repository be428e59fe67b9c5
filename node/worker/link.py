"""The worker's end of the link: it dials the proxy's workers endpoint over mutual RA-TLS, says
``hello``, and serves the jobs that arrive on one WebSocket, many at once (docs/PROTOCOL.md §3).

It checks who answered: the proxy's certificate must verify (quote, image, role) and name a registered,
active proxy whose operator key is the certificate's key; the channel in ``welcome`` must be the
escrow from that proxy to this worker's owner with the proxy's operator key as payer. Vouchers are
verified and stored; a proxy whose debt passes the credit gets no new jobs. The link reconnects with
backoff, and stays down while the registry does not allow this worker's image or model.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Optional

import aiohttp
from pytoniq_core import Address

from node.link import endpoint as EP
from node.link import frames as F
from node.openai import errors
from node.tee.ratls import PeerVerifier, RaTlsConnector, RaTlsError
from node.payments.vouchers import Voucher, VoucherTracker

from .chain import WorkerChain, WorkerError
from .metrics import Metrics
from .serving import Server
from .store import Store

log = logging.getLogger(__name__)
LOAD_COALESCE = 0.02        # seconds: slot changes within it go out as one ``load`` frame
LOAD_EVERY = 1.0            # seconds: a change of occupancy alone goes out at most this often


@dataclass
class LinkConfig:
    owner: Address
    model_name: str
    model_hash: bytes
    coefficient: int
    max_jobs: int
    credit: int
    proxy_owner: Optional[Address] = None
    proxy_endpoint: Optional[str] = None     # WORKERS_HOST:PORT, skipping the registry's endpoint
    hello_timeout: float = 30.0


class ProxyRefused(Exception):
    pass


class Link:
    def __init__(self, cfg: LinkConfig, server: Server, store: Store, chain: WorkerChain, connector_factory,
                 verifier: PeerVerifier, metrics: Metrics):
        self.cfg, self.server, self.store, self.chain = cfg, server, store, chain
        self.connector_factory = connector_factory
        self.verifier = verifier
        self.metrics = metrics
        self.allowed = asyncio.Event()       # set while the registry allows our image and model
        self.allowed.set()
        self.ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self.tracker: Optional[VoucherTracker] = None
        self.channel: Optional[str] = None
        self.proxy_owner: Optional[str] = None
        self.state = "starting"
        self.last_error = ""
        self._send_lock = asyncio.Lock()
        self._jobs: set[asyncio.Task] = set()
        self._load_pending = False
        self._load_sent: Optional[tuple[int, int, int]] = None
        self._load_at = float("-inf")       # when the latest load frame went out (loop time)

    # ------------------------------------------------------------------ registry changes
    def revoke(self, why: str) -> None:
        """The registry no longer allows this worker: drop the link and do not dial again."""
        if self.allowed.is_set():
            log.warning("the registry revoked this worker (%s): dropping the link", why)
        self.allowed.clear()
        self.state = f"revoked: {why}"
        ws = self.ws
        if ws is not None and not ws.closed:
            asyncio.ensure_future(ws.close(code=F.CLOSE_REVOKED, message=b"revoked by the registry"))

    def restore(self) -> None:
        if not self.allowed.is_set():
            log.info("the registry allows this worker again")
        self.allowed.set()

    # ------------------------------------------------------------------ pay
    def debt(self) -> int:
        """What the current proxy owes beyond its latest voucher."""
        if self.channel is None:
            return 0
        paid = self.tracker.authorized if self.tracker else 0
        return max(0, self.store.earned(self.channel) - paid)

    def accept_voucher(self, v: Voucher) -> bool:
        """Verify (signature, channel, monotonic) and store; raises ValueError for a bad one."""
        assert self.tracker is not None and self.proxy_owner is not None
        if v.amount < self.tracker.authorized:
            raise ValueError(f"the voucher for {v.amount} goes back below the {self.tracker.authorized} already paid")
        earned = self.store.earned(self.channel)
        if v.amount > earned:
            log.info("voucher %d is ahead of the %d earned (prepaid)", v.amount, earned)
        if not self.tracker.accept(v):
            return False
        self.store.keep_voucher(self.proxy_owner, v)      # committed with the next batch, not waited for
        self.metrics.paid.set(self.store.paid())
        return True

    # ------------------------------------------------------------------ connection
    async def _endpoint(self) -> tuple[str, Optional[Address]]:
        if self.cfg.proxy_endpoint:
            host, _, port = self.cfg.proxy_endpoint.rpartition(":")
            return f"wss://{host}:{port}{EP.LINK_PATH}", self.cfg.proxy_owner
        p = await self.chain.proxy(self.cfg.proxy_owner)
        try:
            ep = EP.parse(p.endpoint)
        except EP.EndpointError as e:
            raise WorkerError(f"the proxy's registered endpoint is unusable: {e}") from None
        return ep.workers_url, Address((0, p.owner_hash.to_bytes(32, "big")))

    async def run_forever(self) -> None:
        backoff = 1.0
        while True:
            await self.allowed.wait()
            try:
                served = await self.connect_once()
                if served:
                    backoff = 1.0
            except asyncio.CancelledError:
                raise
            except ProxyRefused as e:
                self.last_error = f"refused by the proxy: {e}"
            except (RaTlsError, WorkerError, F.FrameError, ValueError) as e:
                self.last_error = str(e)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
            if self.last_error:
                log.warning("link: %s; retrying in %.0f s", self.last_error, backoff)
            if self.allowed.is_set():
                self.state = "reconnecting"
            self.metrics.connected.set(0)
            await asyncio.sleep(backoff * (0.75 + random.random() / 2))
            backoff = min(backoff * 2, 30.0)

    async def connect_once(self) -> bool:
        url, expected_owner = await self._endpoint()
        self.state = f"connecting to {url}"
        self.last_error = ""
        connector: RaTlsConnector = self.connector_factory()
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.ws_connect(url, heartbeat=20, max_msg_size=F.MAX_FRAME, compress=0) as ws:
                verdict = await self.verifier.verify_ssl_object(ws.get_extra_info("ssl_object"))
                if not verdict.ok or verdict.claims is None:
                    raise WorkerError(f"the proxy's attestation failed: {verdict.reason()}")
                await self._check_proxy(verdict.claims, expected_owner)
                self.ws = ws
                try:
                    return await self._session(ws)
                finally:          # jobs still running finish on their own: their sends fail, they stop
                    self.ws = None    # generating, and their receipts are stored for the next link
                    self.metrics.connected.set(0)

    async def _check_proxy(self, claims, expected_owner: Optional[Address]) -> None:
        if claims.role != "proxy" or not claims.operator:
            raise WorkerError("the peer is not a proxy (its claims name another role or no operator)")
        try:
            owner = Address(claims.operator)
        except Exception:
            raise WorkerError("the proxy's claims name no valid owner address") from None
        if expected_owner is not None and owner != expected_owner:
            raise WorkerError(f"the proxy at that endpoint is owned by {owner.to_str()}, not the proxy named")
        info = await self.chain.proxy(owner)
        key = int.from_bytes(claims.public_key, "big")
        if info.operator_key != key:
            raise WorkerError("the proxy's certificate key is not its registered operator key")
        self._proxy_key = key
        self.proxy_owner = owner.to_str(is_user_friendly=False)

    async def send(self, frame: F.Frame) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            raise ConnectionError("the link is down")
        text = F.encode(frame)
        async with self._send_lock:
            await ws.send_str(text)

    async def _session(self, ws) -> bool:
        cfg = self.cfg
        await ws.send_str(F.encode(F.Hello(F.PROTOCOL, cfg.owner.to_str(is_user_friendly=False), cfg.model_name,
                                           cfg.model_hash.hex(), cfg.coefficient, cfg.max_jobs, cfg.credit)))
        msg = await ws.receive(timeout=cfg.hello_timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ProxyRefused(f"the link closed before welcome ({msg.type.name} {ws.close_code})")
        first = F.decode(msg.data, sender="proxy")
        if isinstance(first, F.Refused):
            raise ProxyRefused(first.reason)
        if not isinstance(first, F.Welcome):
            await ws.close(code=F.CLOSE_PROTOCOL_ERROR, message=b"expected welcome")
            raise F.FrameError(f"expected welcome, got {first.TYPE}")
        want = await self.chain.expected_channel(Address(self.proxy_owner), cfg.owner, self._proxy_key)
        if Address(first.channel) != want:
            await ws.close(code=F.CLOSE_PROTOCOL_ERROR, message=b"wrong channel")
            raise WorkerError(f"the proxy named channel {first.channel}, but its channel to this worker is "
                              f"{want.to_str(is_user_friendly=False)}")
        self.channel = want.to_str(is_user_friendly=False)
        self.tracker = VoucherTracker(want, self._proxy_key)
        stored = self.store.voucher(self.channel)
        if stored is not None:
            try:
                self.tracker.accept(stored)
            except ValueError as e:     # e.g. the proxy rotated its operator key since
                log.warning("the stored voucher no longer verifies: %s", e)
        if first.voucher is not None:
            try:
                self.accept_voucher(first.voucher)
            except ValueError as e:
                log.warning("welcome voucher refused: %s", e)
        self.state = "connected"
        self.metrics.connected.set(1)
        log.info("linked to proxy %s (channel %s, paid %d)", self.proxy_owner, self.channel, self.tracker.authorized)
        await self.store.caught_up()        # a receipt written behind a frame the drop cut off is durable first
        for r in self.store.unsent():       # receipts stored before a crash or a drop, sent as stored
            await self.send(F.ReceiptFrame(r.job_id, r.receipt, r.usage, r.coefficient))
            self.store.mark_sent(r.job_id)
        self._load_sent = None
        listener = self._load_changed
        self.server.engine.slots.listeners.append(listener)
        try:
            await self._send_load()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        await ws.close(code=F.CLOSE_PROTOCOL_ERROR, message=b"frames are text")
                    break
                try:
                    frame = F.decode(msg.data, sender="proxy")
                except F.FrameError as e:
                    log.warning("protocol error from the proxy: %s", e)
                    await ws.close(code=F.CLOSE_PROTOCOL_ERROR, message=str(e)[:120].encode())
                    break
                self._handle(frame)
        finally:
            self.server.engine.slots.listeners.remove(listener)
            if not self.allowed.is_set():     # revoked: close with the revocation's code, not 1000
                await ws.close(code=F.CLOSE_REVOKED, message=b"revoked by the registry")
        if ws.close_code not in (None, 1000):
            self.last_error = f"the proxy closed the link ({ws.close_code})"
        return True

    def _handle(self, frame: F.Frame) -> None:
        if isinstance(frame, F.Job):
            if self.debt() > self.cfg.credit:
                err = errors.APIError(402, "The worker is not taking jobs: the proxy is behind with its pay.",
                                      code="proxy_behind")
                self._spawn(self.send(F.Result(frame.job_id, 402, err.to_dict())))
                return
            timeout = min(frame.timeout, self.server_max_timeout)
            job = F.Job(frame.job_id, frame.endpoint, frame.body, frame.stream, timeout)
            self._spawn(self.server.serve(job, self.channel or "", self.send))
        elif isinstance(frame, F.Cancel):
            self.server.cancel(frame.job_id)
        elif isinstance(frame, F.Pay):
            try:
                self.accept_voucher(frame.voucher)
            except ValueError as e:
                log.warning("voucher refused: %s", e)
        elif isinstance(frame, F.Welcome) or isinstance(frame, F.Refused):
            log.warning("unexpected %s frame after the handshake", frame.TYPE)

    server_max_timeout = 600.0

    def _spawn(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._jobs.add(t)
        t.add_done_callback(self._jobs.discard)
        t.add_done_callback(lambda t: t.cancelled() or (t.exception() and log.error("job task failed: %r",
                                                                                      t.exception())))

    def _load_changed(self) -> None:
        """Slots changed: one ``load`` frame goes out with the state then, LOAD_COALESCE seconds
        after a change of capacity (``max_jobs``, what the proxy admits against), and at most once
        per LOAD_EVERY seconds for occupancy alone, which the proxy counts itself (jobs starting and
        ending one after another cost the proxy no frame each)."""
        s = self.server.engine.slots
        self.metrics.active.set(s.active)
        self.metrics.queue.set(s.waiting)
        if self._load_pending:
            return
        self._load_pending = True
        loop = asyncio.get_running_loop()
        wait = LOAD_COALESCE
        if self._load_sent is not None and self._load_sent[2] == s.capacity:
            wait = max(wait, self._load_at + LOAD_EVERY - loop.time())
        loop.call_later(wait, lambda: asyncio.ensure_future(self._send_load()))

    async def _send_load(self) -> None:
        self._load_pending = False
        s = self.server.engine.slots
        now = (s.active, s.waiting, s.capacity)
        if now == self._load_sent:
            return
        try:
            await self.send(F.Load(*now))
            self._load_sent, self._load_at = now, asyncio.get_running_loop().time()
        except Exception:
            pass

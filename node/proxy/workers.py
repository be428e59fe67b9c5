"""The workers listener: admission of attested, staked workers and the link each one keeps open.

A worker dials ``wss://WORKERS_HOST:PORT/v1/link`` with mutual RA-TLS (the site verified its quote,
image and model before aiohttp saw a byte). Its first frame is ``hello``; the proxy then checks that
the attested claims name the same owner and model, that the model is allowed, and that the worker's
stake is active (at least the minimum, not jailed) and bound to the key its claims name. A refused
worker gets a ``refused`` frame with the reason and the link is closed. An admitted one gets the
channel the proxy pays it on (opened if needed) and its latest pay, and jobs start to flow.

Jobs share the link, told apart by ``job_id``: frames for a job go to that job's queue; when the
link dies every job on it receives :data:`LINK_LOST` at once.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pytoniq_core import Address

from node.link import frames as F
from node.payments.vouchers import Voucher
from node.tee.ratls import peer_verdict
from wrappers import keys as K
from wrappers import stake as S

from .ledger import Cert, PayDue
from .routing import WorkerLoad

log = logging.getLogger(__name__)

LINK_LOST = object()          # put in every job queue of a link that closed
HELLO_TIMEOUT = 10.0
HEARTBEAT = 10.0              # seconds between pings; a pong may take 5 s on a loaded host
PAY_EVERY = 0.05              # seconds: pays signed closer together than this leave as one frame
PAY_CREDIT_SHARE = 4          # ... unless what is unpaid passes 1/4 of the worker's credit: then at once


def near_credit(unpaid: int, credit: int) -> bool:
    """Whether a worker owed ``unpaid`` beyond its latest pay is near its ``credit``: its pay is then
    sent at once (:func:`pay_wait`), its signature kept by a commit of its own."""
    return unpaid * PAY_CREDIT_SHARE >= credit


def pay_wait(now: float, sent_at: float, unpaid: int, credit: int) -> float:
    """Seconds before the next pay may leave: PAY_EVERY after the last one, so a worker busy with
    one short job after another verifies one pay per interval and the proxy signs one; but at once
    when the worker has gone unpaid for a quarter of its credit. A worker refuses new jobs past its
    credit (402 `proxy_behind`), and at a few hundred answers a second pays batched by time alone
    came near it: 50 ms of answers plus the jobs in flight, against a credit of some fifty jobs."""
    if near_credit(unpaid, credit):
        return 0.0
    return max(0.0, sent_at + PAY_EVERY - now)


@dataclass
class WorkerLink:
    ws: web.WebSocketResponse
    owner: str                # raw address
    operator_key: bytes
    model: str
    model_hash: str
    coefficient: int
    credit: int
    image_hash: Optional[bytes]
    cert_der: bytes
    load: WorkerLoad
    channel: Optional[str] = None
    stake: str = ""                   # the worker's stake address (raw), as its receipts name it
    jobs: dict[str, asyncio.Queue] = field(default_factory=dict)
    closed: bool = False
    dropped: Optional[str] = None     # why the proxy dropped it (registry refresh), if it did
    connected_at: float = field(default_factory=time.time)
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    signer: Optional[Callable[[PayDue, bool], Awaitable[Optional[bytes]]]] = None   # signs and keeps a pay
    _pay: Optional[PayDue] = None     # the highest pay owed and not yet signed
    _pay_timer: Optional[asyncio.Handle] = None   # the next pay's send, scheduled
    _pay_at: float = 0.0              # ... for this loop time
    _pay_sent_at: float = float("-inf")
    _pay_sent: int = 0                # the highest cumulative pay sent on this link
    _pay_signing: int = 0             # the highest cumulative pay handed to the signer

    @property
    def owner_address(self) -> Address:
        return Address(self.owner)

    @functools.cached_property
    def public_key(self) -> Ed25519PublicKey:
        """The operator key as a key object, made once (it checks every receipt)."""
        return K.public_key(self.operator_key)

    @functools.cached_property
    def cert(self) -> Cert:
        """The certificate as the books keep it (:class:`node.proxy.ledger.Cert`), made once."""
        return Cert(self.cert_der)

    @functools.cached_property
    def cert_b64(self) -> str:
        """The certificate as every answer's ``cocoon`` object carries it, encoded once."""
        return self.cert.b64.decode()

    @functools.cached_property
    def stake_address(self) -> Address:
        return Address(self.stake)

    @property
    def operator_int(self) -> int:
        return int.from_bytes(self.operator_key, "big")

    async def send(self, frame: F.Frame) -> bool:
        if self.closed or self.ws.closed:
            return False
        try:
            async with self._send_lock:
                await self.ws.send_str(F.encode(frame))
            return True
        except (ConnectionError, RuntimeError):
            return False

    def pay(self, due: PayDue) -> None:
        """Pay the worker its new cumulative total (stored, not yet signed). Pays are cumulative, so
        the ones owed while a frame waits go out as one, the highest, signed when it leaves: at once
        when no pay left in the last PAY_EVERY seconds, else when that interval is over (a worker
        served one job after another verifies a pay per interval, and the proxy signs one), or at
        once when the worker nears its credit (:func:`pay_wait`)."""
        if self._pay is None or due.cumulative > self._pay.cumulative:
            self._pay = due
        loop = asyncio.get_running_loop()
        now = loop.time()
        unpaid = self._pay.cumulative - max(self._pay_sent, self._pay_signing)
        at = now + pay_wait(now, self._pay_sent_at, unpaid, self.credit)
        if self._pay_timer is not None:
            if self._pay_at <= at:
                return
            self._pay_timer.cancel()          # due sooner now: the worker nears its credit
        self._pay_at = at
        self._pay_timer = loop.call_later(at - now, self._flush_pay) if at > now else loop.call_soon(self._flush_pay)

    def _flush_pay(self) -> None:
        self._pay_timer = None
        asyncio.ensure_future(self._send_pay())

    async def _send_pay(self) -> None:
        """Sign the pay owed, keep the signature (docs/PROTOCOL.md §6: stored before it is sent; the
        write rides with the books' next commit, or has a commit of its own when the worker nears its
        credit, so that it does not wait for the next request), then send it, unless a higher one went
        out since."""
        p, self._pay = self._pay, None
        if p is None or p.cumulative <= self._pay_sent or self.signer is None:
            return
        self._pay_sent_at = asyncio.get_running_loop().time()
        soon = near_credit(p.cumulative - self._pay_sent, self.credit)
        self._pay_signing = max(self._pay_signing, p.cumulative)
        try:
            sig = await self.signer(p, soon)
        except Exception as e:        # the books failed: owed still, signed at the next pay or reconnect
            log.error("the pay of %d to worker %s could not be kept: %s", p.cumulative, self.owner, e)
            self._pay_signing = self._pay_sent
            return
        if sig is None or p.cumulative <= self._pay_sent:
            return
        self._pay_sent = p.cumulative
        await self.send(pay_frame(p.channel, p.cumulative, sig))

    def open_job(self, job_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.jobs[job_id] = q
        self.load.in_flight += 1
        return q

    def close_job(self, job_id: str) -> None:
        if self.jobs.pop(job_id, None) is not None:
            self.load.in_flight = max(0, self.load.in_flight - 1)

    def lost(self) -> None:
        self.closed = True
        self.load.up = False
        for q in self.jobs.values():
            q.put_nowait(LINK_LOST)


class WorkerPool:
    """The connected workers, by owner."""

    def __init__(self) -> None:
        self.links: dict[str, WorkerLink] = {}

    def loads(self) -> list[WorkerLoad]:
        return [l.load for l in self.links.values() if not l.closed]

    def get(self, owner: str) -> Optional[WorkerLink]:
        link = self.links.get(owner)
        return link if link is not None and not link.closed else None

    def models(self) -> dict[str, list[WorkerLink]]:
        out: dict[str, list[WorkerLink]] = {}
        for l in self.links.values():
            if not l.closed and l.load.up:
                out.setdefault(l.model, []).append(l)
        return out


class Refusal(Exception):
    """Why a worker is not admitted; the text goes into the ``refused`` frame."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.code = code


async def check_worker(core, hello: F.Hello, claims, image_hash: Optional[bytes]) -> S.StakeState:
    """The admission rules; raises :class:`Refusal` naming the first one broken."""
    from .chainview import raw

    if claims is None or claims.role != "worker":
        raise Refusal("the attested claims do not name the worker role", "claims")
    if claims.operator is None or raw(claims.operator) != raw(hello.owner):
        raise Refusal(f"the attested operator {claims.operator!r} is not the owner {hello.owner} the hello names",
                      "claims")
    if claims.model_hash is None or claims.model_hash.hex() != hello.model_hash:
        raise Refusal("the hello's model hash is not the attested one", "claims")
    snap = core.snapshots.current()
    if claims.model_hash not in snap.model_hashes:
        raise Refusal(f"model {hello.model_hash} is not allowed in the registry", "model")
    if image_hash is not None and image_hash not in snap.worker_image_hashes:
        raise Refusal(f"worker image {image_hash.hex()} is not allowed in the registry", "image")
    st = await core.chain.worker_stake(Address(hello.owner))
    if st is None:
        raise Refusal(f"the owner {hello.owner} has no worker stake", "stake")
    if not st.is_active:
        raise Refusal("the worker's stake is not active (below the minimum, jailed or unbonding)", "stake")
    if st.operator_key != int.from_bytes(claims.public_key, "big"):
        raise Refusal("the worker's stake is bound to another operator key than the attested one", "stake")
    return st


async def link_handler(request: web.Request) -> web.StreamResponse:
    from .chainview import raw
    from .core import CORE

    core = request.app[CORE]
    verdict = peer_verdict(request)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=F.MAX_FRAME, compress=False)
    await ws.prepare(request)
    try:
        msg = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT)
    except asyncio.TimeoutError:
        await ws.close(code=F.CLOSE_PROTOCOL_ERROR, message=b"no hello")
        return ws
    if msg.type != WSMsgType.TEXT:
        await ws.close(code=F.CLOSE_PROTOCOL_ERROR, message=b"a link starts with hello")
        return ws
    try:
        hello = F.decode(msg.data, sender="worker")
        if not isinstance(hello, F.Hello):
            raise F.FrameError("a link starts with hello")
    except F.FrameError as e:
        await ws.close(code=F.CLOSE_PROTOCOL_ERROR, message=str(e).encode()[:120])
        return ws
    claims = verdict.claims if verdict is not None else None
    image = verdict.image_hash if verdict is not None else None
    try:
        await check_worker(core, hello, claims, image)
    except Refusal as r:
        core.metrics.refused_workers.labels(r.code).inc()
        log.warning("refusing worker %s: %s", hello.owner, r)
        await core.ledger.worker_state(raw(hello.owner), claims.public_key.hex() if claims else "",
                                       "refused", str(r))
        await ws.send_str(F.encode(F.Refused(str(r))))
        await ws.close(code=F.CLOSE_REFUSED, message=b"refused")
        return ws
    transport = request.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    cert = sslobj.getpeercert(binary_form=True) if sslobj is not None else b""
    owner = raw(hello.owner)
    old = core.pool.get(owner)
    if old is not None:  # a reconnect: the old link is gone for good
        old.lost()
        await old.ws.close()
    score = await core.chain.score(Address(owner))
    link = WorkerLink(ws, owner, claims.public_key, hello.model, hello.model_hash, hello.coefficient, hello.credit,
                      image, cert or b"",
                      WorkerLoad(owner, hello.model, hello.coefficient, hello.max_jobs, score=score))
    try:
        channel, paid, voucher = await core.worker_channel(link)
    except Exception as e:  # the proxy's own failure (chain unreachable, wallet empty)
        log.exception("cannot open the channel to worker %s", owner)
        await ws.send_str(F.encode(F.Refused(f"the proxy cannot pay workers right now: {e}")))
        await ws.close(code=F.CLOSE_REFUSED, message=b"proxy failure")
        return ws
    link.channel = channel
    link.stake = raw(core.chain.stake_address(Address(owner), S.ROLE_WORKER))
    link.signer = core.signed_pay
    link._pay_sent = link._pay_signing = paid
    await ws.send_str(F.encode(F.Welcome(core.owner_raw, channel, paid, voucher)))
    core.pool.links[owner] = link
    core.metrics.workers.set(len(core.pool.loads()))
    core.metrics.worker_score.labels(owner).set(score)
    log.info("worker %s admitted: model %s, coefficient %d, %d jobs at once, score %d", owner, hello.model,
             hello.coefficient, hello.max_jobs, score)
    due = core.ledger.pay_due(owner)
    if due is not None:   # owed beyond the pay signed to it (the proxy stopped before signing it)
        link.pay(due)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                frame = F.decode(msg.data, sender="worker")
            except F.FrameError as e:
                log.warning("worker %s sent a bad frame: %s", owner, e)
                await ws.close(code=F.CLOSE_PROTOCOL_ERROR, message=str(e).encode()[:120])
                break
            if isinstance(frame, F.Load):
                link.load.max_jobs = frame.max_jobs
                continue
            if isinstance(frame, F.Hello):
                await ws.close(code=F.CLOSE_PROTOCOL_ERROR, message=b"hello twice")
                break
            q = link.jobs.get(getattr(frame, "job_id", ""))
            if q is not None:
                q.put_nowait(frame)
            elif isinstance(frame, F.ReceiptFrame):   # re-sent after the proxy restarted mid-job
                asyncio.ensure_future(core.late_receipt(link, frame))
    finally:
        link.lost()
        if core.pool.links.get(owner) is link:
            del core.pool.links[owner]
        core.metrics.workers.set(len(core.pool.loads()))
        if owner not in core.pool.links:
            try:
                core.metrics.worker_score.remove(owner)
            except KeyError:
                pass
        if link.dropped is None:
            await core.ledger.worker_state(owner, claims.public_key.hex(), "down", "link closed")
        log.info("worker %s disconnected", owner)
    return ws


def pay_frame(channel: str, amount: int, signature: bytes) -> F.Pay:
    return F.Pay(Voucher(Address(channel), amount, signature))

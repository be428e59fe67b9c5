"""A test-side proxy end of the worker link: it accepts the worker's mutual RA-TLS WebSocket, speaks
the frames of node/link/frames.py and lets a test send jobs, cancels and vouchers and read what the
worker answers. It runs its own event loop in a thread so that tests stay synchronous. This is a test
harness for the worker's side of the protocol, not a proxy."""
from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import aiohttp
from aiohttp import web

from node.link import frames as F
from node.tee.providers import SimulatedProvider
from node.tee.ratls import Identity, PeerVerifier, RaTlsSite, peer_verdict
from node.tee.registry_source import SnapshotSource
from node.tee.simulated import SimulatedTdx, default_measurements
from node.tee.verify import Policy
from node.payments.vouchers import Voucher

from .world import PROXY_IMAGE_NAME, World, raw


@dataclass
class JobOutcome:
    frames: list = field(default_factory=list)

    @property
    def chunks(self) -> list[dict]:
        return [f.data for f in self.frames if isinstance(f, F.Chunk)]

    @property
    def result(self) -> Optional[F.Result]:
        return next((f for f in self.frames if isinstance(f, F.Result)), None)

    @property
    def receipt(self) -> Optional[F.ReceiptFrame]:
        return next((f for f in self.frames if isinstance(f, F.ReceiptFrame)), None)


class Peer:
    def __init__(self, world: World, port: int, *, refuse: Optional[str] = None, welcome_voucher: Optional[Voucher] = None):
        self.world, self.port, self.refuse = world, port, refuse
        self.welcome_voucher = welcome_voucher
        self.loop = asyncio.new_event_loop()
        self.hellos: "queue.Queue[F.Hello]" = queue.Queue()
        self.closes: "queue.Queue[Optional[int]]" = queue.Queue()
        self.loads: list[F.Load] = []
        self.jobs: dict[str, "queue.Queue[F.Frame]"] = {}
        self.unmatched: "queue.Queue[F.Frame]" = queue.Queue()
        self.ws: Optional[web.WebSocketResponse] = None
        self.verdicts: list = []
        self._thread = threading.Thread(target=self._run, name="peer", daemon=True)
        self._started = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Peer":
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the test peer did not start")
        return self

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._stop(), self.loop)
        fut.result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(15)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._started.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        w = self.world
        provider = SimulatedProvider(SimulatedTdx(w.root, default_measurements(PROXY_IMAGE_NAME)))
        ident = Identity.create(provider, role="proxy", operator=raw(w.proxy.wallet.address), key=w.proxy.key)
        self.source = SnapshotSource.fixed(w.snapshot())
        verifier = PeerVerifier(Policy("worker", dev_trust=w.root.trust()), self.source)
        app = web.Application()
        app.router.add_get("/v1/link", self._link)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.site = RaTlsSite(self.runner, "127.0.0.1", self.port, identity=ident, verifier=verifier)
        await self.site.start()

    async def _stop(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        await self.runner.cleanup()

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # ------------------------------------------------------------------ the link
    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=F.MAX_FRAME)
        await ws.prepare(request)
        self.verdicts.append(peer_verdict(request))
        msg = await ws.receive(timeout=30)
        hello = F.decode(msg.data, sender="worker")
        self.hellos.put(hello)
        if self.refuse:
            await ws.send_str(F.encode(F.Refused(self.refuse)))
            await ws.close(code=F.CLOSE_REFUSED)
            return ws
        v = self.welcome_voucher
        await ws.send_str(F.encode(F.Welcome(raw(self.world.proxy.wallet.address),
                                             raw(self.world.channel.escrow.address), v.amount if v else 0, v)))
        self.ws = ws
        code = None
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.CLOSE:
                code = msg.data
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                code = ws.close_code
                break
            frame = F.decode(msg.data, sender="worker")
            if isinstance(frame, F.Load):
                self.loads.append(frame)
                continue
            q = self.jobs.get(getattr(frame, "job_id", None))
            (q if q is not None else self.unmatched).put(frame)
        await ws.close()
        self.closes.put(code)
        if self.ws is ws:
            self.ws = None
        return ws

    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def wait_connected(self, timeout: float = 60) -> F.Hello:
        hello = self.hellos.get(timeout=timeout)
        deadline = time.monotonic() + timeout
        while not self.connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        return hello

    def send(self, frame: F.Frame) -> None:
        async def go():
            await self.ws.send_str(F.encode(frame))
        self.call(go())

    def send_raw(self, text: str) -> None:
        async def go():
            await self.ws.send_str(text)
        self.call(go())

    def submit(self, endpoint: str, body: bytes, stream: bool = False, timeout: float = 120,
               job_id: Optional[str] = None) -> str:
        job_id = job_id or os.urandom(32).hex()
        self.jobs[job_id] = queue.Queue()
        self.send(F.Job(job_id, endpoint, body, stream, timeout))
        return job_id

    def collect(self, job_id: str, timeout: float = 120, after_result: float = 1.0) -> JobOutcome:
        """Frames of one job until its receipt (or a refusal that carries none)."""
        out = JobOutcome()
        q = self.jobs[job_id]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wait = deadline - time.monotonic()
            if out.result is not None and out.result.status >= 400:
                wait = min(wait, after_result)
            try:
                f = q.get(timeout=max(0.01, wait))
            except queue.Empty:
                if out.result is not None:
                    return out
                continue
            out.frames.append(f)
            if isinstance(f, F.ReceiptFrame):
                return out
        raise TimeoutError(f"job {job_id[:8]} did not end within {timeout} s: {out.frames}")

    def next_frame(self, job_id: str, timeout: float = 60) -> F.Frame:
        return self.jobs[job_id].get(timeout=timeout)

"""The proxy's aiohttp applications and how they are served.

``init(settings)`` returns the clients application (the OpenAI surface and the Cocoon endpoints);
its clean-up context starts the :class:`~.core.ProxyCore` (start-up checks included), the workers
listener (mutual RA-TLS WebSocket), the metrics listener (plain HTTP, for Prometheus on the host)
and the background tasks. :func:`serve` puts the clients application behind an RA-TLS site.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Optional

from aiohttp import web

from node.link.endpoint import LINK_PATH
from node.openai.errors import error_middleware
from node.tee.ratls import RaTlsSite, renew_forever

from . import settlement
from .core import CORE, ProxyCore
from .settings import ProxySettings
from .workers import link_handler

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- routes
async def models(request: web.Request) -> web.Response:
    return web.json_response(request.app[CORE].models())


async def chat(request: web.Request) -> web.StreamResponse:
    return await request.app[CORE].completions(request, "chat")


async def completion(request: web.Request) -> web.StreamResponse:
    return await request.app[CORE].completions(request, "completion")


async def settle(request: web.Request) -> web.Response:
    return await request.app[CORE].settle(request)


async def channel(request: web.Request) -> web.Response:
    return await request.app[CORE].channel_info(request)


async def metrics(request: web.Request) -> web.Response:
    body, ctype = request.app[CORE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": ctype})


async def health(request: web.Request) -> web.Response:
    core = request.app[CORE]
    return web.json_response({"ok": True, "workers": len(core.pool.loads()), "owner": core.owner_raw})


# ---------------------------------------------------------------------------- applications
RUNNERS: "web.AppKey[list]" = web.AppKey("cocoon_proxy_runners", list)


def init(settings: ProxySettings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body + 1024)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completion)
    app.router.add_post("/v1/cocoon/settle", settle)
    app.router.add_get("/v1/cocoon/channel", channel)
    app[CORE] = ProxyCore(settings)
    app.cleanup_ctx.append(_service)
    return app


async def _service(app: web.Application):
    core: ProxyCore = app[CORE]
    s = core.s
    try:
        await core.start()
    except BaseException:
        await core.stop()
        raise
    runners: list[web.AppRunner] = []
    tasks: list[asyncio.Task] = []
    try:
        workers = web.Application()
        workers[CORE] = core
        workers.router.add_get(LINK_PATH, link_handler)
        wr = web.AppRunner(workers, handle_signals=False, access_log=None)
        await wr.setup()
        runners.append(wr)
        wsite = RaTlsSite(wr, s.workers_host, s.workers_port, identity=core.identity, verifier=core.worker_verifier)
        await wsite.start()
        core.worker_site = wsite
        mapp = web.Application()
        mapp[CORE] = core
        mapp.router.add_get("/metrics", metrics)
        mapp.router.add_get("/healthz", health)
        mr = web.AppRunner(mapp, handle_signals=False, access_log=None)
        await mr.setup()
        runners.append(mr)
        await web.TCPSite(mr, s.metrics_host, s.metrics_port).start()
        tasks = [
            asyncio.create_task(settlement.loop(core, s.settle_every, settlement.settlement_pass, "settlement")),
            asyncio.create_task(settlement.loop(core, s.epoch, settlement.report_pass, "reputation report")),
            asyncio.create_task(settlement.loop(core, s.refresh, lambda c: c.recheck_workers(), "worker re-check")),
        ]
        app[RUNNERS] = runners
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await core.stop()
        for r in reversed(runners):
            await r.cleanup()


async def serve(settings: ProxySettings, ready: Optional[callable] = None) -> None:
    """Run the proxy until SIGINT or SIGTERM; ``ready(core)`` is called once every listener is up."""
    app = init(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    core: ProxyCore = app[CORE]
    site = RaTlsSite(runner, settings.clients_host, settings.clients_port, identity=core.identity,
                     verifier=core.client_verifier)
    renew: Optional[asyncio.Task] = None
    try:
        await site.start()
        renew = asyncio.create_task(renew_forever(core._make_identity, [site, core.worker_site]))
        if ready is not None:
            ready(core)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if renew is not None:
            renew.cancel()
        await runner.cleanup()

"""The gateway's HTTP surface on 127.0.0.1: a thin router over :mod:`node.client.gateway`.

``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (OpenAI's API; with an
API key configured, callers send ``Authorization: Bearer KEY``), ``GET /v1/cocoon/status`` (what
``cocoon client status`` shows) and ``GET /metrics``. Errors are OpenAI error objects
(:mod:`node.openai.errors`).
"""
from __future__ import annotations

import hmac
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node.chain import open_network, load_keys
from node.openai.errors import APIError, error_middleware
from pytoniq_core import Address

from .chain import ClientChain
from .gateway import Gateway
from .metrics import Metrics
from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)

GATEWAY = web.AppKey("gateway", Gateway)
SETTINGS = web.AppKey("settings", Settings)


def _auth_middleware(api_key: str | None):
    @web.middleware
    async def auth(request: web.Request, handler):
        if api_key and request.path.startswith("/v1/"):
            got = request.headers.get("Authorization", "")
            token = got[7:] if got.startswith("Bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                raise APIError(401, "Incorrect API key provided. Pass the gateway's --api-key as the bearer token.",
                               code="invalid_api_key")
        return await handler(request)
    return auth


async def models(request: web.Request) -> web.Response:
    return web.json_response(await request.app[GATEWAY].models())


async def chat(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].handle(request, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].handle(request, "completion")


async def status(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    await gw.store.caught_up()      # every answer returned so far is counted
    return web.json_response(gw.status())


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    await gw.store.caught_up()
    st = gw.status()
    gw.metrics.budget.set(st["budget"])
    gw.metrics.settled.set(st["spent"])
    gw.metrics.deposited.set(st["deposited"])
    return web.Response(body=generate_latest(gw.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def init(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware, _auth_middleware(settings.api_key)],
                          client_max_size=8 << 20)
    app[SETTINGS] = settings

    async def lifecycle(app: web.Application):
        keys = load_keys(settings.mnemonic_file, settings.key_file)
        net = await open_network(settings.network, api_key=settings.api_key_chain)
        store = Store(settings.db_path)
        gw = Gateway(settings, store, ClientChain(net, Address(settings.registry), keys, settings.wallet_version),
                     Metrics())
        try:
            await gw.start()
            app[GATEWAY] = gw
            yield
        finally:
            await gw.stop()
            store.close()
            await net.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/cocoon/status", status)
    app.router.add_get("/metrics", metrics)
    return app

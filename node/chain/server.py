"""`cocoon chain serve`: the embedded chain behind a toncenter-v2-compatible HTTP API.

Routes (a thin layer over :mod:`node.chain.api` and :mod:`node.chain.service`):

* ``POST /api/v2/jsonRPC`` ``{"id", "jsonrpc": "2.0", "method", "params"}`` and
  ``GET|POST /api/v2/METHOD`` (query string or JSON body): toncenter's methods and answers
  ``{"ok": true, "result": ...}`` / ``{"ok": false, "error": TEXT, "code": 4xx}``.
* Development only, apart from toncenter's: ``POST /dev/fund {"address", "amount"}`` (nanoTON from
  the faucet), ``POST /dev/advance {"seconds"}`` (bounded), ``GET /dev/now``, and
  ``GET /dev/trace?hash=`` (the transactions an external message caused, as BoCs), ``GET /dev/supply``
  (minted, balances, fees: the books of the whole chain).
* ``GET /metrics``: Prometheus.

Every error is mapped to toncenter's error body in one place (:func:`errors`); a bug answers 500
with a short text, never a traceback.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from wrappers.chain import toncenter as T

from .api import ApiError, Methods
from .service import ChainService, Refused

log = logging.getLogger("cocoon.chain")
MAX_BODY = 4 * 1024 * 1024


@dataclass
class Settings:
    state: Path = Path(".cocoon/chain")
    host: str = "127.0.0.1"
    port: int = 8081
    checkpoint_interval: float = 2.0


SERVICE = web.AppKey("service", ChainService)
METHODS = web.AppKey("methods", Methods)
METRICS = web.AppKey("metrics", object)


def _body(ok: bool, payload: Any, code: int = 200, rpc_id: Any = None, rpc: bool = False) -> web.Response:
    doc: dict = {"ok": ok}
    if ok:
        doc["result"] = payload
    else:
        doc.update(error=payload, code=code)
    if rpc:
        doc.update(jsonrpc="2.0", id=rpc_id)
    return web.json_response(doc, status=code)


@web.middleware
async def errors(request: web.Request, handler):
    """toncenter's error shape for every failure; never a traceback."""
    try:
        return await handler(request)
    except ApiError as e:
        return _body(False, e.message, e.code, request.get("rpc_id"), request.get("rpc", False))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _body(False, e.reason, e.status)
    except Exception:
        log.exception("internal error serving %s", request.path)
        return _body(False, "internal error", 500, request.get("rpc_id"), request.get("rpc", False))


async def _json(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    try:
        doc = json.loads(await request.read())
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "the body must be a JSON object")
    return doc


async def json_rpc(request: web.Request) -> web.Response:
    request["rpc"] = True
    doc = await _json(request)
    request["rpc_id"] = doc.get("id")
    method = doc.get("method")
    if not isinstance(method, str):
        raise ApiError(422, "a JSON-RPC call names its method")
    result = await request.app[METHODS].call(method, doc.get("params") or {})
    request.app[METRICS].calls.labels(method).inc()
    return _body(True, result, rpc_id=doc.get("id"), rpc=True)


async def rest(request: web.Request) -> web.Response:
    method = request.match_info["method"]
    params: dict = dict(request.query)
    if request.method == "POST":
        params.update(await _json(request))
    result = await request.app[METHODS].call(method, params)
    if method in request.app[METHODS].table:
        request.app[METRICS].calls.labels(method).inc()
    return _body(True, result)


# ---------------------------------------------------------------------------- development endpoints
def _dev_int(doc: dict, name: str) -> int:
    v = doc.get(name)
    try:
        if isinstance(v, bool):
            raise TypeError
        return int(v)
    except (TypeError, ValueError):
        raise ApiError(422, f"{name} must be an integer") from None


async def dev_fund(request: web.Request) -> web.Response:
    doc = await _json(request)
    try:
        a = T.parse_address(doc.get("address"))
    except T.FormatError as e:
        raise ApiError(416, str(e)) from None
    svc = request.app[SERVICE]
    try:
        txs = await svc.fund(a, _dev_int(doc, "amount"))
    except Refused as e:
        raise ApiError(400, str(e)) from None
    return _body(True, {"address": T.friendly(a), "balance": str(svc.chain.balance(a)), "transactions": len(txs)})


async def dev_advance(request: web.Request) -> web.Response:
    doc = await _json(request)
    try:
        now = await request.app[SERVICE].advance(_dev_int(doc, "seconds"))
    except Refused as e:
        raise ApiError(400, str(e)) from None
    return _body(True, {"now": now})


async def dev_now(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    return _body(True, {"now": svc.chain.now, "block": svc.block})


async def dev_supply(request: web.Request) -> web.Response:
    """The money supply: what the faucet minted, what the accounts hold, what fees took
    (minted = balances + fees whenever no message is in flight)."""
    chain = request.app[SERVICE].chain
    return _body(True, {"minted": str(chain.minted), "balances": str(chain.total_balance()),
                        "fees": str(chain.fees_collected()), "accounts": len(chain.accounts)})


async def dev_trace(request: web.Request) -> web.Response:
    try:
        h = T.parse_hash(request.query.get("hash"), "hash")
    except T.FormatError as e:
        raise ApiError(400, str(e)) from None
    rows = request.app[SERVICE].store.trace(h)
    return _body(True, {"transactions": [{"account": T.friendly(_a(acc)), "boc": T.b64(boc)} for acc, boc in rows]})


def _a(key: str):
    from pytoniq_core import Address

    return Address(key)


# ---------------------------------------------------------------------------- metrics
class _Metrics:
    def __init__(self, svc: ChainService):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.calls = Counter("cocoon_chain_api_calls", "toncenter API calls served", ["method"], registry=self.registry)
        Gauge("cocoon_chain_block", "masterchain seqno", registry=self.registry).set_function(lambda: svc.block)
        Gauge("cocoon_chain_now", "the chain's time", registry=self.registry).set_function(lambda: svc.chain.now)
        for k in ("messages", "rejected", "transactions", "commits"):
            Gauge(f"cocoon_chain_{k}", f"{k} since start", registry=self.registry).set_function(
                lambda k=k: svc.stats.get(k, 0))
        Gauge("cocoon_chain_minted_nanoton", "value created by the faucet", registry=self.registry).set_function(
            lambda: svc.chain.minted)


async def metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def not_found(request: web.Request) -> web.Response:
    raise ApiError(404, f"no such endpoint {request.path}; the API is under /api/v2/ (toncenter v2) and /dev/")


# ---------------------------------------------------------------------------- the application
def init(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY)
    svc = ChainService(settings.state, settings.checkpoint_interval)
    app[SERVICE] = svc
    app[METHODS] = Methods(svc)
    app[METRICS] = _Metrics(svc)

    async def lifecycle(app: web.Application):
        await svc.start()
        yield
        await svc.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/api/v2/jsonRPC", json_rpc)
    app.router.add_route("GET", "/api/v2/{method}", rest)
    app.router.add_route("POST", "/api/v2/{method}", rest)
    app.router.add_post("/dev/fund", dev_fund)
    app.router.add_post("/dev/advance", dev_advance)
    app.router.add_get("/dev/now", dev_now)
    app.router.add_get("/dev/trace", dev_trace)
    app.router.add_get("/dev/supply", dev_supply)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


def serve(settings: Settings, print_fn=print) -> None:
    """Run until SIGINT/SIGTERM; the state is checkpointed on the way out."""
    app = init(settings)

    def announce(_aiohttp_banner: str) -> None:  # called once the port is bound
        svc = app[SERVICE]
        print_fn(f"chain server on http://{settings.host}:{settings.port} (toncenter v2 at /api/v2/, dev at /dev/); "
                 f"state in {settings.state}; block {svc.block}, time {svc.chain.now}")

    web.run_app(app, host=settings.host, port=settings.port, print=announce, access_log=None, handle_signals=True)

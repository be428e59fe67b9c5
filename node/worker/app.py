"""The worker service: start-up checks, then the link, the registry watch and the claim loop, with
``/metrics`` on a small local HTTP listener.

    app = init(settings)          # web.Application; checks run when it starts
    web.run_app(app, host=settings.metrics_host, port=settings.metrics_port)
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pytoniq_core import Address

from node.chain import CocoonError, load_keys
from node.openai.errors import error_middleware
from node.tee.quote import parse_quote
from node.tee.ratls import Identity, PeerVerifier, RaTlsConnector, renew_forever
from node.tee.registry_source import RegistrySnapshot, SnapshotSource
from node.tee.verify import Policy
from wrappers import keys as K
from node.payments import policy as CP
from wrappers import escrow as E
from wrappers.keys import signing_key

from .chain import WorkerChain, WorkerError, model_hash
from .engines import HttpEngine, LlamaEngine
from .link import Link, LinkConfig
from .metrics import Metrics
from .serving import Identity as ReceiptIdentity
from .serving import Server
from .settings import WorkerSettings
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class Worker:
    settings: WorkerSettings
    store: Store
    metrics: Metrics
    chain: Optional[WorkerChain] = None
    link: Optional[Link] = None
    server: Optional[Server] = None
    snapshots: Optional[SnapshotSource] = None
    image_hash: bytes = b""
    model_hash: bytes = b""
    simulated: bool = True


WORKER = web.AppKey("worker", Worker)


def load_operator_key(path: str):
    try:
        return signing_key(load_keys(key_file=path).private)
    except CocoonError as e:
        raise WorkerError(str(e)) from None


def tee_provider(s: WorkerSettings):
    if s.tee == "simulated":
        from node.tee.providers import SimulatedProvider
        from node.tee.simulated import DevRoot, SimulatedTdx, default_measurements, load_measurements

        try:
            root = DevRoot.load(s.dev_root)
            meas = load_measurements(s.measurements) if s.measurements else default_measurements(s.image)
        except (OSError, ValueError) as e:
            raise WorkerError(str(e)) from None
        return SimulatedProvider(SimulatedTdx(root, meas)), root.trust()
    from node.tee.providers import ConfigfsTsmProvider

    p = ConfigfsTsmProvider()
    if not p.available():
        raise WorkerError("--tee tdx: configfs-tsm is not available here (not a TDX guest); use --tee simulated "
                          "with a test registry")
    return p, None


def _allowed(snap: RegistrySnapshot, image: bytes, model: bytes, simulated: bool) -> Optional[str]:
    """None if the registry allows this worker, else why not."""
    if model not in snap.model_hashes:
        return f"the model hash {model.hex()} is not allowed in the registry (v{snap.version})"
    if image not in snap.worker_image_hashes:
        return f"this worker's image hash {image.hex()} is not an allowed worker image (registry v{snap.version})"
    if simulated and not snap.is_test:
        return "the registry is not a test registry, so a simulated TEE is not accepted"
    return None


async def start(w: Worker) -> list:
    """The start-up checks, each with its own error; then the background tasks."""
    s = w.settings
    key = load_operator_key(s.operator_key_file)
    try:
        owner = Address(s.owner)
        registry = Address(s.registry)
    except Exception:
        raise WorkerError("--owner and --registry must be TON addresses") from None
    w.chain = chain = WorkerChain(s.network, registry, s.chain_state)
    snap = await chain.snapshot()
    w.model_hash = await asyncio.to_thread(model_hash, s.model)
    if w.model_hash not in snap.model_hashes:
        raise WorkerError(f"the model {Path(s.model).name} (SHA-256 {w.model_hash.hex()}) is not allowed in the "
                          f"registry (v{snap.version})")
    provider, dev_trust = tee_provider(s)
    w.simulated = bool(getattr(provider, "simulated", False))
    owner_raw = owner.to_str(is_user_friendly=False)
    make_identity = lambda: Identity.create(provider, role="worker", model_hash=w.model_hash, operator=owner_raw,
                                            key=key)
    ident = await asyncio.to_thread(make_identity)
    w.image_hash = parse_quote(ident.quote).image_hash
    why = _allowed(snap, w.image_hash, w.model_hash, w.simulated)
    if why:
        raise WorkerError(why)
    op_key = K.public_key_int(key)
    stake = await chain.check_stake(owner, op_key)
    params = await chain.params()
    economics = params.economics

    if s.engine == "llama":
        engine = LlamaEngine(s.model, n_ctx=s.n_ctx, threads=s.threads, parallel=s.parallel, queue=s.queue,
                             max_output_tokens=s.max_output_tokens)
    else:
        engine = HttpEngine(s.engine_url, s.model, engine_model=s.engine_model, parallel=s.parallel, queue=s.queue,
                            max_output_tokens=s.max_output_tokens, n_ctx=s.n_ctx)
    try:
        await engine.start()
    except Exception as e:
        raise WorkerError(f"the {s.engine} engine did not start: {e}") from None

    w.server = Server(engine, w.store, ReceiptIdentity(stake.address, key, s.coefficient), s.model_name,
                      lambda: economics, w.metrics, s.failpoint)
    w.snapshots = SnapshotSource(fetch=chain.snapshot, interval=s.registry_refresh)
    w.snapshots._snapshot, w.snapshots._fetched_at = snap, w.snapshots.clock()
    verifier = PeerVerifier(Policy("proxy", dev_trust=dev_trust), w.snapshots, collateral=_collateral(s))
    connectors: list = []

    def connector():
        c = RaTlsConnector(_current[0], verifier)
        connectors[:] = [c]         # renewal rotates the connector in use; closed ones are dropped
        return c

    _current = [ident]
    proxy_owner = Address(s.proxy) if s.proxy else None
    w.link = Link(LinkConfig(owner, s.model_name, w.model_hash, s.coefficient, engine.slots.capacity, s.credit,
                             proxy_owner, s.proxy_endpoint), w.server, w.store, chain, connector, verifier, w.metrics)
    w.link.server_max_timeout = s.max_timeout

    def on_snapshot(old, new: RegistrySnapshot) -> None:
        why = _allowed(new, w.image_hash, w.model_hash, w.simulated)
        if why:
            w.link.revoke(why)
        else:
            w.link.restore()

    w.snapshots.add_listener(on_snapshot)
    await w.snapshots.start()

    def renew() -> Identity:
        i = make_identity()
        _current[0] = i
        return i

    tasks = [asyncio.create_task(w.link.run_forever(), name="link"),
             asyncio.create_task(renew_forever(renew, connectors), name="identity"),
             asyncio.create_task(claim_loop(w), name="claims")]
    w.metrics.earned.set(w.store.earned())
    w.metrics.paid.set(w.store.paid())
    w.metrics.claimed.set(w.store.claimed())
    log.info("worker ready: model %s (%s), image %s, stake %s, %d slots + %d queued", s.model_name,
             w.model_hash.hex()[:16], w.image_hash.hex()[:16], stake.address.to_str(), engine.slots.parallel,
             engine.slots.queue)
    return tasks


def _collateral(s: WorkerSettings):
    if s.pccs_url:
        from node.tee.collateral import PccsCollateral

        return PccsCollateral(s.pccs_url, cache_dir=str(Path(s.state_dir) / "collateral"))
    return None


async def claim_once(w: Worker) -> Optional[int]:
    """Claim on each channel where :func:`node.payments.policy.should_claim` says so; returns what the
    last claim moved (None if none was sent)."""
    s = w.settings
    if not (s.hot_mnemonic_file or s.hot_key_file):
        return None
    hot = load_keys(mnemonic_file=s.hot_mnemonic_file, key_file=s.hot_key_file)
    moved = None
    for cid, channel, amount in w.store.pending_claims():     # reconcile what a crash left open
        ch = await w.chain.channel(Address(channel))
        w.store.claim_finished(cid, "confirmed" if ch and ch.claimed >= amount else "failed",
                               ch.claimed if ch else None)
    for channel, _owner, _amount in w.store.vouchers():
        v = w.store.voucher(channel)
        ch = await w.chain.channel(Address(channel))
        if v is None or ch is None:
            continue
        now = await w.chain.now()
        if not CP.should_claim(v.amount, ch, E.CLAIM_FEE, now, max_fee_share=s.claim_fee_share):
            continue
        cid = w.store.claim_started(channel, v.amount)
        try:
            bal = await (await w.chain.net()).balance(Address(channel))
            await w.chain.claim(hot, v, E.storage_deficit(bal, ch))
        except WorkerError as e:
            log.warning("%s", e)
            w.store.claim_finished(cid, "failed", None)
            continue
        after = await w.chain.channel(Address(channel))
        w.store.claim_finished(cid, "confirmed" if after and after.claimed > ch.claimed else "failed",
                               after.claimed if after else None)
        moved = (after.claimed - ch.claimed) if after else 0
        log.info("claimed %d nanoTON on %s", moved, channel)
    w.metrics.claimed.set(w.store.claimed())
    return moved


async def claim_loop(w: Worker) -> None:
    while True:
        await asyncio.sleep(w.settings.claim_interval)
        try:
            await claim_once(w)
        except Exception as e:
            log.warning("claim check failed: %s", e)


async def metrics_handler(request: web.Request) -> web.Response:
    w = request.app[WORKER]
    if w.server is not None:
        slots = w.server.engine.slots
        w.metrics.active.set(slots.active)
        w.metrics.queue.set(slots.waiting)
    return web.Response(body=generate_latest(w.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health_handler(request: web.Request) -> web.Response:
    w = request.app[WORKER]
    link = w.link
    return web.json_response({"state": link.state if link else "starting", "last_error": link.last_error if link else "",
                              "channel": link.channel if link else None, "model": w.settings.model_name,
                              "model_hash": w.model_hash.hex(), "image_hash": w.image_hash.hex(),
                              "time": time.time()})


async def _lifecycle(app: web.Application):
    w = app[WORKER]
    tasks = await start(w)
    yield
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if w.snapshots is not None:
        await w.snapshots.stop()
    if w.server is not None:
        await w.server.engine.close()
    if w.chain is not None:
        await w.chain.close()
    w.store.close()


def init(settings: WorkerSettings) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[WORKER] = Worker(settings, Store(settings.db_path), Metrics())
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/health", health_handler)
    app.cleanup_ctx.append(_lifecycle)
    return app

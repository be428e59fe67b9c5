"""``cocoon proxy``: run a proxy (attested routing, paid by client vouchers, paying workers) and see its books."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import click

from node import eventloop

from .context import UserError, guarded
from .options import (config_option, hostport, json_option, log_level_option, parse_ton, pccs_url_option,
                      service_chain_options, state_dir_option)

DEFAULT_STATE = Path(".cocoon/proxy")


state_option = state_dir_option(DEFAULT_STATE, "COCOON_PROXY_STATE",
                                "proxy's state folder: its SQLite ledger of vouchers, jobs, receipts, pay and claims")


@click.group()
def proxy() -> None:
    """The proxy: routes paid requests to attested, staked workers and keeps the books."""


@proxy.command()
@config_option('clients = "0.0.0.0:8443"')
@state_option
@service_chain_options(wallet="File with the hot wallet's 24 words (or set COCOON_MNEMONIC): it funds channels to "
                              "workers and pays claim fees. Never printed.",
                       key="Or a file with the hot wallet's 32-byte Ed25519 seed (hex or raw). Never printed.")
@click.option("--operator-key-file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The operator key (32-byte Ed25519 seed, hex or binary): the RA-TLS key registered for this "
                   "proxy; it signs reputation reports and the vouchers that pay workers.")
@click.option("--owner", help="The proxy owner's address, as registered (default: the hot wallet's).")
@click.option("--clients", default="127.0.0.1:8443", show_default=True, metavar="HOST:PORT",
              help="Where the clients listener (HTTPS, RA-TLS) listens.")
@click.option("--workers", default="127.0.0.1:8444", show_default=True, metavar="HOST:PORT",
              help="Where the workers listener (WebSocket, mutual RA-TLS) listens.")
@click.option("--public-endpoint", metavar="'C_HOST:PORT W_HOST:PORT'",
              help="The endpoint registered in the registry, if not the two listen addresses.")
@click.option("--metrics", default="127.0.0.1:9102", show_default=True, metavar="HOST:PORT",
              help="Where /metrics (Prometheus) and /healthz answer, plain HTTP: keep it on the host.")
@click.option("--tee", type=click.Choice(["simulated", "tdx"]), default="simulated", show_default=True,
              help="tdx: quotes through configfs-tsm; simulated: a development TEE (test registries only).")
@click.option("--dev-root", type=click.Path(file_okay=False, exists=True),
              help="Development root (`cocoon attest dev-root`): signs simulated quotes, and lets simulated "
                   "workers and clients in.")
@click.option("--image", default="proxy-image", show_default=True,
              help="Simulated TEE: the image name its measurements are derived from.")
@click.option("--measurements", type=click.Path(dir_okay=False, exists=True),
              help="Simulated TEE: this image's measurements (JSON, or {\"name\": ...}), instead of --image.")
@pccs_url_option
@click.option("--max-fee-share", type=click.FloatRange(0, 1), default=0.005, show_default=True,
              help="Claim from a client channel when the claim's fee is at most this share of what it settles.")
@click.option("--exposure-limit", default="50", show_default=True, metavar="TON",
              help="... or when this much is authorized by a client but not yet claimed.")
@click.option("--claim-fee", default="0.025", show_default=True, metavar="TON",
              help="What one claim costs, as the claim policy weighs it.")
@click.option("--worker-deposit", default="2", show_default=True, metavar="TON",
              help="Deposit of each channel to a worker, and the step of its top-ups.")
@click.option("--settle-grace", type=click.FloatRange(0), default=300.0, show_default=True,
              help="Seconds a client has to settle a request before it is held to the cap it signed.")
@click.option("--epoch", type=click.FloatRange(1), default=3600.0, show_default=True,
              help="Seconds between reputation reports.")
@click.option("--refresh", type=click.FloatRange(0.2, 3600), default=30.0, show_default=True,
              help="Seconds between registry refreshes (revoked images and models, stakes, scores).")
@click.option("--settle-every", type=click.FloatRange(0.2, 3600), default=10.0, show_default=True,
              help="Seconds between settlement passes (caps, claims, close notices, worker top-ups).")
@click.option("--job-timeout", type=click.FloatRange(1, 86400), default=300.0, show_default=True,
              help="Seconds a job may run on a worker.")
@click.option("--max-output-tokens", type=click.IntRange(1, 1_000_000), default=512, show_default=True,
              help="The max_tokens /v1/models advertises (gateways fill it in when the caller gave none).")
@log_level_option
@guarded
def run(state_dir: Path, registry: str, network: str, chain_api_key: Optional[str], operator_key_file: str,
        mnemonic_file: Optional[str], key_file: Optional[str], wallet_version: str, owner: Optional[str],
        clients: str, workers: str, public_endpoint: Optional[str], metrics: str, tee: str, dev_root: Optional[str],
        image: str, measurements: Optional[str], pccs_url: Optional[str], max_fee_share: float, exposure_limit: str,
        claim_fee: str, worker_deposit: str, settle_grace: float, epoch: float, refresh: float,
        settle_every: float, job_timeout: float, max_output_tokens: int, log_level: str) -> None:
    """Run a proxy: the clients listener, the workers listener and the books.

    At start it checks that it is registered in the registry with this endpoint and operator key,
    that its image is allowed and its stake active, and says which check failed. It admits workers
    whose image, model and stake the registry allows, routes each request to the worker expected to
    finish it first (weighted by reputation), stores every voucher before forwarding, pays workers by
    voucher, claims from client channels when the fee is worth it or a close notice runs, and reports
    each worker's statistics every epoch. Stop it with Ctrl-C; a kill -9 loses nothing acknowledged.
    """
    from node.chain import CocoonError, load_keys
    from node.proxy.app import serve
    from node.proxy.core import StartupError
    from node.proxy.settings import ClaimPolicy, ProxySettings

    logging.basicConfig(level=getattr(logging, log_level.upper()), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    from pytoniq_core import Address

    for what, value in (("--registry", registry), ("--owner", owner)):
        if value is not None:
            try:
                Address(value)
            except Exception:
                raise UserError(f"{what}: {value!r} is not a TON address") from None
    op = load_keys(key_file=operator_key_file)
    if not mnemonic_file and not key_file:
        import os

        if not os.environ.get("COCOON_MNEMONIC"):
            raise UserError("no hot wallet: pass --mnemonic-file FILE or --key-file FILE, or set COCOON_MNEMONIC")
    wallet = load_keys(mnemonic_file=mnemonic_file, key_file=key_file)
    ch, cp = hostport(clients, "clients")
    wh, wp = hostport(workers, "workers")
    mh, mp = hostport(metrics, "metrics")
    if public_endpoint:
        from node.link.endpoint import EndpointError, parse

        try:
            parse(public_endpoint)
        except EndpointError as e:
            raise UserError(f"--public-endpoint: {e}") from None
    settings = ProxySettings(
        network=network, registry=registry, operator_seed=op.private[:32], wallet_private=wallet.private,
        owner=owner, state_dir=state_dir, api_key=chain_api_key, wallet_version=wallet_version,
        clients_host=ch, clients_port=cp, workers_host=wh, workers_port=wp, public_endpoint=public_endpoint,
        metrics_host=mh, metrics_port=mp, tee=tee, dev_root=Path(dev_root) if dev_root else None, image=image,
        measurements=Path(measurements) if measurements else None, pccs_url=pccs_url,
        claim=ClaimPolicy(max_fee_share=max_fee_share, exposure_limit=parse_ton(exposure_limit, "--exposure-limit"),
                          claim_fee=parse_ton(claim_fee, "--claim-fee")),
        worker_deposit=parse_ton(worker_deposit, "--worker-deposit"), settle_grace=settle_grace, epoch=epoch,
        refresh=refresh, settle_every=settle_every, job_timeout=job_timeout, max_output_tokens=max_output_tokens)

    def ready(core) -> None:
        click.echo(f"proxy {core.owner_raw} serving: clients https://{ch}:{cp}, workers wss://{wh}:{wp}/v1/link, "
                   f"metrics http://{mh}:{mp}/metrics (image {core.image_hash.hex()[:16]}…, {tee} TEE)", err=True)

    try:
        eventloop.tune_gc()
        eventloop.run(serve(settings, ready))
    except StartupError as e:
        raise UserError(f"cannot start: {e}") from None
    except CocoonError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"cannot listen: {e.strerror or e}") from None


def _ton_str(n: int) -> str:
    return f"{n / 1e9:.9f}".rstrip("0").rstrip(".") + " TON"


@proxy.command()
@state_option
@json_option()
@guarded
def status(state_dir: Path, as_json: bool) -> None:
    """The proxy's books: clients, workers, what is owed and claimed, the margin, pending claims.

    Reads the state folder only; works whether the proxy runs or not.
    """
    from node.proxy.ledger import read_summary

    path = state_dir / "proxy.sqlite"
    if not path.exists():
        raise UserError(f"no proxy state in {state_dir} (start one with `cocoon proxy run`)")
    s = read_summary(path)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    out = [
        f"clients:          {s['clients']} channel(s), {s['jobs']} job(s) served, {s['running']} running",
        f"billed:           {_ton_str(s['billed'])} by receipts; settled {_ton_str(s['settled'])}"
        f" (of which {_ton_str(s['capped'])} held to caps)",
        f"owed by clients:  {_ton_str(s['owed'])} not yet claimed",
        f"claimed:          {_ton_str(s['claimed'])} in {s['claims']} claim(s), fees {_ton_str(s['claim_fees'])}",
        f"pending claims:   {s['pending_claims']}",
        f"paid to workers:  {_ton_str(s['worker_pay'])}",
        f"margin earned:    {_ton_str(s['margin'])}",
        f"reports sent:     {s['reports']}",
        f"workers:          {len(s['workers'])}",
    ]
    for w in s["workers"]:
        out.append(f"  {w['owner']}  {w['state']:<8} model {w['model'] or '?'}  coefficient {w['coefficient'] or '?'}  "
                   f"jobs {w.get('jobs', 0)} (ok {w.get('succeeded', 0)}, failed {w.get('failed', 0)}, "
                   f"timed out {w.get('timed_out', 0)})  paid {_ton_str(w['paid'])} of {_ton_str(w['deposited'])} "
                   f"deposited" + (f"  ({w['reason']})" if w.get("reason") else ""))
    click.echo("\n".join(out))
    sys.stdout.flush()

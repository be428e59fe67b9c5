"""``cocoon client``: the client gateway (a local OpenAI-compatible endpoint paid in TON) and its state."""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Optional

import click

from node import eventloop

from .context import UserError, guarded
from .options import (client_store as _store, config_option, json_option, log_level_option, parse_ton,
                      service_chain_options, state_dir_option, tee_trust_options, wallet_options)

DEFAULT_STATE = Path(".cocoon/client")

state_option = state_dir_option(DEFAULT_STATE, "COCOON_CLIENT_STATE",
                                "gateway's state folder: SQLite with its channels, totals signed and receipts")


@click.group()
def client() -> None:
    """The client gateway: any OpenAI client, paid in TON, every answer with a receipt you can check."""


@client.command("run")
@config_option('budget = "5"')
@state_option
@service_chain_options(wallet="File with your wallet's 24-word mnemonic (or set COCOON_MNEMONIC): it funds the "
                              "escrow. Never printed.",
                       key="Or a file with your wallet's 32-byte Ed25519 seed (hex or raw). Never printed.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it local).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--api-key", envvar="COCOON_CLIENT_API_KEY",
              help="Require this bearer token from callers (the OpenAI SDK's api_key). Default: none needed.")
@click.option("--budget", default="1", show_default=True, metavar="TON",
              help="The most the gateway pays in total, in TON; past it requests get 402.")
@click.option("--deposit", metavar="TON", help="First deposit and top-up step, in TON (default: the budget).")
@click.option("--max-coefficient", type=click.FloatRange(0.001, 65.0), default=2.0, show_default=True,
              help="The highest worker price coefficient accepted (1.0 = the registry's base price).")
@click.option("--proxy", default="auto", show_default=True,
              help="auto (a registered proxy chosen by stake and price; the next one when it fails) or a proxy "
                   "owner's address.")
@click.option("--proxy-endpoint", metavar="HOST:PORT",
              help="With a named --proxy: reach it here instead of its registered clients address (a tunnel). "
                   "Its attestation and registration are checked all the same.")
@tee_trust_options("Accept the simulated TEE of this development root (only with a test-flagged registry).")
@click.option("--refresh", type=click.FloatRange(0.2, 3600), default=30.0, show_default=True,
              help="Seconds between registry reads: revocations and proxy removals act at the next one.")
@click.option("--stake-ttl", type=click.FloatRange(0, 3600), default=10.0, show_default=True,
              help="Seconds a worker's stake reading is reused when checking receipts.")
@log_level_option
@guarded
def run_cmd(state_dir: Path, registry: str, network: str, chain_api_key: Optional[str], mnemonic_file: Optional[str],
            key_file: Optional[str], wallet_version: str, host: str, port: int, api_key: Optional[str], budget: str,
            deposit: Optional[str], max_coefficient: float, proxy: str, proxy_endpoint: Optional[str], dev_trust: Optional[str],
            pccs_url: Optional[str], accept_tcb: tuple[str, ...], refresh: float, stake_ttl: float,
            log_level: str) -> None:
    """Serve an OpenAI-compatible API on HOST:PORT, paid from your wallet through an attested proxy.

    Point any OpenAI client at http://HOST:PORT/v1. Each answer's receipt is checked before it is
    returned and paid; the receipt rides along as a `cocoon` field and is kept (`cocoon client
    receipts`). Stop with Ctrl-C; state survives restarts.
    """
    import logging

    from aiohttp import web
    from pytoniq_core import Address

    from node.chain import check_network
    from node.client.app import init
    from node.client.settings import Settings

    check_network(network)
    try:
        Address(registry)
    except Exception:
        raise UserError(f"--registry {registry!r} is not an address") from None
    if proxy != "auto":
        try:
            Address(proxy)
        except Exception:
            raise UserError(f"--proxy must be auto or a proxy owner's address, not {proxy!r}") from None
    if proxy_endpoint:
        p_host, sep, p_port = proxy_endpoint.rpartition(":")
        if proxy == "auto":
            raise UserError("--proxy-endpoint needs a named --proxy (the owner whose attestation is expected)")
        if not sep or not p_host or not p_port.isdigit() or not 0 < int(p_port) < 65536:
            raise UserError(f"--proxy-endpoint is HOST:PORT, not {proxy_endpoint!r}")
    budget_n = parse_ton(str(budget), "--budget")
    deposit_n = parse_ton(str(deposit), "--deposit") if deposit else None
    if budget_n <= 0:
        raise UserError("--budget must be above 0")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    settings = Settings(state_dir=state_dir, registry=registry, network=network, api_key_chain=chain_api_key,
                        mnemonic_file=mnemonic_file, key_file=key_file, wallet_version=wallet_version, host=host,
                        port=port, api_key=api_key, budget=budget_n, deposit=deposit_n,
                        max_coefficient=round(max_coefficient * 1000), proxy=proxy, proxy_endpoint=proxy_endpoint, dev_trust=dev_trust,
                        pccs_url=pccs_url, accept_tcb=tuple(accept_tcb) or ("UpToDate",), refresh=refresh,
                        stake_ttl=stake_ttl, failpoint=os.environ.get("COCOON_CLIENT_FAILPOINT") or None)
    app = init(settings)
    click.echo(f"cocoon client gateway: http://{host}:{port}/v1 (state {state_dir}, budget {budget_n / 1e9:g} TON)")
    eventloop.tune_gc()
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=5,
                loop=eventloop.new_event_loop())


def _fmt(n: int) -> str:
    return f"{n / 1e9:.9f}".rstrip("0").rstrip(".") + " TON"


@client.command("status")
@state_option
@json_option()
@guarded
def status_cmd(state_dir: Path, as_json: bool) -> None:
    """The gateway's money and work: proxy, channel, deposited, spent, budget left, requests, tokens,
    receipts verified (read from the state folder; the gateway may be running or not)."""
    from node.client.gateway import status_from_store

    st = status_from_store(_store(state_dir))
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    p = st["proxy"] or {}
    lines = [
        ("proxy", f"{p.get('owner')} at {p.get('url')}" if p else "none chosen yet"),
        ("channel", st["channel"] or "none open"),
        ("deposited", _fmt(st["deposited"])),
        ("spent", _fmt(st["spent"])),
        ("budget left", f"{_fmt(st['remaining_budget'])} of {_fmt(st['budget'])}"),
        ("requests", f"{st['requests']}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(st['requests_by_state'].items()))})"
                                            if st["requests_by_state"] else "")),
        ("tokens", f"{st['tokens']['prompt']} prompt, {st['tokens']['completion']} completion"),
        ("receipts", f"{st['receipts_verified']} verified, {st['receipts_failed']} failed (not paid)"),
    ]
    for ch in st["channels"]:
        if ch["disputed"]:
            lines.append(("disputed", f"{_fmt(ch['disputed'])} billed by {ch['proxy_owner']} for failed receipts"))
    for k, why in st["excluded_proxies"].items():
        lines.append(("excluded", f"proxy {int(k):064x}"[:30] + f"…: {why}"))
    w = max(len(k) for k, _ in lines)
    for k, v in lines:
        click.echo(f"{k:<{w}}  {v}")


@client.command("receipts")
@state_option
@json_option(
    help="Print a JSON list of self-contained receipt records (each one a file `cocoon receipt verify` reads).")
@click.option("--limit", type=click.IntRange(1), help="Only the newest N.")
@click.option("--failed", is_flag=True, help="Only receipts that failed verification.")
@guarded
def receipts_cmd(state_dir: Path, as_json: bool, limit: Optional[int], failed: bool) -> None:
    """The receipts of the answers served, newest last."""
    store = _store(state_dir)
    rows = [r for r in store.receipts(limit) if not failed or not r.ok]
    if as_json:
        click.echo(json.dumps([store.export(r) for r in rows], indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no receipts yet")
        return
    click.echo(f"{'id':>4}  {'when (UTC)':<19}  {'model':<24} {'tokens':>11}  {'paid':>16}  {'job':<16}  result")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at))
        tokens = f"{r.prompt_tokens}+{r.completion_tokens}"
        result = "verified" if r.ok else "FAILED: " + ", ".join(r.verdict.get("failed") or [])
        click.echo(f"{r.id:>4}  {when:<19}  {r.model[:24]:<24} {tokens:>11}  {_fmt(r.paid):>16}  {r.job_id[:16]}  {result}")


@client.command("close")
@state_option
@wallet_options(mnemonic="File with the wallet's 24-word mnemonic (or set COCOON_MNEMONIC): the one that funds "
                         "the gateway's channels. Never printed.",
                key="Or a file with that wallet's 32-byte Ed25519 seed (hex or raw). Never printed.",
                version="Wallet contract version of that key.")
@click.option("--network", help="Chain (default: the one the gateway used).")
@click.option("--finish", is_flag=True, help="After the close delay: send finish, returning the rest to the wallet.")
@guarded
def close_cmd(state_dir: Path, mnemonic_file: Optional[str], key_file: Optional[str], wallet_version: str,
              network: Optional[str], finish: bool) -> None:
    """Close the gateway's channels: request the close now (the proxy may still claim during the
    registry's close delay), then `--finish` after it to get the rest back. Stop the gateway first, or
    it opens a new channel for its next request."""
    store = _store(state_dir)
    asyncio.run(_close(store, mnemonic_file, key_file, wallet_version, network, finish))


async def _close(store, mnemonic_file, key_file, wallet_version, network, finish) -> None:
    from pytoniq_core import Address

    from node.chain import load_keys, open_network
    from node.client.chain import ClientChain
    from wrappers import escrow as E

    network = network or store.get_meta("network") or "local"
    registry = store.get_meta("registry")
    if not registry:
        raise UserError("the state folder names no registry; was the gateway ever started with it?")
    net = await open_network(network)
    try:
        chain = ClientChain(net, Address(registry), load_keys(mnemonic_file, key_file), wallet_version)
        todo = [c for c in store.channels() if c.state != "closed"]
        if not todo:
            click.echo("no open channel")
            return
        for c in todo:
            addr = Address(c.address)
            ch = await chain.escrow(addr)
            if ch is None:
                click.echo(f"{c.address}: not on chain; forgotten")
                store.update_channel(c.address, state="closed")
                continue
            if ch.state == E.State.OPEN and finish:
                click.echo(f"{c.address}: still open; request the close first (`cocoon client close` without --finish)")
            elif ch.state == E.State.OPEN:
                click.echo(f"{c.address}: requesting the close (holds {_fmt(ch.held)}, claimed {_fmt(ch.claimed)})...")
                await chain.request_close(addr)
                ch = await chain.escrow(addr)
                store.update_channel(c.address, state="closing")
                click.echo(f"  closing; after {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ch.close_at))} UTC run "
                           "`cocoon client close --finish`")
            elif ch.state == E.State.CLOSING:
                store.update_channel(c.address, state="closing")
                now = await net.now()
                if not finish:
                    click.echo(f"{c.address}: already closing; finish after {ch.close_at - now} s with --finish")
                elif now < ch.close_at:
                    raise UserError(f"{c.address}: the close delay ends in {ch.close_at - now} s; finish after it")
                else:
                    click.echo(f"{c.address}: finishing (returns {_fmt(ch.held)} less what the proxy claims)...")
                    await chain.finish(addr)
                    store.update_channel(c.address, state="closed")
                    click.echo("  closed")
            elif ch.state == E.State.CLOSED:
                store.update_channel(c.address, state="closed")
                click.echo(f"{c.address}: closed")
            else:
                click.echo(f"{c.address}: {ch.state_name}; nothing to do yet")
    finally:
        await net.close()

"""``cocoon registry``: the registry owner's commands (and ``show`` for everyone).

Revocations act at once; additions, parameter changes and upgrades create proposals that anyone can
execute after the governance delay (``cocoon registry execute ID``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import click
from pytoniq_core import Address

from wrappers import registry as R
from wrappers.build import load_code
from wrappers.chain.records import fmt_ton

from .chainctx import ChainContext, UserError, guarded, load_keys, network_options, parse_hex256

KINDS = {"worker-image": "worker_image", "proxy-image": "proxy_image", "model": "model"}


def _addr_file(state_file: Path) -> Path:
    return Path(state_file).parent / "registry.txt"


def _registry_address(registry: Optional[str], state_file: Path, network: str) -> Address:
    if registry:
        try:
            return Address(registry)
        except Exception:
            raise UserError(f"{registry!r} is not a TON address") from None
    f = _addr_file(state_file)
    if network == "embedded" and f.exists():
        return Address(f.read_text().strip())
    raise UserError("which registry? pass --registry ADDRESS (or set COCOON_REGISTRY); on the embedded chain "
                    "`cocoon registry deploy` remembers the last one")


def _parse_hash(value: str) -> int:
    return parse_hex256(value, "a hash (SHA-256)")


def _check_result(txs, registry: Address, what: str) -> None:
    """On the embedded chain, say whether the registry accepted the message, and why not."""
    mine = [t for t in txs if t.account.hash_part == registry.hash_part and not t.bounced]
    if not mine:
        return
    t = mine[0]
    if t.success:
        click.echo(f"ok: {what} (gas {t.gas_used}, fees {fmt_ton(t.total_fees)} TON)")
    else:
        raise UserError(f"the registry refused: error {R.describe_error(t.exit_code)}; nothing changed "
                        "and the attached value came back minus fees")


registry_option = click.option("--registry", envvar="COCOON_REGISTRY", help="Registry contract address "
                               "(env COCOON_REGISTRY; on the embedded chain defaults to the last deployed).")


@click.group()
def registry() -> None:
    """The registry: trust roots (images, models), network parameters, proxies and child codes."""


@registry.command()
@network_options
@click.option("--lang", type=click.Choice(["func", "tolk"]), default="tolk", show_default=True,
              help="Which implementation's code to deploy (both are built from the same schema).")
@click.option("--test-network", is_flag=True, help="Set the test flag: simulated TEEs are accepted.")
@click.option("--governance-delay", type=int, default=86400, show_default=True, help="Seconds a proposal waits.")
@click.option("--treasury", help="Address that receives slashed stake (default: the owner's wallet).")
@click.option("--value", type=float, default=1.0, show_default=True, help="TON to deploy with (storage reserve).")
@guarded
def deploy(network, state_file, mnemonic_file, key_file, wallet_version, lang, test_network, governance_delay,
           treasury, value):
    """Deploy a new registry owned by your wallet."""
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        w = ctx.call(ctx.wallet(keys))
        params = R.NetworkParams(staking=R.Staking(treasury=Address(treasury) if treasury else w.address),
                                 is_test=test_network, governance_delay=governance_delay)
        codes = R.ChildCodes(*[_maybe_code(n, lang) for n in ("stake", "escrow", "reputation")])
        si = R.state_init(load_code("registry", lang), R.initial_data(w.address, params, codes))
        addr = R.address_of(si)
        click.echo(f"deploying the registry ({lang}) at {addr.to_str()} from {w.address.to_str()}")
        txs = ctx.call(ctx.send(w, addr, int(value * 1e9), None, state_init=si, bounce=False))
        if network == "embedded":
            if ctx.chain.state(addr)[0] != "active":
                raise UserError("the registry did not deploy; " + "; ".join(t.describe() for t in txs))
            _addr_file(state_file).parent.mkdir(parents=True, exist_ok=True)
            _addr_file(state_file).write_text(addr.to_str() + "\n")
        click.echo(f"registry: {addr.to_str()}")


def _maybe_code(name: str, lang: str):
    try:
        return load_code(name, lang)
    except Exception:
        return None


@registry.command()
@network_options
@registry_option
@guarded
def show(network, state_file, mnemonic_file, key_file, wallet_version, registry):
    """Print everything the registry holds."""
    addr = _registry_address(registry, state_file, network)
    with ChainContext(network, state_file, wallet_version) as ctx:
        rd = R.RegistryReader(ctx.get_method, addr)
        owner, pending = rd.owner()
        p = rd.params()
        click.echo(f"registry      {addr.to_str()}")
        click.echo(f"owner         {owner.to_str()}" + (f"  (pending: {pending.to_str()})" if pending else ""))
        click.echo(f"version       {rd.version()}")
        click.echo(f"test network  {'yes' if p.is_test else 'no'}")
        click.echo(f"governance    delay {p.governance_delay} s, at most {p.max_proxies} proxies")
        e, s = p.economics, p.staking
        click.echo(f"prices        {e.price_per_token} nanoTON/token, worker fee {e.worker_fee_per_token}; multipliers "
                   f"prompt {e.prompt_mult} cached {e.cached_mult} completion {e.completion_mult} "
                   f"reasoning {e.reasoning_mult} (10000 = 1.0)")
        click.echo(f"escrow        min deposit {fmt_ton(e.min_escrow_deposit)} TON, close delay {e.close_delay} s")
        click.echo(f"staking       min worker {fmt_ton(s.min_worker_stake)} TON, min proxy {fmt_ton(s.min_proxy_stake)} TON, "
                   f"unbonding {s.unbonding_period} s, slash {s.slash_bps / 100:g}% (reporter {s.reporter_bps / 100:g}%), "
                   f"treasury {s.treasury.to_str()}")
        for kind, hashes in rd.trust().items():
            click.echo(f"{kind:13} " + (", ".join(f"{h:064x}" for h in sorted(hashes)) or "(none)"))
        codes = rd.child_codes()
        for n in ("stake", "escrow", "reputation"):
            c = getattr(codes, n)
            click.echo(f"{n + ' code':13} {c.hash.hex() if c is not None else '(not set)'}")
        proxies = rd.proxies()
        click.echo(f"proxies       {len(proxies)}")
        for px in proxies:
            click.echo(f"  {px.owner_hash:064x} {px.endpoint} stake {fmt_ton(px.stake)} TON "
                       f"{'active' if px.active else 'INACTIVE'}")
        props, next_id = rd.proposals()
        click.echo(f"proposals     {len(props)} open (next id {next_id})")
        now = ctx.chain.now if ctx.chain is not None else None
        for pr in props:
            when = (f"ready" if now is not None and now >= pr.execute_after else f"after {pr.execute_after}")
            click.echo(f"  #{pr.id} {R.describe_action(pr.action)} [{when}]")


def _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry, body, what, value=0.05):
    addr = _registry_address(registry, state_file, network)
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        w = ctx.call(ctx.wallet(keys))
        txs = ctx.call(ctx.send(w, addr, int(value * 1e9), body))
        if network == "embedded":
            _check_result(txs, addr, what)
        else:
            click.echo(f"sent: {what}; check the result with `cocoon registry show`")


@registry.command()
@network_options
@registry_option
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.argument("hash_hex", metavar="HASH")
@guarded
def add(network, state_file, mnemonic_file, key_file, wallet_version, registry, kind, hash_hex):
    """Propose allowing an image or model HASH (executes after the governance delay)."""
    h = _parse_hash(hash_hex)
    addr = _registry_address(registry, state_file, network)
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        rd = R.RegistryReader(ctx.get_method, addr)
        pid = rd.proposals()[1]
        w = ctx.call(ctx.wallet(keys))
        txs = ctx.call(ctx.send(w, addr, 50_000_000, R.propose(R.action_add(KINDS[kind], h))))
        if network == "embedded":
            _check_result(txs, addr, f"proposal #{pid}: allow {kind} {h:064x}")
            p = rd.proposal(pid)
            click.echo(f"executable at unix time {p.execute_after} (`cocoon registry execute {pid}`)")


@registry.command()
@network_options
@registry_option
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.argument("hash_hex", metavar="HASH")
@guarded
def remove(network, state_file, mnemonic_file, key_file, wallet_version, registry, kind, hash_hex):
    """Revoke an image or model HASH. Takes effect at once."""
    h = _parse_hash(hash_hex)
    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.revoke(KINDS[kind], h), f"revoked {kind} {h:064x}")


@registry.command("remove-proxy")
@network_options
@registry_option
@click.argument("proxy_owner")
@guarded
def remove_proxy(network, state_file, mnemonic_file, key_file, wallet_version, registry, proxy_owner):
    """Remove a registered proxy (by its owner's address). Takes effect at once."""
    try:
        a = Address(proxy_owner)
    except Exception:
        raise UserError(f"{proxy_owner!r} is not a TON address") from None
    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.remove_proxy(a.hash_part), f"removed proxy {a.to_str()}")


@registry.command("set-params")
@network_options
@registry_option
@click.option("--test-network/--production", default=None, help="Set or clear the test flag.")
@click.option("--governance-delay", type=int)
@click.option("--max-proxies", type=int)
@click.option("--price-per-token", type=int, help="nanoTON per token at coefficient 1.0")
@click.option("--worker-fee-per-token", type=int)
@click.option("--min-escrow-deposit", type=float, help="TON")
@click.option("--close-delay", type=int, help="seconds")
@click.option("--min-worker-stake", type=float, help="TON")
@click.option("--min-proxy-stake", type=float, help="TON")
@click.option("--unbonding-period", type=int, help="seconds")
@click.option("--slash-bps", type=int, help="basis points of stake slashed for equivocation")
@click.option("--reporter-bps", type=int, help="basis points of the slash paid to the reporter")
@guarded
def set_params(network, state_file, mnemonic_file, key_file, wallet_version, registry, test_network,
               governance_delay, max_proxies, price_per_token, worker_fee_per_token, min_escrow_deposit,
               close_delay, min_worker_stake, min_proxy_stake, unbonding_period, slash_bps, reporter_bps):
    """Propose new network parameters (only the options given change)."""
    addr = _registry_address(registry, state_file, network)
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        rd = R.RegistryReader(ctx.get_method, addr)
        p = rd.params()
        ton = lambda v: None if v is None else int(v * 1e9)
        econ = {k: v for k, v in dict(price_per_token=price_per_token, worker_fee_per_token=worker_fee_per_token,
                                      min_escrow_deposit=ton(min_escrow_deposit), close_delay=close_delay).items()
                if v is not None}
        stk = {k: v for k, v in dict(min_worker_stake=ton(min_worker_stake), min_proxy_stake=ton(min_proxy_stake),
                                     unbonding_period=unbonding_period, slash_bps=slash_bps,
                                     reporter_bps=reporter_bps).items() if v is not None}
        top = {k: v for k, v in dict(is_test=test_network, governance_delay=governance_delay,
                                     max_proxies=max_proxies).items() if v is not None}
        new = replace(p, economics=replace(p.economics, **econ), staking=replace(p.staking, **stk), **top)
        if new == p:
            raise UserError("nothing to change: give at least one option (see --help)")
        problems = new.problems()
        if problems:
            raise UserError("; ".join(problems))
        pid = rd.proposals()[1]
        w = ctx.call(ctx.wallet(keys))
        txs = ctx.call(ctx.send(w, addr, 50_000_000, R.propose(R.action_set_params(new))))
        if network == "embedded":
            _check_result(txs, addr, f"proposal #{pid}: new parameters")


@registry.command()
@network_options
@registry_option
@click.argument("proposal_id", type=int)
@guarded
def execute(network, state_file, mnemonic_file, key_file, wallet_version, registry, proposal_id):
    """Execute a proposal whose governance delay has passed (anyone may)."""
    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.execute_proposal(proposal_id), f"executed proposal #{proposal_id}", value=0.1)


@registry.command()
@network_options
@registry_option
@click.argument("proposal_id", type=int)
@guarded
def cancel(network, state_file, mnemonic_file, key_file, wallet_version, registry, proposal_id):
    """Cancel an open proposal (owner only)."""
    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.cancel_proposal(proposal_id), f"cancelled proposal #{proposal_id}")


@registry.command("transfer-ownership")
@network_options
@registry_option
@click.argument("new_owner")
@guarded
def transfer_ownership(network, state_file, mnemonic_file, key_file, wallet_version, registry, new_owner):
    """Offer ownership to NEW_OWNER ('none' cancels); it moves only when they accept."""
    target = None
    if new_owner.lower() != "none":
        try:
            target = Address(new_owner)
        except Exception:
            raise UserError(f"{new_owner!r} is not a TON address") from None
    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.transfer_ownership(target), f"ownership offered to {new_owner}")


@registry.command("accept-ownership")
@network_options
@registry_option
@guarded
def accept_ownership(network, state_file, mnemonic_file, key_file, wallet_version, registry):
    """Accept a pending ownership transfer (run by the new owner)."""
    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.accept_ownership(), "ownership accepted")


@registry.command("advance-time")
@click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(".cocoon/chain.json"), show_default=True)
@click.argument("seconds", type=int)
@guarded
def advance_time(state_file, seconds):
    """Embedded chain only: move the local chain's clock forward (e.g. past a governance delay)."""
    if seconds < 0:
        raise UserError("time only moves forward")
    with ChainContext("embedded", state_file) as ctx:
        ctx.chain.advance(seconds)
        click.echo(f"embedded chain time is now {ctx.chain.now}")

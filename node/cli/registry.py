"""``cocoon registry``: the registry owner's commands (and ``show`` for everyone).

Revocations act at once; additions, parameter changes and upgrades create proposals that anyone can
execute after the governance delay (``cocoon registry execute ID``).
"""
from __future__ import annotations

from dataclasses import replace

import click
from pytoniq_core import Address

from wrappers import registry as R
from wrappers.build import load_code
from wrappers.chain.records import fmt_ton
from wrappers.errors import explain_error

from .context import ChainContext, UserError, chain_now, guarded, load_keys, open_wallet
from .options import (Nanotons, TonAmount, check_advance, lang_option, network_option, network_options, not_sent,
                      owner_address, parse_address, parse_hex256, registry_address, registry_file, registry_option,
                      state_file_option, uint, utc)

KINDS = {"worker-image": "worker_image", "proxy-image": "proxy_image", "model": "model"}
TRUST = {"worker-image": "worker_images", "proxy-image": "proxy_images", "model": "models"}


def _parse_hash(value: str) -> int:
    return parse_hex256(value, "a hash (SHA-256)")


def _check_result(ctx: ChainContext, txs, registry: Address, what: str) -> None:
    """From the transactions the network reported, say whether the registry accepted the message, and why not."""
    mine = [t for t in txs if t.account.hash_part == registry.hash_part and not t.bounced]
    if not mine:
        raise UserError(not_sent(ctx, f"the registry {registry.to_str()}"))
    t = mine[0]
    if t.success:
        click.echo(f"ok: {what} (gas {t.gas_used}, fees {fmt_ton(t.total_fees)} TON)")
    else:
        raise UserError(f"the registry refused: error {explain_error(t.exit_code, R.ERROR_NAMES)}; nothing changed "
                        "and the attached value came back minus fees")


@click.group()
def registry() -> None:
    """The registry: trust roots (images, models), network parameters, proxies and child codes."""


@registry.command()
@network_options
@lang_option("Which implementation's code to deploy (both are built from the same schema).")
@click.option("--test-network", is_flag=True, help="Set the test flag: simulated TEEs are accepted.")
@click.option("--governance-delay", type=uint(32), default=86400, show_default=True, help="Seconds a proposal waits.")
@click.option("--treasury", help="Address that receives slashed stake (default: the owner's wallet).")
@click.option("--value", type=TonAmount(), default="1", show_default=True, help="TON to deploy with (storage reserve).")
@guarded
def deploy(network, state_file, mnemonic_file, key_file, wallet_version, lang, test_network, governance_delay,
           treasury, value):
    """Deploy a new registry owned by your wallet."""
    treasury_addr = parse_address(treasury, "--treasury") if treasury else None
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        me = _wallet_address(ctx, keys)
        params = R.NetworkParams(staking=R.Staking(treasury=treasury_addr or me),
                                 is_test=test_network, governance_delay=governance_delay)
        problems = params.problems()
        if problems:
            raise UserError("; ".join(problems))
        codes = R.ChildCodes(*[_maybe_code(n, lang) for n in ("stake", "escrow", "reputation")])
        reg = ctx.instant(R.Registry.from_init(ctx.contract_provider, me, params, codes, lang=lang))
        addr = reg.address
        if reg.deployed:
            raise UserError(f"your registry with this code and these parameters is already deployed at "
                            f"{addr.to_str()}; use it (--registry) or deploy with other parameters")
        w = ctx.call(ctx.wallet(keys))
        click.echo(f"deploying the registry ({lang}) at {addr.to_str()} from {w.address.to_str()}")
        txs = reg.send_deploy(ctx.sender(w), value)
        if txs and not reg.deployed:  # the network reported the transactions: they say why
            raise UserError("the registry did not deploy; " + "; ".join(t.describe() for t in txs))
        if network == "embedded":  # the embedded chain's registry file, next to its state file
            registry_file(state_file).parent.mkdir(parents=True, exist_ok=True)
            registry_file(state_file).write_text(addr.to_str() + "\n")
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
    addr = registry_address(registry, state_file, network)
    with ChainContext(network, state_file, wallet_version) as ctx:
        rd = ctx.contract(R.Registry, addr).read
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
            click.echo(f"  {owner_address(px.owner_hash).to_str()} {px.endpoint} stake {fmt_ton(px.stake)} TON "
                       f"{'active' if px.active else 'INACTIVE'}")
        props, next_id = rd.proposals()
        click.echo(f"proposals     {len(props)} open (next id {next_id})")
        now = chain_now(ctx)
        for pr in props:
            when = ("ready" if now >= pr.execute_after else f"after {utc(pr.execute_after)}")
            click.echo(f"  #{pr.id} {R.describe_action(pr.action)} [{when}]")


def _refuse(code: int, text: str) -> UserError:
    """A refusal found before sending: what the registry would answer, and why."""
    return UserError(f"{text} (the registry would refuse it with {R.describe_error(code)}); nothing was sent")


def _wallet_address(ctx: ChainContext, keys) -> Address:
    """The address of the wallet of ``keys``, without funding or deploying it (checks come first)."""
    return ctx.call(open_wallet(ctx.provider, keys, ctx.wallet_version, ctx.network)).address


def _require_owner(rd: R.RegistryReader, me: Address) -> None:
    owner, _ = rd.owner()
    if owner != me:
        raise _refuse(R.Err.NOT_OWNER, f"only the registry's owner {owner.to_str()} may do this; your wallet is "
                      f"{me.to_str()}")


def _room_for_a_proposal(rd: R.RegistryReader) -> int:
    """The id the next proposal gets, after checking the registry has room for it."""
    props, next_id = rd.proposals()
    if len(props) >= R.MAX_OPEN_PROPOSALS:
        raise _refuse(R.Err.TOO_MANY_PROPOSALS, f"{len(props)} proposals are open, the most a registry keeps; "
                      "execute or cancel one first")
    return next_id


def _open_proposal(rd: R.RegistryReader, pid: int) -> R.Proposal:
    p = rd.proposal(pid)
    if p is None:
        _, next_id = rd.proposals()
        why = "was executed or cancelled" if pid < next_id else "does not exist yet"
        raise _refuse(R.Err.PROPOSAL_UNKNOWN, f"proposal #{pid} {why}; `cocoon registry show` lists the open ones")
    return p


def _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry, body, what, value=0.05,
              check=None, owner_only=True):
    """Check what the registry would check, then send ``body`` and report the outcome.

    ``check(ctx, reader, my_address)`` raises a refusal; it may return a new ``body`` or ``value``
    as ``(body, value)``."""
    addr = registry_address(registry, state_file, network)
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        reg = ctx.contract(R.Registry, addr)
        rd = reg.read
        me = _wallet_address(ctx, keys)
        if owner_only:
            _require_owner(rd, me)
        if check is not None:
            body, value = check(ctx, rd, me) or (body, value)
        w = ctx.call(ctx.wallet(keys))
        txs = reg.send(ctx.sender(w), body, int(round(value * 1e9)))
        if txs:  # the network reported the transactions (the embedded chain, the chain server)
            _check_result(ctx, txs, addr, what)
        else:
            click.echo(f"sent: {what}; check the result with `cocoon registry show`")
        return ctx, rd


@registry.command()
@network_options
@registry_option
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.argument("hash_hex", metavar="HASH")
@guarded
def add(network, state_file, mnemonic_file, key_file, wallet_version, registry, kind, hash_hex):
    """Propose allowing an image or model HASH (executes after the governance delay)."""
    h = _parse_hash(hash_hex)
    pid = None

    def check(ctx, rd, me):
        nonlocal pid
        if h in rd.trust()[TRUST[kind]]:
            raise _refuse(R.Err.HASH_EXISTS, f"{kind} {h:064x} is already allowed")
        pid = _room_for_a_proposal(rd)

    ctx, rd = _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
                        R.propose(R.action_add(KINDS[kind], h)), f"proposal: allow {kind} {h:064x}", check=check)
    p = rd.proposal(pid)  # None while a real network has not shown it yet
    when = f"executable after {utc(p.execute_after)}" if p is not None else "executable after the governance delay"
    click.echo(f"proposal #{pid}: {when} (`cocoon registry execute {pid}`)")


@registry.command()
@network_options
@registry_option
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.argument("hash_hex", metavar="HASH")
@guarded
def remove(network, state_file, mnemonic_file, key_file, wallet_version, registry, kind, hash_hex):
    """Revoke an image or model HASH. Takes effect at once."""
    h = _parse_hash(hash_hex)

    def check(ctx, rd, me):
        if h not in rd.trust()[TRUST[kind]]:
            raise _refuse(R.Err.HASH_UNKNOWN, f"{kind} {h:064x} is not allowed, so there is nothing to revoke")

    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.revoke(KINDS[kind], h), f"revoked {kind} {h:064x}", check=check)


@registry.command("remove-proxy")
@network_options
@registry_option
@click.argument("proxy_owner")
@guarded
def remove_proxy(network, state_file, mnemonic_file, key_file, wallet_version, registry, proxy_owner):
    """Remove a registered proxy (by its owner's address). Takes effect at once."""
    a = parse_address(proxy_owner, "the proxy's owner")

    def check(ctx, rd, me):
        if rd.proxy(a) is None:
            raise _refuse(R.Err.PROXY_UNKNOWN, f"{a.to_str()} is not a registered proxy")

    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.remove_proxy(a.hash_part), f"removed proxy {a.to_str()}", check=check)


@registry.command("set-params")
@network_options
@registry_option
@click.option("--test-network/--production", default=None, help="Set or clear the test flag.")
@click.option("--governance-delay", type=uint(32), help="Seconds a proposal waits before it can execute.")
@click.option("--max-proxies", type=uint(16, 1), help="How many proxies may register.")
@click.option("--price-per-token", type=Nanotons(), help="nanoTON per token at coefficient 1.0.")
@click.option("--worker-fee-per-token", type=Nanotons(), help="nanoTON per token a proxy pays its worker.")
@click.option("--min-escrow-deposit", type=TonAmount(allow_zero=True), help="TON: the smallest channel opening.")
@click.option("--close-delay", type=uint(32), help="Seconds between a close (or withdrawal) request and its end.")
@click.option("--min-worker-stake", type=TonAmount(allow_zero=True), help="TON a worker's stake needs to be active.")
@click.option("--min-proxy-stake", type=TonAmount(allow_zero=True), help="TON a proxy's stake needs to be active.")
@click.option("--unbonding-period", type=uint(32), help="Seconds unbonded stake stays slashable.")
@click.option("--slash-bps", type=uint(16), help="Basis points of stake slashed for equivocation.")
@click.option("--reporter-bps", type=uint(16), help="Basis points of the slash paid to the reporter.")
@guarded
def set_params(network, state_file, mnemonic_file, key_file, wallet_version, registry, test_network,
               governance_delay, max_proxies, price_per_token, worker_fee_per_token, min_escrow_deposit,
               close_delay, min_worker_stake, min_proxy_stake, unbonding_period, slash_bps, reporter_bps):
    """Propose new network parameters (only the options given change)."""
    pid = None

    def check(ctx, rd, me):
        nonlocal pid
        p = rd.params()
        econ = {k: v for k, v in dict(price_per_token=price_per_token, worker_fee_per_token=worker_fee_per_token,
                                      min_escrow_deposit=min_escrow_deposit, close_delay=close_delay).items()
                if v is not None}
        stk = {k: v for k, v in dict(min_worker_stake=min_worker_stake, min_proxy_stake=min_proxy_stake,
                                     unbonding_period=unbonding_period, slash_bps=slash_bps,
                                     reporter_bps=reporter_bps).items() if v is not None}
        top = {k: v for k, v in dict(is_test=test_network, governance_delay=governance_delay,
                                     max_proxies=max_proxies).items() if v is not None}
        new = replace(p, economics=replace(p.economics, **econ), staking=replace(p.staking, **stk), **top)
        if new == p:
            raise UserError("nothing to change: give at least one option (see --help)")
        problems = new.problems()
        if problems:
            raise _refuse(R.Err.BAD_PARAMS, "; ".join(problems))
        pid = _room_for_a_proposal(rd)
        return R.propose(R.action_set_params(new)), 0.05

    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry, None,
              "proposal: new parameters", check=check)
    click.echo(f"proposal #{pid}: `cocoon registry execute {pid}` after the governance delay")


@registry.command()
@network_options
@registry_option
@click.argument("proposal_id", type=uint(32))
@guarded
def execute(network, state_file, mnemonic_file, key_file, wallet_version, registry, proposal_id):
    """Execute a proposal whose governance delay has passed (anyone may)."""
    def check(ctx, rd, me):
        p = _open_proposal(rd, proposal_id)
        now = chain_now(ctx)
        if now < p.execute_after:
            hint = (f"; on a local chain move the clock with `cocoon registry advance-time {p.execute_after - now}`"
                    if ctx.net.dev else "")
            raise _refuse(R.Err.PROPOSAL_NOT_READY, f"proposal #{proposal_id} is executable after "
                          f"{utc(p.execute_after)}, in {p.execute_after - now} s{hint}")
        if p.action.begin_parse().preload_uint(8) == R.ACTION["slash_stake"]:
            return R.execute_proposal(proposal_id), R.SLASH_EXEC_VALUE / 1e9

    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.execute_proposal(proposal_id), f"executed proposal #{proposal_id}", value=0.1, check=check,
              owner_only=False)


@registry.command()
@network_options
@registry_option
@click.argument("proposal_id", type=uint(32))
@guarded
def cancel(network, state_file, mnemonic_file, key_file, wallet_version, registry, proposal_id):
    """Cancel an open proposal (owner only)."""
    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.cancel_proposal(proposal_id), f"cancelled proposal #{proposal_id}",
              check=lambda ctx, rd, me: _open_proposal(rd, proposal_id) and None)


@registry.command("transfer-ownership")
@network_options
@registry_option
@click.argument("new_owner")
@guarded
def transfer_ownership(network, state_file, mnemonic_file, key_file, wallet_version, registry, new_owner):
    """Offer ownership to NEW_OWNER ('none' cancels); it moves only when they accept."""
    target = None if new_owner.lower() == "none" else parse_address(new_owner, "the new owner")
    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.transfer_ownership(target), f"ownership offered to {new_owner}")


@registry.command("accept-ownership")
@network_options
@registry_option
@guarded
def accept_ownership(network, state_file, mnemonic_file, key_file, wallet_version, registry):
    """Accept a pending ownership transfer (run by the new owner)."""
    def check(ctx, rd, me):
        _, pending = rd.owner()
        if pending != me:
            raise _refuse(R.Err.NOT_PENDING_OWNER, "no ownership transfer to your wallet is pending"
                          + (f" (it is offered to {pending.to_str()})" if pending else ""))

    _owner_op(network, state_file, mnemonic_file, key_file, wallet_version, registry,
              R.accept_ownership(), "ownership accepted", check=check, owner_only=False)


@registry.command("advance-time")
@state_file_option("The embedded chain's state file (env COCOON_CHAIN_STATE).")
@network_option("embedded, or the chain server (local or its URL).")
@click.argument("seconds", type=int)
@guarded
def advance_time(state_file, seconds, network="embedded"):
    """Embedded chain and chain server only: move the local chain's clock forward by SECONDS (e.g.
    past a governance delay); at most ten years per step."""
    check_advance(0, seconds)  # the sign and the size of the step, before the chain is opened
    with ChainContext(network, state_file) as ctx:
        if not ctx.net.dev:
            raise UserError(f"{network} has no clock to move: only the embedded chain and the chain server")
        check_advance(chain_now(ctx), seconds)
        now = ctx.call(ctx.net.advance(seconds))
        where = "embedded" if network == "embedded" else "local"
        click.echo(f"{where} chain time is now {utc(now)} ({now})")

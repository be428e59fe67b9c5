"""``cocoon stake``: a provider's stake (deposit, unbond, withdraw, operator key, status) and the
equivocation report anyone can send.

The stake contract of (registry, owner, role) has an address anyone can derive; the registry's getter
gives it, and its code comes from the registry, so these commands need only the registry and a key.
"""
from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Optional

import click
from pytoniq_core import Address, Cell

from wrappers import registry as R
from wrappers import stake as S
from wrappers.chain.records import fmt_ton
from wrappers.errors import explain_error

from .context import ChainContext, UserError, guarded, load_keys, open_wallet, chain_now as _now
from .options import (network_options, not_sent, parse_address as _address, parse_endpoint, parse_hex256,
                      parse_ton as _ton, registry_address, registry_option)

ROLES = {"worker": S.ROLE_WORKER, "proxy": S.ROLE_PROXY}

role_option = click.option("--role", type=click.Choice(sorted(ROLES)), default="worker", show_default=True,
                           help="Which of your stakes: the worker's or the proxy's.")


@click.group()
def stake() -> None:
    """A provider's stake: deposit, unbond, withdraw, operator key, status; equivocation reports."""


# ------------------------------------------------------------------------------------------------ helpers
def _warn(text: str) -> None:
    click.echo(f"warning: {text}", err=True)



def _parse_key(text: str) -> int:
    return parse_hex256(text, "the operator key (an Ed25519 public key)")


def _when(unix: int, now: int) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))
    if unix <= now:
        return f"{stamp} (unlocked)"
    return f"{stamp} (in {_duration(unix - now)})"


def _duration(seconds: int) -> str:
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{d}d" if d else "", f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s or not (d or h or m) else ""]
    return " ".join(p for p in parts if p)


def _deployed(ctx: ChainContext, address: Address) -> bool:
    return ctx.call(ctx.status(address)) == "active"


def _owner_address(ctx: ChainContext, keys) -> Address:
    """The address of the wallet of ``keys`` without funding or deploying it (read-only commands)."""
    return ctx.call(open_wallet(ctx.provider, keys, ctx.wallet_version, ctx.network)).address


class Target:
    """The stake contract a command acts on (a :class:`~wrappers.stake.Stake` from the registry's
    stake code, used synchronously) and its registry."""

    def __init__(self, ctx: ChainContext, registry: Address, owner: Address, role: int):
        self.reg = ctx.contract(R.Registry, registry)
        rd = self.reg.read
        try:
            code = rd.child_codes().stake
        except Exception:
            raise UserError(f"cannot read the registry at {registry.to_str()}; is that the registry's address "
                            f"on {ctx.network}?") from None
        if code is None:
            raise UserError("this registry has no stake code yet; its owner must set it "
                            "(a set_child_codes proposal) before stakes can be deployed")
        self.ctx, self.registry, self.owner, self.role = ctx, registry, owner, role
        self.stake = ctx.instant(S.Stake.from_init(ctx.contract_provider, registry, owner, role, code=code))
        self.address, self.read = self.stake.address, self.stake.read
        if rd.stake_address(owner, role) != self.address:
            raise UserError("the registry derives another stake address than its own stake code gives; "
                            "refusing to send anything")

    @property
    def deployed(self) -> bool:
        return self.stake.deployed


def _target(ctx: ChainContext, network: str, state_file: Path, registry: Optional[str], owner: Address,
            role: str) -> Target:
    return Target(ctx, registry_address(registry, state_file, network), owner, ROLES[role])


def _refusal(t, address: Address) -> str:
    code = t.exit_code
    advice = S.ERROR_ADVICE.get(code)
    return (f"the stake contract {address.to_str()} refused: error "
            + (f"{S.describe_error(code)}: {advice}" if advice else explain_error(code, S.ERROR_NAMES)) + "; nothing changed and the value came back minus fees")


def _result(ctx: ChainContext, txs, tgt: Target, what: str, before=None) -> None:
    """Say whether the stake accepted the message: from its transactions where the network reports
    them (the embedded chain, the chain server), else by watching the contract until its state changes."""
    if not txs:
        _await_change(tgt, before, what)
        return
    mine = [t for t in txs if t.account.hash_part == tgt.address.hash_part and not t.bounced]
    if not mine:
        raise UserError(not_sent(ctx, f"the stake contract {tgt.address.to_str()}"))
    t = mine[0]
    if not t.success:
        raise UserError(_refusal(t, tgt.address))
    click.echo(f"ok: {what} (gas {t.gas_used}, fees {fmt_ton(t.total_fees)} TON)")


def _await_change(tgt: Target, before, what: str, timeout: int = 120) -> None:
    start = time.monotonic()
    with click.progressbar(length=timeout, label="waiting for the stake contract",
                           file=click.get_text_stream("stderr")) as bar:
        while time.monotonic() - start < timeout:
            try:
                now = (tgt.read.state(), tgt.read.unbonding().requests, tgt.read.keys())
            except Exception:
                now = None
            if now is not None and now != before:
                click.echo(f"\nok: {what}")
                return
            time.sleep(4)
            bar.update(4)
    raise UserError(f"the stake contract did not change within {timeout} s: it may have refused the message "
                    "(the value then came back to your wallet); check `cocoon stake status`")


def _snapshot(tgt: Target):
    if not tgt.deployed:
        return None
    return tgt.read.state(), tgt.read.unbonding().requests, tgt.read.keys()


def _owner_command(network, state_file, mnemonic_file, key_file, wallet_version, registry, role, body: Cell,
                   value: int, what: str, check=None, deploy: bool = False):
    """Send ``body`` from the owner's wallet to the owner's stake contract and report the outcome."""
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        tgt = _target(ctx, network, state_file, registry, _owner_address(ctx, keys), role)
        if not tgt.deployed and not deploy:
            raise UserError(f"you have no {role} stake under this registry yet ({tgt.address.to_str()}); "
                            f"start with `cocoon stake deposit AMOUNT --role {role}`")
        if check is not None:
            check(tgt)
        w = ctx.call(ctx.wallet(keys))  # funds a new wallet on the embedded chain: only once the checks passed
        before = _snapshot(tgt)
        txs = tgt.stake.send(ctx.sender(w), body, value)  # the first message deploys it
        _result(ctx, txs, tgt, what, before)
        return ctx, tgt, txs


# ------------------------------------------------------------------------------------------------ commands
@stake.command()
@network_options
@registry_option
@role_option
@click.argument("amount")
@guarded
def deposit(network, state_file, mnemonic_file, key_file, wallet_version, registry, role, amount):
    """Add AMOUNT TON to your stake (deploys the stake contract on the first deposit).

    Sends AMOUNT plus the 0.1 TON deposit fee; the part of the fee the contract does not spend comes
    back to your wallet.
    """
    nano = _ton(amount)

    def not_jailed(tgt: Target) -> None:
        if tgt.deployed and tgt.read.state().jailed:
            raise UserError("this stake is jailed by a slash and takes no deposits; unbond and withdraw what is left")
        held = tgt.read.state().active if tgt.deployed else 0
        minimum = S.min_stake(tgt.reg.read.params().staking, tgt.role)
        if held + nano < minimum:
            _warn(f"the stake will hold {fmt_ton(held + nano)} TON, below the registry's minimum of "
                  f"{fmt_ton(minimum)} TON for a {role}: it stays inactive until it holds that much")

    ctx, tgt, _ = _owner_command(network, state_file, mnemonic_file, key_file, wallet_version, registry, role,
                                 S.deposit(), nano + S.DEPOSIT_FEE, f"deposited {fmt_ton(nano)} TON",
                                 check=not_jailed, deploy=True)
    _print_brief(tgt)


@stake.command()
@network_options
@registry_option
@role_option
@click.argument("amount")
@guarded
def unbond(network, state_file, mnemonic_file, key_file, wallet_version, registry, role, amount):
    """Move AMOUNT TON from the active stake to unbonding; withdraw it after the unbonding period.

    Unbonding funds stay slashable until they are withdrawn.
    """
    nano = _ton(amount)

    def enough(tgt: Target) -> None:
        st = tgt.read.state()
        if nano > st.active:
            raise UserError(f"the active stake is {fmt_ton(st.active)} TON; you cannot unbond {fmt_ton(nano)} TON")
        if len(tgt.read.unbonding().requests) >= S.MAX_UNBONDING:
            raise UserError(f"{S.MAX_UNBONDING} unbonding requests are in flight; withdraw one before adding another")
        _, staking = tgt.read.params()
        minimum = S.min_stake(staking, st.role) if staking else None
        if st.is_active and minimum is not None and st.active - nano < minimum:
            _warn(f"this leaves {fmt_ton(st.active - nano)} TON active, below the minimum of {fmt_ton(minimum)} TON: "
                  f"the {role} stake becomes inactive")
            if tgt.role == S.ROLE_PROXY:
                proxy = tgt.reg.read.proxy(tgt.owner)
                if proxy is not None and proxy.active:
                    _warn(f"your registered proxy {proxy.endpoint} turns inactive at the registry: clients and "
                          "workers stop using it and its reputation reports are refused")

    ctx, tgt, _ = _owner_command(network, state_file, mnemonic_file, key_file, wallet_version, registry, role,
                                 S.unbond(nano), S.OP_VALUE, f"unbonding {fmt_ton(nano)} TON", check=enough)
    reqs = tgt.read.unbonding().requests
    if reqs:
        click.echo(f"withdrawable from {_when(reqs[-1].unlock_at, _now(ctx))}")


@stake.command()
@network_options
@registry_option
@role_option
@click.option("--wait", is_flag=True, help="If nothing is unlocked yet, wait (with progress) until the first "
              "request unlocks, then withdraw. Real networks only.")
@click.option("--max-wait", type=click.IntRange(0), default=8 * 86400, show_default=True, help="Give up waiting after this many seconds.")
@guarded
def withdraw(network, state_file, mnemonic_file, key_file, wallet_version, registry, role, wait, max_wait):
    """Withdraw every unbonding request whose unbonding period has passed."""
    def unlocked(tgt: Target) -> None:
        ub = tgt.read.unbonding()
        if not ub.requests:
            raise UserError("nothing is unbonding; `cocoon stake unbond AMOUNT` first")
        if ub.withdrawable_now:
            return
        now = _now(tgt.ctx)
        left = ub.next_unlock - now
        if tgt.ctx.net.dev:  # a clock that moves on request: say so rather than wait
            raise UserError(f"nothing is unlocked yet: the first request unlocks at {_when(ub.next_unlock, now)}; "
                            f"on a local chain move the clock with `cocoon registry advance-time {left}`")
        if not wait:
            raise UserError(f"nothing is unlocked yet: the first request unlocks at {_when(ub.next_unlock, now)}; "
                            "run again then, or pass --wait")
        if left > max_wait:
            raise UserError(f"the first request unlocks in {_duration(left)}, longer than --max-wait")
        with click.progressbar(length=left, label="waiting for the unbonding period",
                               file=click.get_text_stream("stderr")) as bar:
            end = time.time() + left + 5
            while time.time() < end:
                step = min(30, max(1, int(end - time.time())))
                time.sleep(step)
                bar.update(step)

    ctx, tgt, txs = _owner_command(network, state_file, mnemonic_file, key_file, wallet_version, registry, role,
                                   S.withdraw(), S.OP_VALUE, "withdrawal", check=unlocked)
    paid = [t for t in txs if t.src is not None and t.src.hash_part == tgt.address.hash_part
            and t.op == S.OP["payout"]]  # where the network reports the transactions
    if paid:
        click.echo(f"received {fmt_ton(paid[0].value)} TON (the withdrawn stake and the unspent value)")


@stake.command("set-operator")
@network_options
@registry_option
@role_option
@click.argument("operator_key")
@guarded
def set_operator(network, state_file, mnemonic_file, key_file, wallet_version, registry, role, operator_key):
    """Bind OPERATOR_KEY (the TEE's Ed25519 public key, 64 hex digits) to your stake, or rotate it.

    A rotation keeps the previous key slashable for one unbonding period and cannot be repeated within it.
    """
    key = _parse_key(operator_key)

    def can_rotate(tgt: Target) -> None:
        k = tgt.read.keys()
        now = _now(tgt.ctx)
        if k.operator_key not in (0, key) and k.retired_key and now < k.retired_until:
            raise UserError(f"the previous key stays slashable until {_when(k.retired_until, now)}; "
                            "a second rotation has to wait until then")

    _owner_command(network, state_file, mnemonic_file, key_file, wallet_version, registry, role,
                   S.set_operator(key), S.OP_VALUE, f"operator key {key:064x}", check=can_rotate)


@stake.command("register-proxy")
@network_options
@registry_option
@click.argument("endpoint")
@guarded
def register_proxy(network, state_file, mnemonic_file, key_file, wallet_version, registry, endpoint):
    """Register your proxy with the registry through your active proxy stake.

    ENDPOINT is "CLIENTS_HOST:PORT WORKERS_HOST:PORT" (docs/PROTOCOL.md §2), or one HOST:PORT
    serving both; it replaces the endpoint registered before.
    """
    endpoint = parse_endpoint(endpoint)
    body = S.register_proxy(endpoint)

    def active(tgt: Target) -> None:
        st = tgt.read.state()
        if not st.is_active:
            raise UserError("your proxy stake is not active (below the minimum, jailed, or without parameters); "
                            "see `cocoon stake status --role proxy`")

    ctx, tgt, txs = _owner_command(network, state_file, mnemonic_file, key_file, wallet_version, registry, "proxy",
                                   body, S.OP_VALUE, f"registration of {endpoint} sent to the registry", check=active)
    reg = [t for t in txs if t.account.hash_part == tgt.registry.hash_part
           and t.op == S.REGISTRY_OP["register_proxy"] and not t.bounced]
    if reg and not reg[0].success:
        raise UserError(f"the registry refused the registration: error {S.describe_error(reg[0].exit_code)}; "
                        "the value went back to your wallet")
    if txs:  # the network reported the transactions: the registration is known to have landed
        click.echo(f"registered: proxy {endpoint}")


@stake.command()
@network_options
@registry_option
@role_option
@click.option("--owner", "owner_text", help="Refresh the stake of this owner (default: your wallet).")
@guarded
def refresh(network, state_file, mnemonic_file, key_file, wallet_version, registry, role, owner_text):
    """Ask the stake contract to fetch the registry's current parameters (anyone may)."""
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        owner = _address(owner_text, "--owner") if owner_text else _owner_address(ctx, keys)
        tgt = _target(ctx, network, state_file, registry, owner, role)
        if not tgt.deployed:
            raise UserError(f"there is no {role} stake of {owner.to_str()} under this registry")
        w = ctx.call(ctx.wallet(keys))
        txs = tgt.stake.send_refresh_params(ctx.sender(w))
        if txs:  # the network reported the transactions
            _result(ctx, txs, tgt, "parameters refreshed")
            version, _ = tgt.read.params()
            click.echo(f"the stake now holds the registry's parameters of version {version}")
        else:
            click.echo("sent; the parameters arrive with the registry's answer (`cocoon stake status`)")


@stake.command()
@network_options
@registry_option
@role_option
@click.option("--owner", "owner_text", help="Show the stake of this owner instead of your own (no key needed).")
@click.option("--address", "address_text", help="Show the stake contract at this address.")
@guarded
def status(network, state_file, mnemonic_file, key_file, wallet_version, registry, role, owner_text, address_text):
    """Show a stake: activity, active and unbonding amounts, unlock times, keys, slashes, parameters."""
    with ChainContext(network, state_file, wallet_version) as ctx:
        if address_text:
            addr = _address(address_text, "--address")
            if not _deployed(ctx, addr):
                raise UserError(f"no stake contract is deployed at {addr.to_str()} on {network}")
            rd = ctx.contract(S.Stake, addr).read
            _print_status(ctx, addr, rd, ctx.contract(R.Registry, rd.state().registry).read)
            return
        owner = _address(owner_text, "--owner") if owner_text else _owner_address(
            ctx, load_keys(mnemonic_file, key_file))
        tgt = _target(ctx, network, state_file, registry, owner, role)
        if not tgt.deployed:
            click.echo(f"stake         {tgt.address.to_str()} ({role}) — not deployed yet")
            click.echo(f"owner         {owner.to_str()}")
            click.echo(f"start with `cocoon stake deposit AMOUNT --role {role}`")
            return
        _print_status(ctx, tgt.address, tgt.read, tgt.reg.read)


def _print_brief(tgt: Target) -> None:
    st = tgt.read.state()
    click.echo(f"stake {tgt.address.to_str()}: active {fmt_ton(st.active)} TON, "
               f"{'ACTIVE' if st.is_active else 'inactive'}")


def _print_status(ctx: ChainContext, addr: Address, rd, reg) -> None:
    st, ub, keys, sl = rd.state(), rd.unbonding(), rd.keys(), rd.slashing()
    version, staking = rd.params()
    now = _now(ctx)
    click.echo(f"stake         {addr.to_str()} ({S.ROLE_NAMES.get(st.role, st.role)})")
    click.echo(f"owner         {st.owner.to_str()}")
    click.echo(f"registry      {st.registry.to_str()}")
    minimum = S.min_stake(staking, st.role) if staking else None
    if st.is_active:
        state = "ACTIVE"
    elif st.jailed:
        state = "JAILED (slashed for equivocation; inactive for good)"
    elif not st.params_ready:
        state = "inactive: the network parameters have not arrived (`cocoon stake refresh`)"
    else:
        state = f"inactive: below the minimum of {fmt_ton(minimum)} TON"
    click.echo(f"state         {state}")
    click.echo(f"active        {fmt_ton(st.active)} TON" + (f" (minimum {fmt_ton(minimum)} TON)" if minimum is not None else ""))
    click.echo(f"unbonding     {fmt_ton(st.unbonding)} TON in {len(ub.requests)} request(s) (at most {S.MAX_UNBONDING})")
    for r in ub.requests:
        click.echo(f"  #{r.id:<4} {fmt_ton(r.amount):>14} TON  {_when(r.unlock_at, now)}")
    click.echo(f"withdrawable  {fmt_ton(ub.withdrawable_now)} TON now")
    click.echo(f"operator key  {keys.operator_key:064x}" if keys.operator_key else "operator key  (none bound)")
    if keys.retired_key:
        click.echo(f"retired key   {keys.retired_key:064x}, slashable until {_when(keys.retired_until, now)}")
    click.echo(f"slashed       {fmt_ton(sl.slashed_total)} TON in {sl.slashes} slash(es)")
    if staking:
        line = (f"parameters    version {version}: unbonding {_duration(staking.unbonding_period)}, slash "
                f"{staking.slash_bps / 100:g}% (reporter {staking.reporter_bps / 100:g}%)")
        try:
            current = reg.params().staking
        except Exception:       # the registry is unreachable or not a registry: say nothing about it
            current = staking
        if current != staking:
            line += "; the registry's staking parameters have changed since: `cocoon stake refresh` picks them up"
        click.echo(line)
    click.echo(f"balance       {fmt_ton(ctx.call(ctx.net.balance(addr)))} TON")


def _read_statement(path: str) -> S.SignedStatement:
    import base64
    import binascii

    raw = Path(path).read_bytes()
    candidates = [raw]
    text = raw.strip()
    try:
        candidates.append(bytes.fromhex(text.decode()))
    except (UnicodeDecodeError, ValueError):
        pass
    try:
        candidates.append(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        pass
    for data in candidates:
        try:
            return S.SignedStatement.from_cell(Cell.one_from_boc(data))
        except Exception:
            continue
    raise UserError(f"{path}: not a signed stake statement (a BoC of signature:bits512 statement:^StakeStatement, "
                    "raw, hex or base64)")


@stake.command("report-equivocation")
@network_options
@click.argument("first", type=click.Path(exists=True, dir_okay=False))
@click.argument("second", type=click.Path(exists=True, dir_okay=False))
@click.option("--value", "value_text", default=str(Decimal(S.REPORT_VALUE) / 10**9), show_default=True,
              help="TON to attach (pays the fees; the rest comes back with the reward).")
@guarded
def report_equivocation(network, state_file, mnemonic_file, key_file, wallet_version, first, second, value_text):
    """Report two conflicting statements signed by a provider's operator key (anyone may).

    FIRST and SECOND are files holding signed statements (BoC: raw, hex or base64) for the same
    (kind, context, seqno) of the same stake. If they prove equivocation, the provider is slashed and
    jailed and you receive the reporter's share.
    """
    a, b = _read_statement(first), _read_statement(second)
    value = _ton(value_text, "--value")
    if value < S.REPORT_VALUE:
        raise UserError(f"attach at least {fmt_ton(S.REPORT_VALUE)} TON (--value)")
    x, y = a.statement, b.statement
    if x.stake != y.stake:
        raise UserError("the two statements name different stake contracts; evidence must concern one stake")
    if (x.kind, x.context, x.seqno) != (y.kind, y.context, y.seqno):
        raise UserError("the statements are for different (kind, context, seqno): that is not equivocation")
    if x.hash == y.hash:
        raise UserError("the two statements are the same statement: that is not equivocation")
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        if not _deployed(ctx, x.stake):
            raise UserError(f"no stake contract is deployed at {x.stake.to_str()} on {network}")
        target = ctx.contract(S.Stake, x.stake)
        rd = target.read
        st, k, sl = rd.state(), rd.keys(), rd.slashing()
        if st.jailed:
            used = S.evidence_id(x, y) == sl.evidence
            raise UserError("this evidence has already slashed the stake" if used else
                            "the provider is already jailed; it cannot be slashed for equivocation again")
        now = _now(ctx)
        signers = [k.operator_key] + ([k.retired_key] if k.retired_key and now < k.retired_until else [])
        if not any(key and a.verify(key) and b.verify(key) for key in signers):
            raise UserError("the signatures do not verify with the stake's operator key (nor with a retired key "
                            "still in its window); the contract would refuse the report")
        w = ctx.call(ctx.wallet(keys))
        txs = target.send_report_equivocation(ctx.sender(w), a, b, value)
        if not txs:  # the network does not report transactions
            click.echo(f"sent; check the outcome with `cocoon stake status --address {x.stake.to_str()}`")
            return
        mine = [t for t in txs if t.account.hash_part == x.stake.hash_part and not t.bounced]
        if not mine or not mine[0].success:
            raise UserError(_refusal(mine[0], x.stake) if mine else not_sent(ctx, "the stake contract"))
        after = rd.slashing()
        reward = [t for t in txs if t.src is not None and t.src.hash_part == x.stake.hash_part
                  and t.account.hash_part == w.address.hash_part and t.op == S.OP["payout"]]
        click.echo(f"ok: the provider was slashed {fmt_ton(after.slashed_total - sl.slashed_total)} TON and jailed")
        if reward:
            click.echo(f"received {fmt_ton(reward[0].value)} TON (the reporter's share and the unspent value)")

"""``cocoon escrow``: payment channels for clients (payers) and providers (payees).

A channel is the escrow contract of (registry, payer, payee, payer key). The payer opens and funds it,
signs cumulative vouchers off chain (``cocoon escrow voucher``), and may close it or withdraw part of
it after the registry's close delay; the payee (or anyone) claims with the latest voucher. The
escrow's code comes from the registry, so these commands need only the registry and a key.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import click
from pytoniq_core import Address, Cell

from wrappers import keys as K
from node.payments import policy as CP
from node.payments import vouchers as V
from wrappers import escrow as E
from wrappers import registry as R
from wrappers.chain.records import fmt_ton
from wrappers.errors import explain_error

from .context import ChainContext, UserError, guarded, load_keys, open_wallet, chain_now as _now
from .options import (network_options, not_sent, parse_address as _address, parse_hex256 as _key_hex,
                      parse_ton as _ton, registry_address, registry_option)

ADVICE = {
    E.Err.LOW_VALUE: "attach more value (the operation's fee and any storage deficit)",
    E.Err.NOT_OWNER: "only the channel's payer may do this",
    E.Err.NOT_OPEN: "the channel is not open yet: the payer opens it with `cocoon escrow open`",
    E.Err.CLOSED: "the channel is closed for good; open a new one with another voucher key",
    E.Err.ALREADY_OPEN: "the channel is already open; add money with `cocoon escrow top-up`",
    E.Err.BAD_SIGNATURE: "the voucher is not signed by this channel's payer key (or is for another channel)",
    E.Err.BAD_PAYEE_SIGNATURE: "the payee's signature does not match the channel's payee key",
    E.Err.STALE_VOUCHER: "the voucher is not above what was already claimed; nothing to pay",
    E.Err.NOTHING_TO_CLAIM: "the channel holds nothing more; the payer must top it up",
    E.Err.TOO_EARLY: "the notice period has not ended yet",
    E.Err.NOTHING_TO_FINISH: "no close or withdrawal is pending",
    E.Err.REQUEST_PENDING: "a close or withdrawal is already pending; finish it first",
    E.Err.AMOUNT_TOO_HIGH: "the channel holds less than that",
}

voucher_key_option = click.option(
    "--voucher-key-file", type=click.Path(exists=True, dir_okay=False),
    help="File with the 32-byte Ed25519 seed (hex or raw) that signs this channel's statements "
         "(default: your wallet key). Never printed.")


@click.group()
def escrow() -> None:
    """Payment channels: open, top up, claim with vouchers, close or withdraw after the notice."""


# ------------------------------------------------------------------------------------------------ helpers


def _seed(key_file: Optional[str], keys) -> bytes:
    """The signing seed: the key file's, or the wallet's own."""
    if key_file:
        return load_keys(None, key_file).private[:32]
    return keys.private[:32]


def _when(unix: int, now: int) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))
    if unix <= now:
        return f"{stamp} (passed)"
    left = unix - now
    h, rest = divmod(left, 3600)
    m, s = divmod(rest, 60)
    return f"{stamp} (in {h}h {m}m {s}s)" if h else f"{stamp} (in {m}m {s}s)"


def _deployed(ctx: ChainContext, address: Address) -> bool:
    return ctx.call(ctx.status(address)) == "active"


def _value(ctx: ChainContext, addr: Address, ch: E.Channel, fee: int) -> int:
    """The value to attach: the operation's fee, a margin, and what storage took below the escrow's
    reserve while it sat idle (the contract asks the caller for it)."""
    return fee + E.MARGIN + E.storage_deficit(ctx.call(ctx.net.balance(addr)), ch)


def _reader(ctx: ChainContext, channel: str):
    """(address, the Escrow's synchronous reader) of a deployed channel."""
    addr = _address(channel, "the channel")
    if not _deployed(ctx, addr):
        raise UserError(f"no escrow is deployed at {addr.to_str()} on {ctx.network}; check the address "
                        "(`cocoon escrow open` prints it)")
    return addr, ctx.contract(E.Escrow, addr).read


_KEY_HINT = {"payer": "pass the --voucher-key-file the channel was opened with",
             "payee": "pass --signing-key-file with the key the channel names (see `cocoon escrow status`)"}


def _require_party_key(rd, seed: bytes, party: str) -> tuple[int, int]:
    """The channel's (payer key, payee key), once ``seed`` is checked to be ``party``'s key."""
    payer_key, payee_key = rd.keys()
    if (payer_key if party == "payer" else payee_key) != K.public_key_int(seed):
        raise UserError(f"this key is not the channel's {party} key; {_KEY_HINT[party]}")
    return payer_key, payee_key


def _load_voucher(text: str) -> V.Voucher:
    """A voucher from a file or from its JSON text."""
    p = Path(text)
    try:
        raw = p.read_text() if p.is_file() else text
    except OSError as e:
        raise UserError(f"cannot read the voucher file: {e.strerror}") from None
    try:
        return V.Voucher.from_json(raw)
    except Exception:
        where = f"{text}: not a voucher" if p.is_file() else "the voucher is neither a file nor voucher JSON"
        raise UserError(f"{where}; a voucher is the JSON `cocoon escrow voucher` prints") from None


def _check(ctx: ChainContext, txs, addr: Address, what: str, before: Optional[E.Channel] = None,
           read=None) -> None:
    """Say whether the escrow accepted the message: from its transactions where the network reports
    them (the embedded chain, the chain server), else by watching the channel until it changes."""
    if not txs:
        if read is not None:
            _await_change(read, before, what)
        else:
            click.echo(f"sent: {what}; check with `cocoon escrow status {addr.to_str()}`")
        return
    mine = [t for t in txs if t.account.hash_part == addr.hash_part and not t.bounced]
    if not mine:
        raise UserError(not_sent(ctx, f"the escrow {addr.to_str()}"))
    t = mine[0]
    if not t.success:
        advice = ADVICE.get(t.exit_code)
        raise UserError("the escrow refused: error " + (f"{E.describe_error(t.exit_code)}: {advice}" if advice
                                                         else explain_error(t.exit_code, E.ERROR_NAMES))
                        + "; nothing changed and the value came back minus fees")
    click.echo(f"ok: {what} (gas {t.gas_used}, fees {fmt_ton(t.total_fees)} TON)")


def _await_change(read, before: Optional[E.Channel], what: str, timeout: int = 120,
                  done: Optional[Callable[[E.Channel], bool]] = None) -> E.Channel:
    start = time.monotonic()
    with click.progressbar(length=timeout, label="waiting for the escrow", file=click.get_text_stream("stderr")) as bar:
        while time.monotonic() - start < timeout:
            try:
                now = read.channel()
            except Exception:
                now = None
            if now is not None and now != before and (done is None or done(now)):
                click.echo(f"\nok: {what}")
                return now
            time.sleep(4)
            bar.update(4)
    raise UserError(f"the escrow did not change within {timeout} s: it may have refused the message (the value "
                    f"then came back to your wallet); check `cocoon escrow status {read.address.to_str()}`")


def _payouts(txs, addr: Address) -> list[tuple[E.Payout, int]]:
    out = []
    for t in txs:
        if t.src is not None and t.src.hash_part == addr.hash_part and not t.bounced and t.in_msg is not None:
            p = E.parse_payout(t.in_msg.body)
            if p is not None:
                out.append((p, t.value))
    return out


def _payer_op(network, state_file, mnemonic_file, key_file, wallet_version, channel, body: Cell, fee: int,
              what: str, check: Optional[Callable] = None):
    """Send ``body`` from the payer's wallet to its channel and report the outcome."""
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        addr, rd = _reader(ctx, channel)
        me = ctx.call(open_wallet(ctx.provider, keys, ctx.wallet_version, ctx.network)).address
        _, payer, _ = rd.parties()
        if payer != me:
            raise UserError(f"only the channel's payer {payer.to_str()} may do this; your wallet is {me.to_str()}")
        ch = rd.channel()
        if check is not None:
            check(ctx, ch)
        w = ctx.call(ctx.wallet(keys))
        txs = ctx.contract(E.Escrow, addr).send(ctx.sender(w), body, _value(ctx, addr, ch, fee))
        _check(ctx, txs, addr, what, ch, rd)
        return ctx, addr, rd, txs


def _require_active(ch: E.Channel) -> None:
    if ch.state in (E.State.NEW, E.State.OPENING):
        raise UserError(ADVICE[E.Err.NOT_OPEN])
    if ch.state == E.State.CLOSED:
        raise UserError(ADVICE[E.Err.CLOSED])


# ------------------------------------------------------------------------------------------------ commands
@escrow.command("open")
@network_options
@registry_option
@voucher_key_option
@click.option("--payee-key", help="The payee's Ed25519 public key (64 hex digits), needed for cooperative closes. "
              "Default: the operator key of the payee if it is a registered proxy.")
@click.argument("payee")
@click.argument("amount")
@guarded
def open_(network, state_file, mnemonic_file, key_file, wallet_version, registry, voucher_key_file, payee_key,
          payee, amount):
    """Open a channel from your wallet to PAYEE with AMOUNT TON (deploys the escrow).

    The escrow asks the registry for its parameters; an amount below the registry's minimum deposit
    comes back. Attaches AMOUNT + 0.055 TON; what the open does not spend comes back.
    """
    nano = _ton(amount)
    payee_addr = _address(payee, "the payee")
    keys = load_keys(mnemonic_file, key_file)
    payer_key = K.public_key_int(_seed(voucher_key_file, keys))
    with ChainContext(network, state_file, wallet_version) as ctx:
        reg = registry_address(registry, state_file, network)
        rd = ctx.contract(R.Registry, reg).read
        try:
            code, params = rd.child_codes().escrow, rd.params()
        except Exception:
            raise UserError(f"cannot read the registry at {reg.to_str()}; is that the registry's address on "
                            f"{network}?") from None
        if code is None:
            raise UserError("this registry has no escrow code yet; its owner must set it (a set_child_codes "
                            "proposal) before channels can be opened")
        minimum = params.economics.min_escrow_deposit
        if nano < minimum:
            raise UserError(f"the registry's minimum deposit is {fmt_ton(minimum)} TON; open with at least that")
        if payee_key:
            pkey = _key_hex(payee_key, "--payee-key")
        else:
            proxy = rd.proxy(payee_addr)
            if proxy is None:
                raise UserError("the payee is not a registered proxy, so its key is not known: pass --payee-key HEX "
                                "(the key the payee will sign a cooperative close with)")
            pkey = proxy.operator_key
        me = ctx.call(open_wallet(ctx.provider, keys, ctx.wallet_version, ctx.network)).address
        if me == payee_addr:
            raise UserError("a channel needs two parties: the payee is your own wallet")
        esc = ctx.instant(E.Escrow.from_init(ctx.contract_provider, reg, me, payee_addr, payer_key, code=code))
        addr, read = esc.address, esc.read
        if rd.escrow_address(me, payee_addr, payer_key) != addr:
            raise UserError("the registry derives another escrow address than its escrow code gives; refusing to send")
        before = None
        if _deployed(ctx, addr):
            before = read.channel()
            if before.state == E.State.CLOSED:
                raise UserError(f"the channel {addr.to_str()} was closed for good; use another --voucher-key-file "
                                "to open a new channel to this payee")
            if before.state != E.State.NEW:
                raise UserError(f"the channel {addr.to_str()} is already {before.state_name}; "
                                "add money with `cocoon escrow top-up`")
        w = ctx.call(ctx.wallet(keys))
        click.echo(f"opening the channel {addr.to_str()} to {payee_addr.to_str()} with {fmt_ton(nano)} TON")
        txs = esc.send_open(ctx.sender(w), nano, pkey)  # deploys it
        if not txs:  # the network does not report transactions: watch the channel
            ch = _await_change(read, before, "the registry answered", done=lambda c: c.state in (E.State.OPEN, E.State.NEW))
            if ch.state != E.State.OPEN:
                raise UserError("the open was refused (the amount is below the registry's minimum or the registry did "
                                "not answer); the amount came back to your wallet")
        else:
            _check(ctx, txs, addr, "open sent")
            refused = [p for p, _ in _payouts(txs, addr) if p.op == "open_refused"]
            if refused:
                raise UserError(f"the open was refused ({E.describe_error(refused[0].reason)}); the amount came back "
                                "to your wallet")
        delay, _ = read.config()
        click.echo(f"channel: {addr.to_str()}")
        click.echo(f"open with {fmt_ton(read.channel().deposited)} TON; close delay {delay} s; "
                   f"payee key {pkey:064x}")


@escrow.command("top-up")
@network_options
@click.argument("channel")
@click.argument("amount")
@guarded
def top_up(network, state_file, mnemonic_file, key_file, wallet_version, channel, amount):
    """Add AMOUNT TON to CHANNEL (anyone may). Attaches AMOUNT + 0.015 TON (and any storage deficit
    of an idle escrow); the rest comes back."""
    nano = _ton(amount)
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        addr, rd = _reader(ctx, channel)
        ch = rd.channel()
        _require_active(ch)
        w = ctx.call(ctx.wallet(keys))
        txs = ctx.contract(E.Escrow, addr).send_top_up(ctx.sender(w), nano, nano + _value(ctx, addr, ch, E.TOP_UP_FEE))
        _check(ctx, txs, addr, f"added {fmt_ton(nano)} TON", ch, rd)
        click.echo(f"deposited in total {fmt_ton(rd.channel().deposited)} TON")


@escrow.command()
@network_options
@click.option("--voucher", "voucher_text", help="A voucher (file or JSON): also show what it is worth now.")
@click.option("--claim-fee", default="0.01", show_default=True, help="TON a claim costs, to judge if claiming pays.")
@click.argument("channel")
@guarded
def status(network, state_file, mnemonic_file, key_file, wallet_version, voucher_text, claim_fee, channel):
    """Show a channel: state, deposited, claimed, withdrawn, held, pending withdrawal, close time,
    parties and keys; with --voucher, what it pays now and the payee's exposure."""
    with ChainContext(network, state_file, wallet_version) as ctx:
        addr, rd = _reader(ctx, channel)
        ch = rd.channel()
        reg, payer, payee = rd.parties()
        payer_key, payee_key = rd.keys()
        delay, minimum = rd.config()
        now = _now(ctx)
        click.echo(f"channel       {addr.to_str()}")
        click.echo(f"state         {ch.state_name}")
        click.echo(f"deposited     {fmt_ton(ch.deposited)} TON")
        click.echo(f"claimed       {fmt_ton(ch.claimed)} TON")
        click.echo(f"withdrawn     {fmt_ton(ch.withdrawn)} TON")
        click.echo(f"held          {fmt_ton(ch.held)} TON")
        if ch.owed:
            click.echo(f"owed          {fmt_ton(ch.owed)} TON (bounced payments, claimable by the payee)")
        if ch.state == E.State.CLOSING:
            click.echo(f"closing       finish after {_when(ch.close_at, now)}")
        elif ch.pending_withdrawal:
            click.echo(f"withdrawal    {fmt_ton(ch.pending)} TON, finish after {_when(ch.close_at, now)}")
        elif ch.state == E.State.CLOSED:
            click.echo(f"closed at     {_when(ch.close_at, now)}")
        click.echo(f"payer         {payer.to_str()}  key {payer_key:064x}")
        click.echo(f"payee         {payee.to_str()}  key {payee_key:064x}")
        click.echo(f"registry      {reg.to_str()}")
        click.echo(f"params        close delay {delay} s, minimum deposit {fmt_ton(minimum)} TON")
        if voucher_text:
            v = _load_voucher(voucher_text)
            if v.channel != addr:
                raise UserError("the voucher is for another channel")
            valid = v.verify(payer_key)
            click.echo(f"voucher       {fmt_ton(v.amount)} TON, signature {'valid' if valid else 'INVALID'}")
            if valid:
                fee = _ton(claim_fee, "--claim-fee")
                ex = CP.exposure(v.amount, ch)
                click.echo(f"claimable     {fmt_ton(E.claimable(v.amount, ch))} TON now "
                           f"(worth claiming: {'yes' if CP.should_claim(v.amount, ch, fee, now) else 'not yet'})")
                click.echo(f"exposure      unclaimed {fmt_ton(ex.unclaimed)} TON, covered {fmt_ton(ex.covered)}, "
                           f"uncovered {fmt_ton(ex.uncovered)}, at risk from a notice {fmt_ton(ex.at_risk)}")


@escrow.command()
@network_options
@voucher_key_option
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the voucher to this file.")
@click.argument("channel")
@click.argument("total")
@guarded
def voucher(network, state_file, mnemonic_file, key_file, wallet_version, voucher_key_file, output, channel, total):
    """Sign a voucher granting the payee TOTAL TON in total from CHANNEL (off chain; payer).

    Vouchers are cumulative: each one replaces the previous, so TOTAL includes what was paid before.
    """
    nano = _ton(total, "total")
    keys = load_keys(mnemonic_file, key_file)
    seed = _seed(voucher_key_file, keys)
    with ChainContext(network, state_file, wallet_version) as ctx:
        addr, rd = _reader(ctx, channel)
        _require_party_key(rd, seed, "payer")
        ch = rd.channel()
        if nano <= ch.claimed:
            raise UserError(f"{fmt_ton(ch.claimed)} TON were already claimed; a voucher is cumulative and must be above that")
        covered = ch.claimed + ch.held
        if nano > covered:
            click.echo(f"warning: the channel covers {fmt_ton(covered)} TON in total ({fmt_ton(ch.claimed)} claimed, "
                       f"{fmt_ton(ch.held)} held); the payee can claim at most that until you top it up "
                       "(`cocoon escrow top-up`)", err=True)
    v = V.Voucher.sign(seed, addr, nano)
    if output:
        Path(output).write_text(v.to_json() + "\n")
        click.echo(f"voucher for {fmt_ton(nano)} TON written to {output}")
    else:
        click.echo(v.to_json())


@escrow.command()
@network_options
@click.argument("channel")
@click.argument("voucher_text", metavar="VOUCHER")
@guarded
def claim(network, state_file, mnemonic_file, key_file, wallet_version, channel, voucher_text):
    """Claim with VOUCHER (a file or its JSON): the payee receives what it grants beyond what was
    already claimed. Anyone may send it; the money always goes to the payee."""
    v = _load_voucher(voucher_text)
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        addr, rd = _reader(ctx, channel)
        if v.channel != addr:
            raise UserError(f"the voucher is for the channel {v.channel.to_str()}, not this one")
        payer_key, _ = rd.keys()
        if not v.verify(payer_key):
            raise UserError(ADVICE[E.Err.BAD_SIGNATURE])
        ch = rd.channel()
        pay = E.claimable(v.amount, ch)
        if pay == 0:
            if ch.state in (E.State.NEW, E.State.OPENING):
                raise UserError(ADVICE[E.Err.NOT_OPEN])
            if ch.state == E.State.CLOSED:
                raise UserError("the channel is closed and owes the payee nothing more")
            if v.amount <= ch.claimed:
                raise UserError(f"{fmt_ton(ch.claimed)} TON were already claimed; this voucher grants "
                                f"{fmt_ton(v.amount)} TON in total, so it pays nothing more")
            raise UserError(ADVICE[E.Err.NOTHING_TO_CLAIM])
        w = ctx.call(ctx.wallet(keys))
        txs = ctx.contract(E.Escrow, addr).send_claim(ctx.sender(w), v, _value(ctx, addr, ch, E.CLAIM_FEE))
        _check(ctx, txs, addr, f"claimed {fmt_ton(pay)} TON for the payee", ch, rd)
        owed = rd.channel().owed
        paid = [p for p, _ in _payouts(txs, addr) if p.op == "payment"]  # where the network reports them
        if owed:
            click.echo(f"the payee's account did not accept the payment (is its wallet deployed?): "
                       f"{fmt_ton(owed)} TON stay claimable; claim again once it can receive")
        elif paid:
            click.echo(f"paid {fmt_ton(paid[0].amount)} TON to {rd.parties()[2].to_str()}")


@escrow.command()
@network_options
@voucher_key_option
@click.option("--cooperative", "coop_amount", metavar="TOTAL",
              help="Close at once: the payee gets TOTAL TON in total (its signature is needed, --payee-signature).")
@click.option("--payee-signature", help="The payee's signature on the cooperative close (`cocoon escrow sign-close`).")
@click.argument("channel")
@guarded
def close(network, state_file, mnemonic_file, key_file, wallet_version, voucher_key_file, coop_amount,
          payee_signature, channel):
    """Close CHANNEL (payer): after the registry's close delay anyone finishes it and the rest comes
    back to you; the payee can claim until then. With --cooperative it settles at once."""
    if coop_amount is None:
        if payee_signature:
            raise UserError("--payee-signature belongs to a cooperative close: add --cooperative TOTAL")

        def can_close(ctx, ch: E.Channel) -> None:
            _require_active(ch)
            if ch.state == E.State.CLOSING:
                raise UserError(f"the channel is already closing; finish it after {_when(ch.close_at, _now(ctx))}")

        ctx, addr, rd, _ = _payer_op(network, state_file, mnemonic_file, key_file, wallet_version, channel,
                                     E.request_close_body(), E.REQUEST_FEE, "close requested", can_close)
        ch = rd.channel()
        click.echo(f"anyone can finish after {_when(ch.close_at, _now(ctx))} (`cocoon escrow finish "
                   f"{addr.to_str()}`)")
        return
    nano = _ton(coop_amount, "--cooperative")
    if not payee_signature:
        raise UserError("a cooperative close needs the payee's signature: --payee-signature HEX "
                        "(the payee makes it with `cocoon escrow sign-close CHANNEL TOTAL`)")
    try:
        qsig = bytes.fromhex(payee_signature.removeprefix("0x"))
    except ValueError:
        qsig = b""
    if len(qsig) != 64:
        raise UserError("the payee's signature is 128 hex digits (64 bytes)")
    keys = load_keys(mnemonic_file, key_file)
    seed = _seed(voucher_key_file, keys)
    with ChainContext(network, state_file, wallet_version) as ctx:
        addr, rd = _reader(ctx, channel)
        _, payee_key = _require_party_key(rd, seed, "payer")
        if not V.verify_statement(payee_key, E.TAG_COOP_CLOSE, addr, nano, qsig):
            raise UserError(f"the payee's signature is not valid for a close at {fmt_ton(nano)} TON on this channel")
        ch = rd.channel()
        _require_active(ch)
        w = ctx.call(ctx.wallet(keys))
        body = E.coop_close_body(nano, V.sign_coop_close(seed, addr, nano), qsig)
        txs = ctx.contract(E.Escrow, addr).send(ctx.sender(w), body, _value(ctx, addr, ch, E.COOP_CLOSE_FEE))
        _check(ctx, txs, addr, "closed cooperatively", ch, rd)
        for p, _ in _payouts(txs, addr):  # where the network reports the transactions
            who = "payee" if p.op == "payment" else "you"
            click.echo(f"{who}: {fmt_ton(p.amount)} TON")


@escrow.command("sign-close")
@network_options
@click.option("--signing-key-file", type=click.Path(exists=True, dir_okay=False),
              help="File with the seed of the channel's payee key (default: your wallet key). Never printed.")
@click.argument("channel")
@click.argument("total")
@guarded
def sign_close(network, state_file, mnemonic_file, key_file, wallet_version, signing_key_file, channel, total):
    """Sign a cooperative close of CHANNEL granting the payee TOTAL TON in total (payee, off chain);
    prints the signature to give the payer."""
    nano = _ton(total, "total")
    keys = load_keys(mnemonic_file, key_file)
    seed = _seed(signing_key_file, keys)
    with ChainContext(network, state_file, wallet_version) as ctx:
        addr, rd = _reader(ctx, channel)
        _require_party_key(rd, seed, "payee")
        ch = rd.channel()
        if nano < ch.claimed:
            click.echo(f"note: {fmt_ton(ch.claimed)} TON were already claimed; the close pays the payee nothing more",
                       err=True)
    click.echo(V.sign_coop_close(seed, addr, nano).hex())


@escrow.command()
@network_options
@click.argument("channel")
@click.argument("amount")
@guarded
def withdraw(network, state_file, mnemonic_file, key_file, wallet_version, channel, amount):
    """Ask to withdraw AMOUNT TON from CHANNEL (payer); after the close delay anyone finishes it and
    what is still held, at most AMOUNT, comes back to you."""
    nano = _ton(amount)

    def can_withdraw(ctx, ch: E.Channel) -> None:
        _require_active(ch)
        if ch.state == E.State.CLOSING or ch.pending_withdrawal:
            raise UserError(f"a close or withdrawal is already pending until {_when(ch.close_at, _now(ctx))}")
        if nano > ch.held:
            raise UserError(f"the channel holds {fmt_ton(ch.held)} TON; you cannot withdraw {fmt_ton(nano)} TON")

    ctx, addr, rd, _ = _payer_op(network, state_file, mnemonic_file, key_file, wallet_version, channel,
                                 E.request_withdraw_body(nano), E.REQUEST_FEE,
                                 f"withdrawal of {fmt_ton(nano)} TON requested", can_withdraw)
    click.echo(f"anyone can finish after {_when(rd.channel().close_at, _now(ctx))} "
               f"(`cocoon escrow finish {addr.to_str()}`)")


@escrow.command()
@network_options
@click.argument("channel")
@guarded
def finish(network, state_file, mnemonic_file, key_file, wallet_version, channel):
    """Finish a close or withdrawal of CHANNEL whose notice has ended (anyone may)."""
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        addr, rd = _reader(ctx, channel)
        ch = rd.channel()
        _require_active(ch)
        if ch.state == E.State.OPEN and not ch.pending:
            raise UserError(ADVICE[E.Err.NOTHING_TO_FINISH])
        now = _now(ctx)
        if now < ch.close_at:
            hint = (f"; on a local chain move the clock with `cocoon registry advance-time {ch.close_at - now}`"
                    if ctx.net.dev else "; run it again then")
            raise UserError(f"the notice ends at {_when(ch.close_at, now)}" + hint)
        w = ctx.call(ctx.wallet(keys))
        txs = ctx.contract(E.Escrow, addr).send_finish(ctx.sender(w), _value(ctx, addr, ch, E.FINISH_FEE))
        _check(ctx, txs, addr, "finished", ch, rd)
        for p, _ in _payouts(txs, addr):  # where the network reports the transactions
            if p.op == "refund":
                click.echo(f"returned {fmt_ton(p.amount)} TON to the payer")
        click.echo(f"the channel is {rd.channel().state_name}")

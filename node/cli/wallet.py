"""`cocoon wallet`: a standard TON wallet (v4r2 by default, v5r1 on request) for every command."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .context import ChainContext, UserError, guarded, load_keys
from .options import network_option, network_options, parse_address, parse_ton, wallet_version_option


def _friendly(address, network: str) -> str:
    """A wallet's address as wallets show it: non-bounceable, with the test flag on testnet."""
    return address.to_str(is_bounceable=False, is_test_only=network == "testnet")


@click.group()
def wallet() -> None:
    """Your wallet: create a key, show the wallet, fund it on a local chain."""


@wallet.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path(".cocoon/wallet.words"),
              show_default=True, help="Where to write the 24 words (created with mode 0600, never overwritten).")
@wallet_version_option("Wallet contract version the address is for.")
@network_option("Network the address is shown for (testnet addresses carry the test flag; v5r1 signs for it).")
@guarded
def new(out: Path, wallet_version: str, network: str) -> None:
    """Create a new key: 24 words written to --out; prints only the wallet's address."""
    import asyncio

    from node.chain import CocoonError, check_network, keys_from_words, new_mnemonic, open_wallet, write_mnemonic

    class _Offline:  # enough for pytoniq to build a wallet and its address, no network needed
        async def raw_get_account_state(self, address, block=None):
            return None, None

    try:
        check_network(network)
        words = new_mnemonic()
        write_mnemonic(out, words)
        keys = keys_from_words(" ".join(words), str(out))
        w = asyncio.run(open_wallet(_Offline(), keys, wallet_version, network))
    except CocoonError as e:
        raise UserError(str(e)) from None
    click.echo(_friendly(w.address, network))


@wallet.command()
@network_options
@guarded
def show(network, state_file, mnemonic_file, key_file, wallet_version) -> None:
    """Show your wallet: address, version, balance, state and seqno (on any network)."""
    from node.chain import open_wallet
    from wrappers.chain.records import fmt_ton

    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        w = ctx.call(open_wallet(ctx.provider, keys, wallet_version, network))
        status = ctx.call(ctx.net.status(w.address))
        seqno = ctx.call(w.get_seqno()) if status == "active" else 0
        click.echo(f"address   {_friendly(w.address, network)}")
        click.echo(f"raw       {w.address.to_str(is_user_friendly=False)}")
        click.echo(f"wallet    {wallet_version}")
        click.echo(f"balance   {fmt_ton(w.balance)} TON")
        click.echo(f"state     {status}")
        click.echo(f"seqno     {seqno}")


@wallet.command()
@click.argument("amount")
@click.option("--to", "to", metavar="ADDRESS", help="Fund this address instead of your wallet.")
@network_options
@guarded
def fund(amount, to: Optional[str], network, state_file, mnemonic_file, key_file, wallet_version) -> None:
    """Send AMOUNT TON from the faucet to your wallet (embedded and local chains only)."""
    from node.chain import open_wallet
    from wrappers.chain.records import fmt_ton

    if network in ("testnet", "mainnet"):
        raise UserError(f"the faucet exists only on the embedded and local chains, not on {network}")
    nano = parse_ton(amount)
    dest = parse_address(to, "--to") if to else None
    keys = None if dest is not None else load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        if not ctx.net.dev:
            raise UserError(f"the faucet exists only on the embedded and local chains, not on {network}")
        if dest is None:
            dest = ctx.call(open_wallet(ctx.provider, keys, wallet_version, network)).address
        ctx.call(ctx.net.fund(dest, nano))
        bal = ctx.call(ctx.net.balance(dest))
        click.echo(f"funded {_friendly(dest, network) if to is None else dest.to_str()} with {fmt_ton(nano)} TON; "
                   f"balance {fmt_ton(bal)} TON")

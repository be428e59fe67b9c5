"""``cocoon demo``: a whole job lifecycle on a fresh embedded chain, narrated step by step.

Everything runs in the real TVM transaction emulator at mainnet prices with the committed contract
builds; every number printed comes from an executed transaction or a real signature. The story is
:func:`node.lifecycle.run_story`, which the end-to-end tests assert step by step.
"""
from __future__ import annotations

import time

import click

from wrappers.chain.records import fee_table, fmt_ton, tx_tree

from .lifecycle import StepFailed, run_story


def _ton(n: int) -> str:
    return f"{n / 10**9:+.9f}" if n else "0"


@click.command()
@click.option("--lang", type=click.Choice(["func", "tolk"]), default="tolk", show_default=True,
              help="Which build of the contracts to run (both follow the same schema).")
@click.option("--jobs", type=click.IntRange(1, 500), default=24, show_default=True, help="Requests to run.")
@click.option("--tree", is_flag=True, help="Also print the transaction tree.")
@click.option("--fees", "show_fees", is_flag=True, help="Also print the per-transaction fee table.")
def demo(lang: str, jobs: int, tree: bool, show_fees: bool) -> None:
    """Run a whole job lifecycle of the network on a fresh embedded chain and narrate it.

    Deploy; allow images and a model through governance; a proxy and two workers stake; the proxy
    registers; payment channels open; jobs run with signed authorizations, exact final vouchers and
    worker receipts; claims settle; reputation reports land; a worker unbonds and withdraws; an
    equivocating worker is slashed; the client closes. Ends with every party's balance change, which
    adds up to the fees paid.
    """
    click.echo(click.style("Cocoon on TON: a whole job lifecycle on an embedded chain", bold=True))
    click.echo("Every step is a real transaction in the TVM emulator, at mainnet gas, storage and forward prices.\n")
    t0 = time.perf_counter()
    try:
        r = run_story(lang, click.echo, jobs)
    except StepFailed as e:
        raise click.ClickException(f"the demo stopped: {e}")
    elapsed = time.perf_counter() - t0
    n = r.network

    click.echo(click.style("\nBalance changes (TON)", bold=True))
    width = max(len(k) for k in r.changes)
    for name, delta in r.changes.items():
        click.echo(f"  {name:<{width}}  {_ton(delta):>16}")
    total = sum(r.changes.values())
    click.echo(f"  {'sum of changes':<{width}}  {_ton(total):>16}")
    click.echo(f"  {'fees paid':<{width}}  {_ton(-r.fees):>16}")
    verdict = "add up" if total == -r.fees else "DO NOT ADD UP"
    click.echo(f"\nThe balance changes {verdict}: {fmt_ton(-total)} TON left the parties, {fmt_ton(r.fees)} TON "
               f"went to fees over {len(n.txs)} transactions ({elapsed:.1f} s).")
    click.echo(f"Jobs: {len(n.ledger.jobs)}; client paid {fmt_ton(r.claimed['proxy'])} TON through the proxy; "
               f"workers were paid {fmt_ton(r.claimed['worker-a'])} and {fmt_ton(r.claimed['worker-b'])} TON; "
               f"slashed {fmt_ton(r.slashed)} TON, of which {fmt_ton(r.reporter_reward)} TON to the watcher.")
    if show_fees:
        click.echo(click.style("\nTransactions and fees", bold=True))
        click.echo(fee_table(n.txs, n.names))
    if tree:
        click.echo(click.style("\nTransaction tree", bold=True))
        click.echo(tx_tree(n.txs, n.names))
    if total != -r.fees:
        raise click.ClickException("the balance changes do not add up to the fees")

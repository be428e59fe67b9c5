"""``cocoon demo``: the network answering a real question on this machine, narrated (:mod:`node.devnet.demo`);
``cocoon demo --contracts-only``: a whole job lifecycle on a fresh embedded chain, narrated step by step.

With --contracts-only everything runs in the real TVM transaction emulator at mainnet prices with the
committed contract builds; every number printed comes from an executed transaction or a real signature.
That story is :func:`node.lifecycle.run_story`, which the end-to-end tests assert step by step.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import click

from wrappers.chain.records import fee_table, fmt_ton, tx_tree

from node.lifecycle import StepFailed, run_story

from .options import lang_option


def _ton(n: int) -> str:
    return f"{n / 10**9:+.9f}" if n else "0"


@click.command()
@click.option("--contracts-only", is_flag=True,
              help="Instead: the contract lifecycle alone on an in-process embedded chain (no services, no model), "
                   "with simulated token counts.")
@lang_option("Which build of the contracts to run (both follow the same schema).")
@click.option("--workers", type=click.IntRange(1, 4), default=2, show_default=True,
              help="Workers on the demo's network.")
@click.option("--question", default=None, metavar="TEXT", help="What to ask SmolLM2.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path(".cocoon/demo"),
              show_default=True, help="The demo network's folder (wiped at the start; logs stay after the end).")
@click.option("--keep", is_flag=True, help="Leave the network running at the end (`cocoon devnet down --dir DIR`).")
@click.option("--jobs", type=click.IntRange(1, 500), default=24, show_default=True,
              help="With --contracts-only: requests to run.")
@click.option("--tree", is_flag=True, help="With --contracts-only: also print the transaction tree.")
@click.option("--fees", "show_fees", is_flag=True, help="With --contracts-only: also print the per-transaction fee table.")
def demo(contracts_only: bool, lang: str, workers: int, question: Optional[str], directory: Path, keep: bool,
         jobs: int, tree: bool, show_fees: bool) -> None:
    """The network doing its job on this machine, narrated: the owner allows the images and the model,
    providers stake, the proxy's and workers' attestations are verified, a real question is answered by
    SmolLM2 through the client gateway, the proxy and a worker (streamed here), its receipt is checked,
    vouchers are signed, payees claim, a reputation report lands, and the money adds up on chain.

    Every service is its own process (`cocoon devnet`); all of them are stopped at the end.
    With --contracts-only: the contract lifecycle alone on an embedded chain.
    """
    if contracts_only:
        _contracts_demo(lang, jobs, tree, show_fees)
        return
    from node.devnet import DevnetError
    from node.devnet import demo as story_mod

    story = story_mod.Story(click.echo, bold=lambda s: click.style(s, bold=True),
                            write=lambda s: (click.echo(s, nl=False), sys.stdout.flush()))
    click.echo(click.style("Cocoon on TON: confidential inference paid in TON, on one machine", bold=True))
    click.echo("A chain server, a proxy, workers running SmolLM2 in a simulated TDX and a client gateway, "
               "each its own process; every number below comes from them or from the chain.")
    try:
        facts = story_mod.run(story, directory, workers=workers, lang=lang, keep=keep,
                              question=question or story_mod.QUESTION)
    except DevnetError as e:
        raise click.ClickException(f"the demo stopped: {e} (logs in {directory}/logs)")
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; every process the demo started was stopped")
    click.echo(f"\ndone in {facts['seconds']:.0f} s. Logs and state: {directory}. Run the network yourself: "
               "`cocoon devnet up`.")


def _contracts_demo(lang: str, jobs: int, tree: bool, show_fees: bool) -> None:
    """The contract lifecycle on a fresh embedded chain, narrated (``cocoon demo --contracts-only``)."""
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

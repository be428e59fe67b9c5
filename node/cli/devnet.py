"""``cocoon devnet``: the whole network on one machine (chain server, proxy, workers, client gateway)."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from .context import UserError, guarded
from .options import json_option, lang_option

dir_option = click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
                          default=Path(".cocoon/devnet"), show_default=True, envvar="COCOON_DEVNET",
                          help="The devnet's folder: keys, logs, each service's state and devnet.json (the pids).")


def _devnet(directory: Path):
    from node.devnet import Devnet, Reporter

    try:
        return Devnet(directory, Reporter(click.echo))
    except ValueError as e:
        raise UserError(str(e)) from None


@click.group()
def devnet() -> None:
    """The whole network on one machine: `up`, `status`, `down`."""


@devnet.command()
@dir_option
@click.option("--workers", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Workers to start, each serving SmolLM2 in its own simulated TDX image.")
@lang_option("Which build of the contracts to deploy.")
@click.option("--ports", type=click.Choice(["default", "free"]), default="default", show_default=True,
              help="default: the documented ports (chain 8081, gateway 8000, proxy 8443/8444), any free one where "
                   "busy; free: any free ports. Kept for later `up`s in the same folder.")
@click.option("--budget", default="50", show_default=True, metavar="TON", help="The client gateway's budget.")
@click.option("--refresh", type=click.FloatRange(0.2, 60), default=2.0, show_default=True,
              help="Seconds between the services' registry reads (revocations act at the next one).")
@click.option("--threads", type=click.IntRange(1, 64), help="CPU threads per worker [default: the cores shared among the workers].")
@click.option("--epoch", type=click.FloatRange(1, 86400), default=10.0, show_default=True,
              help="Seconds between the proxy's reputation reports (sent only for workers that served jobs).")
@guarded
def up(directory: Path, workers: int, lang: str, ports: str, budget: str, refresh: float, threads, epoch: float) -> None:
    """Start the network: chain server, registry (deployed by `cocoon deploy`), a staked proxy, N workers
    and a client gateway, each its own process logging into DIR/logs.

    Idempotent: when the devnet in DIR runs, nothing is started again; after `down` it resumes the same
    chain. Prints the OpenAI base URL and how to use it.
    """
    from node.devnet import DevnetError

    d = _devnet(directory)
    try:
        st = d.up(workers=workers, lang=lang, ports=ports, refresh=refresh, budget=budget, threads=threads,
                  epoch=epoch)
    except DevnetError as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        raise UserError("interrupted; everything started was stopped") from None
    click.echo("")
    click.echo(f"OpenAI base URL: {st.base_url}  (any api_key; paid from the devnet's client wallet)")
    click.echo("  from openai import OpenAI")
    click.echo(f"  c = OpenAI(base_url=\"{st.base_url}\", api_key=\"devnet\")")
    click.echo(f"  print(c.chat.completions.create(model=\"{st.model_name}\", messages=[{{\"role\": \"user\", "
               "\"content\": \"Hi!\"}]).choices[0].message.content)")
    click.echo(f"`cocoon devnet status --dir {directory}` shows each process and its money; "
               f"`cocoon devnet down --dir {directory}` stops them.")


@devnet.command()
@dir_option
@json_option()
@guarded
def status(directory: Path, as_json: bool) -> None:
    """Each process (running or not), its address and its money; the books of the whole chain."""
    from node.devnet import money
    from node.devnet.procs import http_ok

    d = _devnet(directory)
    st = d.state
    if not st.procs and not st.registry:
        raise UserError(f"no devnet in {directory}; start one with `cocoon devnet up --dir {directory}`")
    books = None
    chain = st.proc("chain")
    if chain is not None and chain.alive() and http_ok(f"{st.chain_url}/dev/now"):
        books = asyncio.run(money.read_books(st))
    if as_json:
        click.echo(json.dumps({"dir": str(d.dir), "registry": st.registry, "chain": st.chain_url,
                               "base_url": st.base_url,
                               "processes": [{"name": p.name, "pid": p.pid, "running": p.alive(), "url": p.url,
                                              "address": p.address, "log": p.log} for p in st.procs],
                               "money": books.to_json() if books else None}, indent=2))
        return
    click.echo(f"devnet {d.dir}: registry {st.registry or '-'}, chain {st.chain_url or '-'}")
    for p in st.procs:
        state = "running" if p.alive() else "STOPPED"
        money_col = ""
        if books is not None:
            label = "proxy" if p.role == "proxy" else p.name
            if label in books.wallets:
                money_col = f"wallet {money.ton(books.wallets[label])} TON"
                if label in books.stakes:
                    money_col += f", stake {money.ton(books.stakes[label]['active'])} TON"
        click.echo(f"  {p.name:<9} pid {p.pid:<7} {state:<8} {p.url}")
        if p.address or money_col:
            click.echo(f"  {'':<9} {p.address} {money_col}")
    if not st.procs:
        click.echo("  nothing running (`cocoon devnet up` resumes it)")
    if books is not None:
        click.echo("money (TON):")
        for line in money.table(books):
            click.echo(line)


@devnet.command()
@dir_option
@guarded
def down(directory: Path) -> None:
    """Stop exactly what `up` started, by pid (SIGTERM, SIGKILL after 10 s). State and keys stay in DIR."""
    d = _devnet(directory)
    if not d.state.procs:
        click.echo(f"nothing running in {directory}")
        return
    d.down()
    click.echo("stopped; `cocoon devnet up` resumes the same chain")


if __name__ == "__main__":
    devnet(sys.argv[1:])

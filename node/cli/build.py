"""``cocoon build``: compile the contracts, or check the committed artifacts against their sources."""
from __future__ import annotations

import sys

import click


@click.command()
@click.option("--check", is_flag=True, help="Rebuild in memory and fail, naming the contract, if any "
              "committed artifact in contracts/build/ differs from what its sources produce.")
@click.option("--lang", type=click.Choice(["func", "tolk", "all"]), default="all", show_default=True,
              help="Which implementation to build.")
@click.option("--contract", metavar="NAME", help="Build only this contract (e.g. registry).")
def build(check: bool, lang: str, contract: str | None) -> None:
    """Compile every contract (FunC with tonpy's FunC 0.4.6, Tolk with @ton/tolk-js).

    Writes contracts/build/<name>.<lang>.json with the code BoC, its hash, the compiler and its
    version, and the hash of the sources.
    """
    from wrappers import build as b

    if check:
        click.echo("checking committed artifacts against a fresh build:")
        problems = b.check()
        if problems:
            for p in problems:
                click.echo(f"MISMATCH {p}", err=True)
            click.echo(f"{len(problems)} artifact(s) differ; run `cocoon build` and commit the result.", err=True)
            sys.exit(1)
        click.echo("all artifacts match their sources")
        return
    langs = b.LANGS if lang == "all" else (lang,)
    click.echo(f"building into {b.BUILD.relative_to(b.ROOT)}/:")
    arts = b.build_all(langs=langs, log=click.echo, only=contract)
    if contract and not arts:
        click.echo(f"error: no contract named {contract!r} under contracts/func or contracts/tolk", err=True)
        sys.exit(1)
    click.echo(f"{len(arts)} artifact(s) written")

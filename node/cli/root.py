"""The ``cocoon`` command: one entry point for operators, providers, clients and auditors.

Each command group lives in its own module of this package (``node/cli/<group>.py``); this module
holds the root group and ``cocoon build``, registers the groups by plain imports, and turns every
expected failure into a one-line message and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import sys

import click

from wrappers.build import BuildError


class CocoonGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BuildError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=CocoonGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cocoon-ton", prog_name="cocoon")
def main() -> None:
    """Confidential AI inference on TON: contracts, chain, attestation and services.

    Start with `cocoon demo` (runs the network's contracts on an embedded local chain and narrates
    what happens), `cocoon build --check` (verifies the committed contract artifacts), or
    `cocoon COMMAND --help`.
    """


@main.command()
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


# The command groups, each in its own module: a module that fails to import stops `cocoon` with its
# error instead of a command silently missing.
from . import (attest, chain, client, demo, deploy, devnet, escrow, proxy, receipt, registry,  # noqa: E402
               reputation, stake, wallet, worker)

for _command in (attest.attest, registry.registry, worker.worker, demo.demo, stake.stake, escrow.escrow,
                 reputation.reputation, deploy.deploy, chain.chain, wallet.wallet, client.client,
                 receipt.receipt, proxy.proxy, devnet.devnet):
    main.add_command(_command)

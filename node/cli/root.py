"""The ``cocoon`` command: one entry point for operators, providers, clients and auditors.

Each command and command group lives in its own module of this package (``node/cli/<name>.py``);
this module holds the root group, registers them by plain imports, and turns every expected failure
into a one-line message and a non-zero exit, never a traceback.
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


# The commands, each in its own module: a module that fails to import stops `cocoon` with its error
# instead of a command silently missing.
from . import (attest, build, chain, client, demo, deploy, devnet, escrow, proxy, receipt,  # noqa: E402
               registry, reputation, stake, wallet, worker)

for _command in (build.build, attest.attest, registry.registry, worker.worker, demo.demo, stake.stake, escrow.escrow,
                 reputation.reputation, deploy.deploy, chain.chain, wallet.wallet, client.client,
                 receipt.receipt, proxy.proxy, devnet.devnet):
    main.add_command(_command)

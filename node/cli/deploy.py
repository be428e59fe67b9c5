"""``cocoon deploy CONFIG``: deploy the registry described by a TOML file, with :mod:`node.deploy`
(examples and guide in scripts/deploy/)."""
from __future__ import annotations

import asyncio
from contextlib import contextmanager
from pathlib import Path

import click

from .context import DEFAULT_STATE, ProgressBar, UserError, guarded
from node.deploy import Options, Report, VerificationFailed, load_config, run


class ClickReport(Report):
    """The run's account through click: lines on stdout, notes on stderr, progress bars on stderr."""

    def echo(self, text: str) -> None:
        click.echo(text)

    def note(self, text: str) -> None:
        click.echo(text, err=True)

    @contextmanager
    def waiting(self, label: str):
        bar = ProgressBar(label)
        try:
            yield bar
        finally:
            bar.done()


class MismatchError(UserError):
    """The registry differs from the file: exit status 3."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

HELP = """Deploy the registry, with its child codes, parameters and initial trust lists,
to the network CONFIG names (embedded, testnet or mainnet), then verify it and write a record.

\b
CONFIG is a TOML file (examples: scripts/deploy/examples/embedded.toml, testnet.toml):
  network = "embedded" | "testnet" | "mainnet"
  language = "func" | "tolk"             which committed build (contracts/build/)
  record_dir = "deployments"             optional; where records go
  [owner]   exactly one of mnemonic_file = PATH, mnemonic_env = "VARNAME",
            key_file = PATH (32-byte seed); wallet = "v4r2" | "v5r1".
            Never the words themselves.
  [registry] deploy_value (TON), children = ["stake", "escrow", "reputation"],
            address (optional: the registry this file manages)
  [params]  test_network (bool), governance_delay (s), max_proxies
  [params.economics] price_per_token, worker_fee_per_token (nanoTON per
            token), prompt/cached/completion/reasoning_mult (10000 = 1.0),
            min_escrow_deposit (TON), close_delay (s)
  [params.staking] min_worker_stake, min_proxy_stake (TON),
            unbonding_period (s), slash_bps, reporter_bps (basis points),
            treasury (address or "owner")
  [trust]   worker_images, proxy_images, models (lists of hex hashes),
            since (unix time stored with them; default 0)

\b
Idempotent: the registry's address follows from its code and initial data.
If it is active there (or at the address pinned in the file, or at a
registry this owner deployed per a record in the record directory), it is
not deployed again: it is verified, and differences are fixed only by
governance proposals, printed and sent with --propose (never twice).

\b
After a run the record is RECORD_DIR/<network>-<address>.json: addresses,
code hashes (from the artifacts), parameters read back, transaction hashes,
open proposals and the verification. Exit status: 0 verified, 1 error,
3 the registry differs from the file or the artifacts (fields named).
"""


@click.command(help=HELP)
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print every message and its cost; send nothing. Embedded: the cost "
              "is measured exactly on a snapshot of the chain, then restored. Testnet/mainnet: nothing "
              "connects; the cost is an estimate from a fresh embedded chain with mainnet prices.")
@click.option("--check", is_flag=True, help="Only verify the deployed registry against CONFIG and the committed "
              "artifacts, and update its record; send nothing.")
@click.option("--propose", is_flag=True, help="Send the governance proposals that fix differences between a "
              "deployed registry and CONFIG (otherwise they are only printed).")
@click.option("--new", "new", is_flag=True, help="Deploy a new registry even if a record shows this owner already "
              "has one on this network that CONFIG has since diverged from.")
@click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_STATE,
              show_default=True, envvar="COCOON_CHAIN_STATE",
              help="Embedded chain only: where the local chain is kept between commands.")
@click.option("--record-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where deployment records go (default: record_dir in CONFIG, else ./deployments).")
@guarded
def deploy(config, dry_run, check, propose, new, state_file, record_dir):
    cfg = load_config(config)
    opts = Options(dry_run=dry_run, check=check, propose=propose, new=new, state_file=state_file,
                   record_dir=record_dir)
    try:
        asyncio.run(run(cfg, opts, ClickReport()))
    except VerificationFailed as e:
        raise MismatchError(str(e), e.exit_code) from None

"""``cocoon receipt verify``: check a worker's receipt for one answer, offline or against the chain."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import click

from .context import UserError, guarded
from .client import DEFAULT_STATE
from .options import json_option, state_dir_option, tee_trust_options


@click.group()
def receipt() -> None:
    """Receipts: the worker's signed statement of what it answered, for how many tokens."""


@receipt.command("verify")
@click.argument("target", metavar="FILE|ID")
@state_dir_option(DEFAULT_STATE, "COCOON_CLIENT_STATE", "gateway's state folder, where an ID is looked up")
@click.option("--network", envvar="COCOON_NETWORK",
              help="Also check against this chain (local, a URL, testnet, mainnet): the registry's current "
                   "allow-lists and the worker's stake. Without it the check is offline, against the registry "
                   "view recorded with the receipt.")
@click.option("--registry", envvar="COCOON_REGISTRY", help="Registry address (default: the one recorded).")
@tee_trust_options("Accept the simulated TEE of this development root (test registries only).")
@json_option("Print the verdict as one JSON object.")
@guarded
def verify_cmd(target: str, state_dir: Path, network: Optional[str], registry: Optional[str], dev_trust: Optional[str],
               pccs_url: Optional[str], accept_tcb: tuple[str, ...], as_json: bool) -> None:
    """Check one receipt: FILE is a record from `cocoon client receipts --json` (an object, or a list
    holding one), ID a receipt number, request id or job id in the gateway's state. Exit code 0 when
    every check passes, 1 otherwise."""
    record = _record(target, state_dir)
    verdict = asyncio.run(_verify(record, network, registry, dev_trust, pccs_url, accept_tcb))
    if as_json:
        click.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        click.echo(f"receipt of job {record.get('job_id', '?')}"
                   + (f" ({record['model']})" if record.get("model") else ""))
        for c in verdict.checks:
            click.echo(f"  {c.label:<4}  {c.name:<15} {c.detail}")
        click.echo("VERIFIED" if verdict.ok else f"FAILED: {', '.join(verdict.failed)}")
    if not verdict.ok:
        raise SystemExit(1)


def _record(target: str, state_dir: Path) -> dict:
    p = Path(target)
    if p.exists():
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{target} is not a receipt record (JSON): {e}") from None
        if isinstance(data, list):
            if len(data) != 1:
                raise UserError(f"{target} holds {len(data)} receipts; give a file with one (or an ID)")
            data = data[0]
        if not isinstance(data, dict):
            raise UserError(f"{target} is not a receipt record")
        return data
    from .options import client_store

    store = client_store(state_dir)
    row = store.receipt(target)
    if row is None:
        raise UserError(f"no file {target} and no receipt with that number, request id or job id in {state_dir}")
    return store.export(row)


async def _verify(record: dict, network, registry, dev_trust, pccs_url, accept_tcb):
    from pytoniq_core import Address

    from node.chain import open_network
    from node.client.chain import ClientChain
    from node.payments.receipts import EvidenceError, verify_record
    from node.tee.collateral import PccsCollateral
    from node.tee.simulated import DevTrust

    trust = DevTrust.load(dev_trust) if dev_trust else None
    collateral = PccsCollateral(pccs_url) if pccs_url else None
    tcb = tuple(accept_tcb) or ("UpToDate",)
    try:
        if not network:
            return await verify_record(record, dev_trust=trust, accept_tcb=tcb, collateral=collateral)
        reg = registry or (record.get("registry") or {}).get("registry")
        if not reg:
            raise UserError("which registry? pass --registry ADDRESS")
        net = await open_network(network)
        try:
            return await verify_record(record, live=ClientChain(net, Address(reg)), dev_trust=trust, accept_tcb=tcb,
                                       collateral=collateral)
        finally:
            await net.close()
    except EvidenceError as e:
        raise UserError(str(e)) from None

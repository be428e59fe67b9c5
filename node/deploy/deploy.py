"""One deployment run: find what exists, send only what is missing, wait, verify, record.

What exists. The registry's address is a function of (code, initial data), so the file's registry
has one address. The run looks, in this order, at

1. the registry pinned by ``[registry] address`` in the file, if any;
2. the address the file computes: active there with any code means deployed;
3. unless ``--new``: the records (``<network>-*.json`` in the record directory) of registries this
   owner deployed on this network, newest first; an active one is the deployment this file manages,
   and the file has since been changed.

A registry found this way is never deployed again. It is verified against the file; differences in
parameters, child codes, the registry's code or the initial trust lists are fixed only through
governance: the run prints the ``propose`` messages and sends them with ``--propose`` (an identical
proposal already open is not sent again). Nothing is changed silently. If nothing is found, the plan
is the one deploy message.

Modes: a real run (sends, then verifies and writes the record); ``--dry-run`` (prints every message
and its cost; on the embedded chain the cost is measured on a snapshot that is then restored; for
testnet and mainnet nothing connects and the cost is an estimate from a fresh embedded chain);
``--check`` (connects, verifies, updates the record, sends nothing).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import os

from node.chain import CocoonError, open_network

from . import cost, record
from .config import CHILDREN, DeployConfig
from .keys import owner_keys, wallet_address
from .plan import Expected, Message, deploy_message, expect, fix_messages, fmt_addr, fmt_ton, load_artifacts
from .report import Report
from .send import Sent, describe_cost, owner_wallet, send_one
from .verify import Check, Observed, extra_trust, observe, verify

EXIT_MISMATCH = 3
ESTIMATE_FUNDING = 10_000 * 10**9


class VerificationFailed(CocoonError):
    """The registry on chain differs from the file (or from the committed artifacts)."""
    exit_code = EXIT_MISMATCH


@dataclass
class Options:
    dry_run: bool = False
    check: bool = False
    propose: bool = False
    new: bool = False
    state_file: Optional[Path] = None     # the embedded chain's file (None: a chain in memory only)
    record_dir: Optional[Path] = None


@dataclass
class Outcome:
    address: object
    sent: list[Sent] = field(default_factory=list)
    planned: list[Message] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    record_path: Optional[Path] = None


async def run(cfg: DeployConfig, opts: Options, report: Optional[Report] = None) -> Outcome:
    """One run for ``cfg``; what happens is told to ``report``. Raises CocoonError on every expected
    failure and :class:`VerificationFailed` when the registry differs from the file."""
    report = report or Report()
    if opts.dry_run and opts.check:
        raise CocoonError("--dry-run and --check do not go together: --check already sends nothing")
    net = cfg.network
    record_dir = Path(opts.record_dir or cfg.record_dir or record.default_dir(net, opts.state_file))
    arts = load_artifacts(cfg.language, cfg.children)
    keys = owner_keys(cfg.owner)
    owner = await wallet_address(keys, cfg.owner.wallet, net)
    exp = expect(cfg, arts, owner)

    where = f" (local chain in {opts.state_file})" if opts.state_file else " (a chain in memory only)"
    report.line("network", net + (where if net == "embedded" else ""))
    report.line("config", str(cfg.path))
    report.line("build", f"{cfg.language}: registry {exp.code_hash}")
    for n in CHILDREN:
        report.line("", f"{n:<11}" + (exp.child_hash(n) or "(not installed)"))
    report.line("owner", f"{fmt_addr(owner, net)} ({cfg.owner.wallet} wallet; key from {cfg.owner.source()})")
    report.line("registry", f"{fmt_addr(exp.address, net)} (from the code and initial data of this file)")

    if opts.dry_run and net != "embedded":
        return await _offline_dry_run(report, cfg, exp, keys, record_dir)

    chain = await open_network(net, opts.state_file, api_key=os.environ.get("COCOON_API_KEY"), log=report.note)
    keep = False
    try:
        out = await _on_chain(report, chain, cfg, opts, exp, keys, record_dir)
        keep = not opts.dry_run
        return out
    except CocoonError:
        keep = not opts.dry_run  # a refusal reported by the chain is a real outcome (fees were paid): keep it
        raise
    finally:
        await chain.close(save=keep)


async def _on_chain(report: Report, chain, cfg: DeployConfig, opts: Options, exp: Expected, keys,
                    record_dir: Path) -> Outcome:
    net = cfg.network
    obs, how = await _locate(chain, cfg, exp, record_dir, opts.new)
    out = Outcome(obs.address)
    if obs.address != exp.address:
        report.line("found", f"{fmt_addr(obs.address, net)}, {how}")
    elif obs.active:
        report.line("found", f"deployed, {how}")
    else:
        report.line("found", f"not deployed (account {obs.status})")
    checks = verify(exp, obs) if obs.active else []
    failed = [c.field for c in checks if not c.ok]

    if opts.check:
        if not obs.active:
            raise CocoonError(f"no registry is deployed at {fmt_addr(obs.address, net)}; "
                              "run without --check to deploy it")
        out.checks = checks
        out.record_path = _write_record(cfg, exp, obs, checks, [], record_dir, opts)
        _report(report, cfg, exp, obs, checks, [], out.record_path)
        return out

    if not obs.active:
        plan = [deploy_message(exp, cfg.deploy_value)]
    else:
        plan = _fixes(report, cfg, exp, obs, failed, opts.propose)
    out.planned = plan

    if opts.dry_run:
        _print_plan(report, plan, net)
        if plan:
            measured = await cost.measure(chain, keys, cfg.owner.wallet, plan, obs.address, net, report)
            _print_costs(report, measured, "measured on a snapshot of the embedded chain, which was then restored")
            _stop_on_refusal(measured)
        if checks:
            _print_checks(report, checks, exp, obs, net)
        report.echo("dry run: nothing was sent and the chain is as it was")
        return out

    if not plan:
        report.echo("nothing to send: the registry is deployed" +
                    ("; the differences above need --propose" if _unproposed(exp, obs, failed) else
                     " and every difference is already proposed" if failed else ""))
    else:
        _print_plan(report, plan, net)
        wallet = await owner_wallet(chain, keys, cfg.owner.wallet, report)
        for i, m in enumerate(plan, 1):
            report.echo(f"sending [{i}] {m.title}...")
            s = await send_one(chain, wallet, m, obs.address, net, report)
            out.sent.append(s)
            if not s.ok:
                obs = await observe(chain, obs.address)
                out.record_path = _write_record(cfg, exp, obs, verify(exp, obs), out.sent, record_dir, opts)
                raise CocoonError(f"[{i}] {m.title}: {s.error}; what was sent is in {out.record_path}")
            report.echo(f"  done: {describe_cost(s)}")
            report.echo(f"  transactions: wallet {s.wallet_tx}, registry {s.registry_tx}")
            if s.proposal_id is not None:
                report.echo(f"  proposal #{s.proposal_id}, executable after unix time {s.execute_after} "
                            f"(`cocoon registry execute {s.proposal_id}`)")

    obs = await observe(chain, obs.address)
    checks = verify(exp, obs)
    out.checks = checks
    out.record_path = _write_record(cfg, exp, obs, checks, out.sent, record_dir, opts)
    if net == "embedded" and opts.state_file:
        f = record.registry_file(opts.state_file)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(obs.address.to_str() + "\n")
    _report(report, cfg, exp, obs, checks, out.sent, out.record_path)
    return out


# ------------------------------------------------------------------------------------------ pieces
async def _locate(chain, cfg: DeployConfig, exp: Expected, record_dir: Path, new: bool) -> tuple[Observed, str]:
    net = cfg.network
    if cfg.address is not None:
        obs = await observe(chain, cfg.address)
        if not obs.active:
            raise CocoonError(f"[registry] address {fmt_addr(cfg.address, net)}: no registry there on {net} "
                            f"(account {obs.status}); correct it, or remove `address` from the file to deploy "
                            "a new registry")
        return obs, "pinned by [registry] address in the file"
    obs = await observe(chain, exp.address)
    if obs.status == "frozen":
        raise CocoonError(f"the account {fmt_addr(exp.address, net)} is frozen (storage debt); unfreeze it by "
                        "sending TON with its state init before deploying there")
    if obs.active:
        return obs, "at the address this file computes"
    if not new:
        for doc in record.find(record_dir, net, exp.owner):
            o = await observe(chain, doc["_address"])
            if o.active:
                return o, (f"recorded in {doc['_path']}: the file has changed since that deployment, so the "
                           "differences are governance proposals (pass --new to deploy another registry instead)")
    return obs, "not deployed"


def _fixes(report: Report, cfg: DeployConfig, exp: Expected, obs: Observed, failed: list[str],
           propose: bool) -> list[Message]:
    net = cfg.network
    fixable = [f for f in failed if f != "owner"]
    msgs = fix_messages(exp, obs.address, fixable)
    if "owner" in failed:
        report.line("owner", f"the registry's owner is {fmt_addr(obs.owner, net)}, not this file's wallet: only the "
                      "owner can propose; nothing will be sent")
        if propose:
            raise VerificationFailed(f"the registry at {fmt_addr(obs.address, net)} is owned by "
                                     f"{fmt_addr(obs.owner, net)}; use that wallet's key in [owner]")
        return []
    todo = []
    for m in msgs:
        p = obs.pending(m.action)
        if p is not None:
            report.line("pending", f"{m.title}: already proposed as #{p.id}, executable after unix time {p.execute_after}")
        elif propose:
            todo.append(m)
        else:
            report.line("to fix", f"{m.title} ({', '.join(m.fixes)}), not sent (--propose sends it):")
            for d in m.describe(net):
                report.echo(f"      {d}")
    return todo


def _unproposed(exp: Expected, obs: Observed, failed: list[str]) -> list[Message]:
    """Fix messages for ``failed`` that no open proposal covers."""
    return [m for m in fix_messages(exp, obs.address, [f for f in failed if f != "owner"])
            if obs.pending(m.action) is None]


def _print_plan(report: Report, plan: list[Message], net: str) -> None:
    report.echo(f"plan        {len(plan)} message(s) from the owner's wallet")
    for i, m in enumerate(plan, 1):
        report.echo(f"  [{i}] {m.title}")
        for d in m.describe(net):
            report.echo(f"      {d}")


def _print_costs(report: Report, results: list[Sent], how: str) -> None:
    report.echo(f"cost        ({how})")
    for i, s in enumerate(results, 1):
        report.echo(f"  [{i}] {describe_cost(s)}")
    fees = sum(s.fees for s in results)
    debit = sum(s.wallet_debit for s in results)
    report.echo(f"  total fees {fmt_ton(fees)} TON = {fees} nanoTON; the wallet pays {fmt_ton(debit)} TON = "
               f"{debit} nanoTON")


def _stop_on_refusal(results: list[Sent]) -> None:
    bad = [(i, s) for i, s in enumerate(results, 1) if not s.ok]
    if bad:
        i, s = bad[0]
        raise CocoonError(f"dry run: [{i}] {s.message.title} would fail: {s.error}")


def _print_checks(report: Report, checks: list[Check], exp: Expected, obs: Observed, net: str) -> None:
    failed = [c for c in checks if not c.ok]
    report.echo(f"verified    {len(checks) - len(failed)} of {len(checks)} checks pass "
               f"(code hashes against contracts/build, parameters against the file)")
    for c in failed:
        report.echo(f"  MISMATCH {c.field}: expected {c.expected}, on chain {c.actual}")
    for kind, hashes in extra_trust(exp, obs).items():
        report.echo(f"  note: {len(hashes)} {kind.replace('_', ' ')} allowed on chain are not in the file "
                   "(added through governance; not a mismatch)")


def _report(report: Report, cfg: DeployConfig, exp: Expected, obs: Observed, checks: list[Check], sent: list[Sent],
            path: Optional[Path]) -> None:
    _print_checks(report, checks, exp, obs, cfg.network)
    if path is not None:
        report.echo(f"record      {path}")
    failed = [c.field for c in checks if not c.ok]
    if failed:
        if "owner" in failed:
            what = "the registry has another owner; use its key in [owner]"
        elif not _unproposed(exp, obs, failed):
            what = ("the proposals that fix this are open: execute them after the governance delay "
                    "(`cocoon registry execute ID`), then run again")
        else:
            what = "run again with --propose to send the governance proposals that fix it, or correct the file"
        raise VerificationFailed(f"the registry at {fmt_addr(obs.address, cfg.network)} differs from the file in "
                                 f"{', '.join(failed)}; {what}")
    report.echo(f"ok          registry {fmt_addr(obs.address, cfg.network)} verified")


def _write_record(cfg, exp, obs, checks, sent, record_dir: Path, opts: Options) -> Path:
    path = record.record_path(record_dir, cfg.network, obs.address)
    doc = record.build(record.load(path), cfg, exp, obs, checks, sent,
                       opts.state_file if cfg.network == "embedded" else None)
    record.write(path, doc)
    return path


async def _offline_dry_run(report: Report, cfg: DeployConfig, exp: Expected, keys, record_dir: Path) -> Outcome:
    """testnet / mainnet dry run: no connection. Plans the deploy, estimates its cost."""
    net = cfg.network
    report.line("found", f"not checked: a dry run for {net} does not connect (`--check` reads the chain)")
    if cfg.address is not None:
        report.line("note", f"the file pins the registry {fmt_addr(cfg.address, net)}: a real run deploys nothing, "
                     "it verifies that registry and proposes the differences (see them with --check)")
        _print_plan(report, [], net)
        report.echo(f"dry run: nothing was sent and nothing connected to {net}")
        return Outcome(cfg.address)
    for doc in record.find(record_dir, net, exp.owner):
        if doc["_address"] == exp.address:
            report.line("note", f"{doc['_path']} records this registry as deployed: a real run checks it and sends "
                         "nothing if it is there")
        else:
            report.line("note", f"{doc['_path']} records another registry of this owner: if it is active, a real run "
                         "proposes the differences instead of deploying (unless --new)")
    plan = [deploy_message(exp, cfg.deploy_value)]
    _print_plan(report, plan, net)
    est = await cost.estimate(keys, cfg.owner.wallet, net, plan, exp.address, ESTIMATE_FUNDING, report)
    _print_costs(report, est, f"ESTIMATE: emulated on a fresh embedded chain with mainnet prices, no {net} access; "
                      f"the fees {net} charges at the time decide, and a wallet that is not yet active also "
                      "pays for its own deployment")
    _stop_on_refusal(est)
    report.echo(f"dry run: nothing was sent and nothing connected to {net}")
    return Outcome(exp.address, planned=plan)

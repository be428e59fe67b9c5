"""``cocoon reputation``: workers' on-chain records, and what a proxy has reported.

``show WORKER`` reads one record (totals, the score now, the last report, slashes). ``reported
PROXY_OWNER`` lists the workers a proxy has reported. ``submit WORKER`` signs a report with a proxy's
operator key and relays it through the registry (any wallet may pay for it).

Where the listing comes from: on the embedded chain every account is local, so it reads the records
themselves (each keeps, per proxy, the epoch of its last applied report) and is exact. On testnet
and mainnet no one can enumerate accounts, so it reads the registry's transaction history through
the lite servers and collects the apply_report messages the registry forwarded for that proxy
(the newest ``--limit`` registry transactions), then checks each worker's record for the epoch.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict

import click
from pytoniq_core import Address

from wrappers import keys as K
from wrappers import registry as R
from wrappers import reputation as P
from wrappers.chain.records import fmt_ton
from wrappers.errors import explain_error

from .context import ChainContext, UserError, guarded, load_keys, chain_now as _now
from .options import TonAmount, network_options, not_sent, parse_address as _address, registry_address, registry_option


def _when(t: int, now: int) -> str:
    if not t:
        return "never"
    stamp = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    ago = now - t
    if ago < 0:
        return f"{stamp} (in {-ago} s)"
    for unit, secs in (("d", 86400), ("h", 3600), ("min", 60)):
        if ago >= secs:
            return f"{stamp} ({ago // secs} {unit} ago)"
    return f"{stamp} ({ago} s ago)"


def _record_address(ctx: ChainContext, registry: Address, worker: Address) -> Address:
    from wrappers.chain.getmethod import GetMethodError

    try:
        return ctx.contract(R.Registry, registry).read.reputation_address(worker)
    except GetMethodError as e:
        if e.exit_code == R.Err.NO_CHILD_CODE:
            raise UserError("this registry holds no reputation code; its owner must set the child codes "
                            "(a set_child_codes proposal) before workers can have records") from None
        raise


def _deployed(ctx: ChainContext, address: Address) -> bool:
    return ctx.call(ctx.status(address)) == "active"


@click.group()
def reputation() -> None:
    """Workers' on-chain reputation: records, scores, and what proxies reported."""


# ------------------------------------------------------------------------------------ show
@reputation.command()
@network_options
@registry_option
@click.argument("worker")
@click.option("--json", "as_json", is_flag=True, help="Print the record as one JSON object.")
@guarded
def show(network, state_file, mnemonic_file, key_file, wallet_version, registry, worker, as_json):
    """Show WORKER's record: totals, the score now, the last report and slashes.

    WORKER is the address of the worker's owner (the owner of its stake).
    """
    w = _address(worker, "the worker's owner")
    reg = registry_address(registry, state_file, network)
    with ChainContext(network, state_file, wallet_version) as ctx:
        addr = _record_address(ctx, reg, w)
        now = _now(ctx)
        if not _deployed(ctx, addr):
            if as_json:
                click.echo(json.dumps({"worker": w.to_str(), "record": addr.to_str(), "deployed": False}))
            else:
                click.echo(f"no record yet for {w.to_str()}: no proxy has reported this worker and no slash "
                           f"was recorded (its record will be {addr.to_str()})")
            return
        rd = ctx.contract(P.Reputation, addr).read
        rec, score = rd.record(), rd.score()
        if as_json:
            click.echo(json.dumps(_record_json(w, addr, rec, score, now)))
            return
        t, sl = rec.totals, rec.slashes
        click.echo(f"worker        {w.to_str()}")
        click.echo(f"record        {addr.to_str()}")
        click.echo(f"score         {score} / {P.SCORE_MAX}  ({score / 100:.2f}%, decayed to now)")
        click.echo(f"reports       {t.reports} from {len(rec.reporters)} prox{'y' if len(rec.reporters) == 1 else 'ies'}"
                   f" (tracked for replay protection)")
        click.echo(f"last report   {_when(t.last_report_at, now)}")
        rate = f" ({100 * t.succeeded / t.jobs:.1f}% succeeded)" if t.jobs else ""
        click.echo(f"jobs          {t.succeeded} succeeded, {t.failed} failed, {t.timed_out} timed out{rate}")
        click.echo(f"tokens        {t.tokens}")
        mean = t.mean_latency_ms
        click.echo("latency       " + (f"{mean} ms mean over succeeded jobs" if mean is not None else "-"))
        click.echo(f"slashes       {sl.count}, {fmt_ton(sl.total)} TON in all, last {_when(sl.last_at, now)}")
        for e in sl.events:
            click.echo(f"  #{e.number} {_when(e.at, now)}: {fmt_ton(e.amount)} TON ({e.kind_name})")


def _record_json(worker: Address, addr: Address, rec: P.ReputationRecord, score: int, now: int) -> dict:
    return {
        "worker": worker.to_str(), "record": addr.to_str(), "deployed": True, "initialized": rec.initialized,
        "now": now, "score": score, "totals": asdict(rec.totals),
        "score_state": asdict(rec.score),
        "reporters": {f"{h:064x}": e for h, e in sorted(rec.reporters.items())},
        "slashes": {"count": rec.slashes.count, "total": rec.slashes.total, "last_at": rec.slashes.last_at,
                    "events": [asdict(e) for e in rec.slashes.events]},
    }


# ------------------------------------------------------------------------------------ reported
@reputation.command()
@network_options
@registry_option
@click.argument("proxy_owner")
@click.option("--limit", type=int, default=256, show_default=True,
              help="Testnet/mainnet: how many of the registry's newest transactions to scan.")
@guarded
def reported(network, state_file, mnemonic_file, key_file, wallet_version, registry, proxy_owner, limit):
    """List the workers PROXY_OWNER's proxy has reported (its last epoch for each, and their scores)."""
    proxy = _address(proxy_owner, "the proxy's owner")
    key = P.owner_hash(proxy)
    reg = registry_address(registry, state_file, network)
    if limit <= 0:
        raise UserError("--limit must be positive")
    with ChainContext(network, state_file, wallet_version) as ctx:
        code = ctx.contract(R.Registry, reg).read.child_codes().reputation
        if code is None:
            raise UserError("this registry holds no reputation code, so no worker has a record")
        now = _now(ctx)
        if ctx.net.chain is not None:  # the in-process chain: every account is at hand
            rows = [(rec.worker_owner, addr, rec.reporters[key], rec.score_at(now), rec.totals.reports)
                    for addr, rec in P.records_on_chain(ctx.net.chain, code, reg) if key in rec.reporters]
            source = "the records on the embedded chain"
        else:
            rows = _rows_from_history(ctx, reg, key, limit, now)
            source = f"the registry's newest {limit} transactions"
        if not rows:
            click.echo(f"{proxy.to_str()} has reported no worker (source: {source})")
            return
        click.echo(f"workers reported by {proxy.to_str()} (source: {source}):")
        for worker, addr, epoch, score, reports in sorted(rows, key=lambda r: -r[2]):
            click.echo(f"  {worker.to_str()}  last epoch {_when(epoch, now)}  score {score}  "
                       f"reports in record {reports}")


def _rows_from_history(ctx: ChainContext, reg: Address, key: int, limit: int, now: int) -> list:
    click.echo(f"reading the registry's last {limit} transactions from {ctx.network}...", err=True)
    try:
        txs = ctx.call(ctx.provider.get_transactions(reg, limit))
    except Exception as e:
        raise UserError(f"cannot read the registry's transactions from {ctx.network}: {e}") from None
    msgs = []
    for tx in txs:
        out = tx.out_msgs
        msgs += [out[i] for i in sorted(out)] if isinstance(out, dict) else list(out or [])
    latest: dict[str, P.ForwardedReport] = {}
    for f in P.forwarded_reports(msgs, reg):
        if f.report.proxy_owner_hash == key:
            k = f.report.worker_owner.to_str()
            if k not in latest or f.report.epoch > latest[k].report.epoch:
                latest[k] = f
    rows = []
    with click.progressbar(list(latest.values()), label="reading records",
                           file=click.get_text_stream("stderr")) as bar:
        for f in bar:
            rd = P.ReputationReader(ctx.get_method, f.record)
            try:
                epoch, score, reports = rd.reporter(key), rd.score(), rd.totals().reports
            except Exception:
                continue  # the record refused it (or is not there): nothing was applied
            if epoch is not None:
                rows.append((f.report.worker_owner, f.record, epoch, score, reports))
    return rows


# ------------------------------------------------------------------------------------ submit
@reputation.command()
@network_options
@registry_option
@click.argument("worker")
@click.option("--proxy", "proxy_owner", required=True, help="The reporting proxy's owner address.")
@click.option("--operator-key-file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The proxy's operator key: a 32-byte Ed25519 seed (hex or raw). Never printed.")
@click.option("--epoch", type=int, help="Unix time the reported period ended (default: now).")
@click.option("--succeeded", type=int, default=0, show_default=True, help="Jobs the worker finished in the period.")
@click.option("--failed", type=int, default=0, show_default=True, help="Jobs that failed on the worker.")
@click.option("--timed-out", type=int, default=0, show_default=True,
              help="Jobs that ran past their time limit (a report needs at least one job in all).")
@click.option("--tokens", type=int, default=0, show_default=True, help="Tokens served in the period.")
@click.option("--latency-ms", type=int, default=0, show_default=True,
              help="Mean latency of the succeeded jobs, milliseconds.")
@click.option("--value", type=TonAmount(), default="0.1", show_default=True,
              help="TON to attach (at least 0.05); what is not spent comes back.")
@guarded
def submit(network, state_file, mnemonic_file, key_file, wallet_version, registry, worker, proxy_owner,
           operator_key_file, epoch, succeeded, failed, timed_out, tokens, latency_ms, value):
    """Sign a report about WORKER with a proxy's operator key and relay it through the registry.

    Your wallet (--mnemonic-file/--key-file) pays; the operator key only signs.
    """
    w = _address(worker, "the worker's owner")
    proxy = _address(proxy_owner, "the proxy's owner")
    reg = registry_address(registry, state_file, network)
    if value < P.SUBMIT_VALUE:
        raise UserError(f"attach at least {fmt_ton(P.SUBMIT_VALUE)} TON (--value); the registry refuses less")
    operator = load_keys(None, operator_key_file)
    keys = load_keys(mnemonic_file, key_file)
    with ChainContext(network, state_file, wallet_version) as ctx:
        now = _now(ctx)
        try:
            report = P.build_report(reg, proxy, w, now if epoch is None else epoch, succeeded, failed,
                                    timed_out, tokens, latency_ms)
        except ValueError as e:
            raise UserError(f"the record would refuse this report: {e}") from None
        addr = _precheck(ctx, reg, proxy, w, report, operator.private)
        body = P.signed_submission(report, operator.private)
        wallet = ctx.call(ctx.wallet(keys))
        txs = ctx.contract(R.Registry, reg).send(ctx.sender(wallet), body, value)
        if not txs:  # the network does not report transactions
            click.echo(f"sent; check it with `cocoon reputation show {w.to_str()} --network {network}`")
            return
        _explain(ctx, txs, reg, addr)
        click.echo(f"ok: report for epoch {report.epoch} applied to {addr.to_str()}; "
                   f"score now {ctx.contract(P.Reputation, addr).read.score()}")


def _precheck(ctx: ChainContext, reg: Address, proxy: Address, worker: Address, report: P.Report,
              operator_key: bytes) -> Address:
    """The checks the registry and the record will make, done first so a refusal costs nothing."""
    info = ctx.contract(R.Registry, reg).read.proxy(proxy)
    if info is None:
        raise UserError(f"{proxy.to_str()} is not a registered proxy (the registry would answer 206); "
                        "register it through its stake contract first")
    if not info.active:
        raise UserError(f"the proxy {proxy.to_str()} is inactive (stake too low or jailed; the registry would "
                        "answer 207): no report of it is accepted until its stake is active again")
    if info.operator_key != K.public_key_int(operator_key):
        raise UserError("that operator key is not the proxy's registered key (the registry would answer 213); "
                        "use the key the proxy's stake contract bound")
    rd = ctx.contract(R.Registry, reg).read
    stake = rd.stake_address(worker, R.ROLE_WORKER)
    if not _deployed(ctx, stake):
        raise UserError(f"{worker.to_str()} has no worker stake under this registry ({stake.to_str()}), so it is "
                        "no worker to report; check the address (the owner of the worker's stake)")
    addr = _record_address(ctx, reg, worker)
    now = _now(ctx)
    if report.epoch > now + P.MAX_FUTURE:
        raise UserError(f"epoch {report.epoch} is more than {P.MAX_FUTURE} s ahead of the chain's time {now} (502)")
    if report.epoch < now - P.REPORT_WINDOW:
        raise UserError(f"epoch {report.epoch} is older than the {P.REPORT_WINDOW // 86400}-day report window (500)")
    if _deployed(ctx, addr):
        last = ctx.contract(P.Reputation, addr).read.reporter(report.proxy_owner_hash)
        if last is not None and report.epoch <= last:
            raise UserError(f"this proxy already reported epoch {last} for this worker; a new report needs a "
                            f"later epoch (the record would answer 501)")
    return addr


def _explain(ctx: ChainContext, txs, reg: Address, record: Address) -> None:
    """Turn the embedded chain's outcome into one line when something refused the report."""
    on_reg = [t for t in txs if t.account.hash_part == reg.hash_part and not t.bounced]
    if not on_reg:
        raise UserError(not_sent(ctx, f"the registry {reg.to_str()}"))
    if on_reg and not on_reg[0].success:
        raise UserError(f"the registry refused the report: error {explain_error(on_reg[0].exit_code, P.ERROR_NAMES)}; "
                        "the attached value came back minus fees")
    on_rec = [t for t in txs if t.account.hash_part == record.hash_part and not t.bounced]
    if on_rec and not on_rec[0].success:
        raise UserError(f"the worker's record refused the report: error {explain_error(on_rec[0].exit_code, P.ERROR_NAMES)}; "
                        "the value it carried bounced to the registry")
    if not on_rec:
        raise UserError("the report never reached the worker's record; nothing was applied")

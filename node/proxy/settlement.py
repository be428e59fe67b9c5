"""Settlement and reporting: claims from client channels, caps, worker top-ups, reputation reports.

A pass runs every ``settle_every`` seconds:

1. a client that has not settled its last request within ``settle_grace`` is held to the cap it
   signed (its settled total becomes the held voucher);
2. every client channel is read from the chain. It is claimed when ``node.payments.policy.should_claim``
   says so (the fee at most 0.5 % of the payment by default, or the exposure past its limit) with the
   client's latest exact total (its last settle, never a request's cap); a channel whose payer asked
   to close (or to withdraw) is claimed at once, so the proxy never misses the notice: with the exact
   total when it pays for all that was billed and nothing runs, else with all the payer authorized;
3. channels to workers are topped up before the pay signed on them reaches their deposit.

Each claim is recorded (with the hot wallet's seqno it will use) before it is sent and reconciled
with the chain after a restart: if the wallet's seqno moved past it the message left, and the chain's
claimed total says whether it paid; if not, it was never sent. So no claim is sent twice.

Every ``epoch`` seconds the proxy reports each worker's statistics (succeeded, failed, timed out,
tokens, mean latency) for the jobs that finished in the epoch, signed by its operator key, to the
registry, which forwards them to the worker's reputation record.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from pytoniq_core import Address

from node.chain import CocoonError
from node.payments import policy as CP
from node.payments import vouchers as V
from wrappers import escrow as E
from wrappers import reputation as P

log = logging.getLogger(__name__)


async def settlement_pass(core) -> None:
    s, ledger = core.s, core.ledger
    for channel, added in await ledger.apply_caps(time.time() - s.settle_grace):
        log.info("channel %s did not settle its last request: held to the cap it signed (+%d nanoTON)",
                 channel, added)
    now = await core.net.now()
    exposure = 0
    for row in ledger.channels():
        try:
            ch = await core.chain.channel_state(row.channel)
        except CocoonError as e:
            log.warning("cannot read channel %s: %s", row.channel, e)
            continue
        cached = core.channels.get(row.channel)
        if cached is not None:
            cached.state, cached.read_at = ch, time.monotonic()
        if ch.claimed > row.claimed:
            await ledger.set_claimed(row.channel, ch.claimed)
        exposure += CP.exposure(row.voucher_amount, ch).unclaimed
        closing = ch.state == E.State.CLOSING or bool(ch.pending_withdrawal)
        if closing:   # the payer is leaving: claim before the notice ends (Ledger.close_voucher)
            amount, sig = ledger.close_voucher(row.channel)
            if sig and E.claimable(amount, ch) > s.claim.claim_fee:
                await claim(core, row.channel, amount, sig, ch, "close notice")
            continue
        # otherwise only with the exact total the client settled (a request's cap is not owed)
        if not row.exact_sig or row.exact_amount <= ch.claimed:
            continue
        if CP.should_claim(row.exact_amount, ch, s.claim.claim_fee, now, s.claim.max_fee_share,
                          s.claim.exposure_limit, s.claim.safety_margin):
            reason = "exposure" if row.exact_amount - ch.claimed >= s.claim.exposure_limit else "fee share"
            await claim(core, row.channel, row.exact_amount, row.exact_sig, ch, reason)
    core.metrics.exposure.set(exposure)
    await core.top_up_workers()


async def claim(core, channel: str, amount: int, sig: str, ch: E.Channel, reason: str) -> None:
    """Record, send and confirm one claim with this voucher."""
    ledger = core.ledger
    voucher = V.Voucher(Address(channel), amount, bytes.fromhex(sig))
    value = E.CLAIM_FEE + E.MARGIN + E.storage_deficit(await core.net.balance(Address(channel)), ch)
    cid_box: list[int] = []

    async def record(seqno: int) -> None:
        cid_box.append(await ledger.record_claim(channel, amount, sig, reason, ch.claimed, f"seqno {seqno}"))

    try:
        txs, _seqno = await core.chain.send(Address(channel), value, E.claim_body(voucher), before=record)
    except CocoonError as e:
        log.warning("claim from %s failed: %s", channel, e)
        if cid_box:
            await ledger.claim_status(cid_box[0], "failed", detail=str(e))
        core.metrics.claims.labels("failed").inc()
        return
    cid = cid_box[0]
    await ledger.claim_status(cid, "sent")
    after = await core.chain.channel_state(channel)
    fee = core.chain.fees(txs) or core.s.claim.claim_fee
    if after.claimed >= amount or after.claimed > ch.claimed:
        await ledger.claim_status(cid, "confirmed", fee=fee, claimed=after.claimed)
        core.metrics.claims.labels("confirmed").inc()
        core.metrics.claimed.inc(after.claimed - ch.claimed)
        core.metrics.claim_fees.inc(fee)
        log.info("claimed %d nanoTON from %s (%s), fee %d", after.claimed - ch.claimed, channel, reason, fee)
    else:
        await ledger.claim_status(cid, "failed", fee=fee, detail="the chain's claimed total did not move")
        core.metrics.claims.labels("failed").inc()


async def reconcile(core) -> None:
    """After a restart: settle the fate of claims recorded or sent before the stop."""
    ledger = core.ledger
    open_claims = ledger.open_claims()
    if not open_claims:
        return
    seqno_now = await core.chain.wallet_seqno()
    for c in open_claims:
        detail = c.get("detail") or ""
        used = int(detail.split()[1]) if detail.startswith("seqno ") else None
        ch = await core.chain.channel_state(c["channel"])
        if ch.claimed >= c["amount"] or ch.claimed > c["claimed_before"]:
            await ledger.claim_status(c["id"], "confirmed", claimed=ch.claimed, detail=f"{detail}; confirmed after restart")
        elif used is not None and seqno_now <= used:
            await ledger.claim_status(c["id"], "dropped", detail=f"{detail}; never sent (the proxy stopped first)")
        else:
            await ledger.claim_status(c["id"], "failed", claimed=ch.claimed,
                                      detail=f"{detail}; sent, but the chain's claimed total did not move")


async def report_pass(core, end: float | None = None) -> int:
    """Report every worker's statistics since the last report; returns how many were sent."""
    ledger, chain = core.ledger, core.chain
    end = time.time() if end is None else end
    start = float(ledger.get_meta("report_end") or core.started_at)
    pending = [dict(r) for r in ledger.read(lambda c: c.execute(
        "SELECT worker, epoch, stats FROM reports WHERE status='recorded'").fetchall())]
    if not pending:
        stats = ledger.epoch_stats(start, end)
        epoch = await core.net.now()
        rows = []
        for worker, st in sorted(stats.items()):
            if st["succeeded"] + st["failed"] + st["timed_out"] == 0:
                continue
            rows.append((worker, epoch, st))

        def op(c):
            for w, ep, st in rows:
                c.execute("INSERT OR IGNORE INTO reports (worker, epoch, stats, status, at) VALUES (?, ?, ?, 'recorded', ?)",
                          (w, ep, json.dumps(st), time.time()))
            c.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('report_end', ?)", (repr(end),))
        await ledger.run(op)   # the window and the reports in one step: a job is never reported twice
        pending = [{"worker": w, "epoch": ep, "stats": json.dumps(st)} for w, ep, st in rows]
    sent = 0
    for r in pending:
        st = json.loads(r["stats"])
        try:
            report = P.build_report(chain.registry, chain.owner, Address(r["worker"]), r["epoch"],
                                    succeeded=st["succeeded"], failed=st["failed"], timed_out=st["timed_out"],
                                    tokens=st["tokens"], latency_ms=st["latency_ms"])
        except ValueError as e:
            await ledger.record_report(r["worker"], r["epoch"], st, "invalid", str(e))
            continue
        try:
            await chain.send(chain.registry, P.SUBMIT_VALUE + E.MARGIN, P.signed_submission(report, core.operator))
        except CocoonError as e:
            log.warning("reputation report for %s failed: %s", r["worker"], e)
            core.metrics.reports.labels("failed").inc()
            continue
        await ledger.record_report(r["worker"], r["epoch"], st, "sent")
        core.metrics.reports.labels("sent").inc()
        sent += 1
    return sent


async def loop(core, every: float, step, name: str) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await step(core)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %.0f s", name, every)

"""The payee's claim policy and exposure on one channel, from the escrow's accounting
(:class:`wrappers.escrow.Channel`) and the latest voucher's amount. What a claim pays is the
contract's own rule, :func:`wrappers.escrow.claimable`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from wrappers.escrow import Channel, State, claimable


def claim_worth(voucher_amount: int, ch: Channel, claim_fee: int) -> int:
    """What the payee gains by claiming now: the payment minus the fees the claim costs (may be
    negative: then claiming loses money)."""
    return claimable(voucher_amount, ch) - claim_fee


def should_claim(voucher_amount: int, ch: Channel, claim_fee: int, now: int, max_fee_share: float = 0.01,
                 exposure_limit: Optional[int] = None, safety_margin: int = 600) -> bool:
    """The payee's policy: claim when the fee is at most ``max_fee_share`` of the payment, when a
    close or withdrawal notice ends within ``safety_margin`` seconds (the last chance before the
    payer takes the rest back), or when the unclaimed amount exceeds ``exposure_limit``."""
    pay = claimable(voucher_amount, ch)
    if pay <= claim_fee:
        return False
    if ch.state == State.CLOSING or ch.pending_withdrawal:
        if now + safety_margin >= ch.close_at:
            return True
    if exposure_limit is not None and voucher_amount - ch.claimed >= exposure_limit:
        return True
    return claim_fee <= pay * max_fee_share


@dataclass(frozen=True)
class Exposure:
    """The payee's risk on a channel: authorized by the payer but not yet paid out."""
    authorized: int     # the latest voucher's cumulative amount
    claimed: int        # what the contract already granted
    unclaimed: int      # authorized - claimed
    covered: int        # the part of unclaimed the escrow still holds (a claim would pay it)
    uncovered: int      # unclaimed - covered: signed, but no deposit behind it
    at_risk: int        # covered money a pending withdrawal or close could return to the payer
    notice_ends: int    # close_at of a pending close or withdrawal, 0 if none


def exposure(authorized: int, ch: Channel) -> Exposure:
    """The payee's exposure: authorized minus claimed minus what the deposit covers. A proxy stops
    serving a client when ``uncovered`` (or ``unclaimed``) passes its limit."""
    unclaimed = max(authorized - ch.claimed, 0)
    active = ch.state in (State.OPEN, State.CLOSING)
    covered = min(unclaimed, ch.held) if active else 0
    at_risk = 0
    if ch.state == State.CLOSING:
        at_risk = covered
    elif ch.pending_withdrawal:
        at_risk = max(0, covered - max(ch.held - ch.pending_withdrawal, 0))
    notice = ch.close_at if (ch.state == State.CLOSING or ch.pending_withdrawal) else 0
    return Exposure(authorized, ch.claimed, unclaimed, covered, unclaimed - covered, at_risk, notice)

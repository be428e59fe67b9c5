"""The exit codes the contracts throw and what each means: the one table, mirroring the schemas.

Codes 100-105 are common to every contract and 200-299 are the registry's (contracts/common.tlb);
the stake's are 300-399 (stake.tlb), the escrow's 400-499 (escrow.tlb), the reputation record's
500-599 (reputation.tlb). Codes below 100 are TVM's own. Each wrapper's ``Err`` class names the
codes for code; its ``ERROR_NAMES`` and ``describe_error`` come from here (:func:`names_for`).
A test checks this table against the schemas' comments.
"""
from __future__ import annotations

from typing import Optional

# code -> (name, meaning)
ERRORS: dict[int, tuple[str, str]] = {
    # common to every contract (common.tlb)
    100: ('unknown_op', 'the op is not one this contract handles'),
    101: ('not_owner', 'the sender is not the owner (or not the party the op requires)'),
    102: ('low_value', "the attached value does not cover the operation's fees"),
    103: ('wrong_sender', 'the sender is not the contract it claims to be (address recomputed)'),
    104: ('bad_workchain', 'an address outside workchain 0'),
    105: ('malformed', 'a body that parses but carries an impossible value'),
    # registry (common.tlb)
    200: ('hash_exists', 'adding a hash that is already allowed'),
    201: ('hash_unknown', 'revoking a hash that is not allowed'),
    202: ('proposal_unknown', 'no proposal with that id'),
    203: ('proposal_not_ready', 'executing before the governance delay has passed'),
    204: ('too_many_proposals', 'more than max_open_proposals (16) are open'),
    205: ('not_pending_owner', 'accept_ownership from anyone but the pending owner'),
    206: ('proxy_unknown', 'no registered proxy with that owner'),
    207: ('stake_too_low', 'a proxy stake below the minimum or inactive'),
    208: ('too_many_proxies', 'max_proxies reached'),
    209: ('bad_params', 'parameters out of range (a share above 10000, a zero multiplier...)'),
    210: ('no_child_code', 'the child code needed for this operation is not set'),
    211: ('bad_role', 'a role other than 1 (worker) or 2 (proxy)'),
    212: ('bad_action', 'a proposal with an unknown action tag'),
    213: ('bad_signature', "a signed report that does not verify with the proxy's operator key"),
    214: ('proxy_removed', 'register_proxy for a proxy the owner removed (until readmit_proxy)'),
    215: ('too_many_codes', 'a child-code change that would leave more than 8 earlier stake codes'),
    # stake (stake.tlb)
    300: ('params_pending', 'the network parameters have not arrived from the registry yet'),
    301: ('bad_amount', 'an unbond of 0 or of more than the active stake'),
    302: ('too_many_unbonding', '4 unbonding requests are already in flight'),
    303: ('nothing_unbonding', 'withdraw with no request in flight'),
    304: ('still_locked', "withdraw before any request's unlock time"),
    305: ('jailed', 'a deposit to, or new evidence against, a jailed provider'),
    306: ('not_active', 'register_proxy with an inactive stake'),
    307: ('not_proxy', 'register_proxy from a worker stake'),
    308: ('rotation_too_soon', 'a rotation while the retired key is still in its window'),
    309: ('bad_statement', 'a statement with another tag or for another stake contract'),
    310: ('not_conflicting', 'statements for different (kind, context, seqno)'),
    311: ('identical_statements', 'the same statement twice'),
    312: ('bad_signature', 'a signature that does not verify with the operator (or retired) key'),
    313: ('evidence_used', 'evidence that has already slashed this stake'),
    # escrow (escrow.tlb)
    400: ('not_open', 'NEW or OPENING: the channel has no deposit yet'),
    401: ('closed', 'the channel is CLOSED (terminal)'),
    402: ('already_open', '`open` while OPENING, OPEN or CLOSING'),
    403: ('bad_signature', 'a voucher or statement not signed by the payer key'),
    404: ('bad_payee_signature', 'a cooperative close not signed by the payee key'),
    405: ('stale_voucher', 'a voucher not above what was already claimed (and nothing owed)'),
    406: ('nothing_to_claim', 'a newer voucher, but nothing is held (and nothing owed)'),
    407: ('too_early', 'finish before close_at'),
    408: ('nothing_to_finish', 'finish without a pending close or withdrawal'),
    409: ('request_pending', 'a withdrawal or close while one is pending'),
    410: ('amount_too_high', 'a withdrawal above what is held'),
    411: ('deposit_too_low', 'open_refused reason: the amount is below min_escrow_deposit'),
    412: ('params_unavailable', 'open_refused reason: query_params bounced'),
    # reputation (reputation.tlb)
    500: ('stale_report', 'epoch older than now - REPORT_WINDOW (3 days)'),
    501: ('replayed_report', 'epoch not above the last one applied for this proxy'),
    502: ('future_report', 'epoch more than MAX_FUTURE (300 s) ahead of now'),
    503: ('too_many_reporters', '64 proxies with a recent report are already tracked'),
    504: ('counter_overflow', 'a total or decayed value would leave its width'),
    505: ('wrong_worker', 'the report is about another worker'),
    506: ('bad_stats', 'no job at all, or a latency without a succeeded job'),
}

# Which codes each contract's messages can end with: its own, the common ones and, for the
# registry's children that act through it, the registry's.
RANGES = {"registry": (200, 300), "stake": (300, 400), "escrow": (400, 500), "reputation": (500, 600)}
SEEN_BY = {"registry": ("registry",), "stake": ("registry", "stake"), "escrow": ("escrow",),
           "reputation": ("registry", "reputation")}


def names_for(contract: str) -> dict[int, str]:
    """code -> name for the codes ``contract``'s messages can end with (common codes included)."""
    spans = [RANGES[c] for c in SEEN_BY[contract]]
    return {code: name for code, (name, _) in ERRORS.items()
            if code < 200 or any(lo <= code < hi for lo, hi in spans)}


def error_name(code: int, names: Optional[dict[int, str]] = None) -> str:
    """The name of ``code`` ('tvm' for a code no contract throws)."""
    if names is not None:
        return names.get(code, "tvm")
    return ERRORS[code][0] if code in ERRORS else "tvm"


def error_meaning(code: Optional[int]) -> str:
    """What ``code`` means, in the schema's words ('' for a code no contract throws)."""
    return ERRORS[code][1] if code in ERRORS else ""


def describe_error(code: Optional[int], names: Optional[dict[int, str]] = None) -> str:
    """``"405 (stale_voucher)"``: how every error message names an exit code."""
    if code is None:
        return "no exit code"
    return f"{code} ({error_name(code, names)})"


def explain_error(code: Optional[int], names: Optional[dict[int, str]] = None) -> str:
    """``"405 (stale_voucher): a voucher not above what was already claimed (and nothing owed)"``."""
    text = describe_error(code, names)
    known = code is not None and (code in names if names is not None else code in ERRORS)
    return f"{text}: {ERRORS[code][1]}" if known else text

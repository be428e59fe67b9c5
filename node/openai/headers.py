"""The Cocoon headers on a paid request (docs/PROTOCOL.md §4): the one place their names live."""
import re

CHANNEL = "X-Cocoon-Channel"                # the client->proxy escrow address, raw form 0:...
VOUCHER = "X-Cocoon-Voucher"                # AMOUNT:SIGNATURE_HEX, settled total + this request's max cost
REQUEST_ID = "X-Cocoon-Request-Id"          # idempotency key
MAX_COEFFICIENT = "X-Cocoon-Max-Coefficient"  # highest worker coefficient accepted (1000 = 1.0)

ALL = (CHANNEL, VOUCHER, REQUEST_ID, MAX_COEFFICIENT)
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse_voucher(value: str) -> tuple[int, bytes]:
    """``AMOUNT:SIGNATURE_HEX`` -> (amount, 64-byte signature); raises ValueError."""
    amount, sep, sig = (value or "").strip().partition(":")
    if not sep or not amount.isdigit() or len(sig) != 128:
        raise ValueError(f"{VOUCHER} must be AMOUNT:SIGNATURE (128 hex digits)")
    try:
        return int(amount), bytes.fromhex(sig)
    except ValueError:
        raise ValueError(f"{VOUCHER} must be AMOUNT:SIGNATURE (128 hex digits)") from None


def format_voucher(amount: int, signature: bytes) -> str:
    return f"{amount}:{signature.hex()}"


def valid_request_id(value: str) -> bool:
    return bool(value) and bool(REQUEST_ID_RE.match(value))

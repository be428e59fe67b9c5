"""TDX quote parsing, measurements and the image hash.

Parsing goes through ``dcap_qvl.parse_quote`` so that the bytes we hash are exactly
the fields the verifier checked; nothing here re-implements the quote format.
The layout constants below are only used by the simulated TEE to *build* quotes
(see :mod:`node.tee.simulated`) and by tests that cross-check the parser.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import dcap_qvl

# Quote v4 layout (Intel TDX DCAP Quote Generation Library, "Quote Format").
HEADER_LEN = 48
TD_REPORT10_LEN = 584
TDX_TEE_TYPE = 0x81
MEASUREMENT_LEN = 48
REPORT_DATA_LEN = 64

#: Order and names of the measurements that form the image hash (COCOON tdx.cpp).
IMAGE_FIELDS: tuple[str, ...] = (
    "mr_td",
    "mr_config_id",
    "mr_owner",
    "mr_owner_config",
    "rt_mr0",
    "rt_mr1",
    "rt_mr2",
    "rt_mr3",
)

#: Field order and sizes of the TD report body (TDREPORT 1.0) inside a quote.
TD_REPORT10_FIELDS: tuple[tuple[str, int], ...] = (
    ("tee_tcb_svn", 16),
    ("mr_seam", 48),
    ("mr_signer_seam", 48),
    ("seam_attributes", 8),
    ("td_attributes", 8),
    ("xfam", 8),
    ("mr_td", 48),
    ("mr_config_id", 48),
    ("mr_owner", 48),
    ("mr_owner_config", 48),
    ("rt_mr0", 48),
    ("rt_mr1", 48),
    ("rt_mr2", 48),
    ("rt_mr3", 48),
    ("report_data", 64),
)


class QuoteParseError(ValueError):
    """The bytes are not a TDX quote that dcap-qvl can parse."""


@dataclass(frozen=True)
class Measurements:
    """The TD report fields a verifier and an operator care about."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rt_mr0: bytes
    rt_mr1: bytes
    rt_mr2: bytes
    rt_mr3: bytes
    report_data: bytes

    def as_hex(self) -> dict[str, str]:
        """All fields as lowercase hex, in layout order (for printing and JSON)."""
        return {name: getattr(self, name).hex() for name, _ in TD_REPORT10_FIELDS}


@dataclass(frozen=True)
class ParsedQuote:
    """A parsed TDX quote: header facts, measurements and derived hashes."""

    raw: bytes
    version: int
    tee_type: int
    measurements: Measurements
    pck_chain_pem: bytes | None

    @property
    def image_hash(self) -> bytes:
        return image_hash(self.measurements)

    @property
    def report_data(self) -> bytes:
        return self.measurements.report_data

    @property
    def quote_hash(self) -> bytes:
        return quote_hash(self.raw)


def image_hash(m: Measurements) -> bytes:
    """SHA-256 over MRTD..RTMR3 followed by 64 zero bytes, as COCOON computes it.

    The zeroed report data keeps the hash independent of the per-boot key while
    matching COCOON's ``AttestationData::image_hash`` byte for byte.
    """
    h = hashlib.sha256()
    for name in IMAGE_FIELDS:
        value = getattr(m, name)
        if len(value) != MEASUREMENT_LEN:
            raise QuoteParseError(f"{name} has {len(value)} bytes, expected 48")
        h.update(value)
    h.update(bytes(REPORT_DATA_LEN))
    return h.digest()


def quote_hash(raw: bytes) -> bytes:
    """SHA-256 of the raw quote: the key of verdict caches."""
    return hashlib.sha256(raw).digest()


def parse_quote(raw: bytes) -> ParsedQuote:
    """Parse a TDX quote (v4 or v5) with dcap-qvl; raise QuoteParseError otherwise."""
    if not isinstance(raw, (bytes, bytearray)) or len(raw) < HEADER_LEN + TD_REPORT10_LEN:
        raise QuoteParseError("too short to be a TDX quote")
    try:
        q = dcap_qvl.parse_quote(bytes(raw))
    except (ValueError, TypeError) as e:
        raise QuoteParseError(f"dcap-qvl cannot parse the quote: {e}") from None
    if not q.is_tdx():
        raise QuoteParseError(f"not a TDX quote (type {q.quote_type()})")
    report = q.report
    fields = {name: bytes(getattr(report, name)) for name, _ in TD_REPORT10_FIELDS}
    try:
        chain = q.cert_chain_pem_bytes()
    except ValueError:
        chain = None
    return ParsedQuote(
        raw=bytes(raw),
        version=int(q.header.version),
        tee_type=int(q.header.tee_type),
        measurements=Measurements(**fields),
        pck_chain_pem=bytes(chain) if chain else None,
    )

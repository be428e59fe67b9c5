"""RA-TLS certificates: short-lived, self-signed Ed25519, quote and claims inside.

Two private extensions, both **critical**, so that a TLS stack that does not know them
refuses the certificate instead of silently treating it as an ordinary one:

- ``1.3.6.1.4.1.12345.1`` — the raw TDX quote (absent for clients, which are not TEEs)
- ``1.3.6.1.4.1.12345.2`` — the encoded claims (:mod:`node.tee.claims`)

These are COCOON's numbers. Reusing them means a COCOON router and our nodes read each
other's certificates (with version-0 claims, the raw key, the encoding is identical).
The extension value is the raw bytes (the DER extnValue OCTET STRING holds them directly).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

OID_QUOTE = x509.ObjectIdentifier("1.3.6.1.4.1.12345.1")
OID_CLAIMS = x509.ObjectIdentifier("1.3.6.1.4.1.12345.2")
MAX_QUOTE_LEN = 32 * 1024
DEFAULT_LIFETIME = dt.timedelta(days=1)
CLOCK_SKEW = dt.timedelta(minutes=5)


class CertificateError(ValueError):
    """The bytes are not an RA-TLS certificate we can read."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_certificate(
    key: ed25519.Ed25519PrivateKey,
    claims: bytes,
    quote: bytes | None,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_LIFETIME,
    common_name: str = "cocoon ra-tls",
) -> bytes:
    """A DER certificate valid from a little before ``now`` for ``lifetime``."""
    if quote is not None and len(quote) > MAX_QUOTE_LEN:
        raise ValueError("quote too large for a certificate extension")
    now = now or _utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + lifetime)
        .add_extension(x509.UnrecognizedExtension(OID_CLAIMS, claims), critical=True)
    )
    if quote is not None:
        b = b.add_extension(x509.UnrecognizedExtension(OID_QUOTE, quote), critical=True)
    return b.sign(key, None).public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class CertInfo:
    """What an RA-TLS certificate carries, plus the structural problems found in it."""

    der: bytes
    public_key: bytes | None
    not_before: dt.datetime
    not_after: dt.datetime
    quote: bytes | None
    claims: bytes | None
    quote_critical: bool
    claims_critical: bool
    unknown_critical: tuple[str, ...]
    signature_ok: bool
    key_error: str | None


def read_certificate(data: bytes) -> CertInfo:
    """Parse a certificate (DER or PEM) without judging it; raise CertificateError if unreadable."""
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(data)
        )
    except ValueError as e:
        raise CertificateError(f"not an X.509 certificate: {e}") from None
    pub = cert.public_key()
    key_error, raw_key, sig_ok = None, None, False
    if isinstance(pub, ed25519.Ed25519PublicKey):
        raw_key = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        try:
            pub.verify(cert.signature, cert.tbs_certificate_bytes)
            sig_ok = cert.issuer == cert.subject
        except InvalidSignature:
            sig_ok = False
    else:
        key_error = f"key is {type(pub).__name__}, not Ed25519"
    quote = claims = None
    qc = cc = False
    unknown = []
    for ext in cert.extensions:
        if ext.oid == OID_QUOTE:
            quote, qc = bytes(ext.value.value), ext.critical  # type: ignore[attr-defined]
        elif ext.oid == OID_CLAIMS:
            claims, cc = bytes(ext.value.value), ext.critical  # type: ignore[attr-defined]
        elif ext.critical:
            unknown.append(ext.oid.dotted_string)
    return CertInfo(
        der=cert.public_bytes(serialization.Encoding.DER),
        public_key=raw_key,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        quote=quote,
        claims=claims,
        quote_critical=qc,
        claims_critical=cc,
        unknown_critical=tuple(unknown),
        signature_ok=sig_ok,
        key_error=key_error,
    )

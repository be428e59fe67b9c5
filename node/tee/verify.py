"""Attestation verification: dcap-qvl for the quote, then our policy. One check per line.

Checks, in order (each passes, fails with a reason, or is skipped when not applicable):

``quote_format``     the bytes are a TDX quote dcap-qvl can parse
``collateral``       collateral for the quote could be had (file, PCCS or dev bundle)
``quote_signature``  dcap-qvl: quote signature, QE report, PCK chain to the root, CRLs,
                     collateral signatures and validity at the verification time
``tcb_status``       the platform's TCB status is one the configuration accepts
                     (default: ``UpToDate`` only)
``tee_environment``  real Intel root, or the simulated development root *and* a registry
                     with the test flag
``image_hash``       the image hash is in the registry's list for the peer's role
``report_data``      report data == SHA-512(claims)
``claims``           claims decode, and their key is the key the peer proved (certificate)
``model_hash``       if the claims name a model, it is in the registry's model list

dcap-qvl is called with every TCB status allowed, so that a bad signature and an
unaccepted status are reported as different checks; the status policy is applied here.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass, field
import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import claims as claims_mod
from .quote import ParsedQuote, QuoteParseError, parse_quote
from .registry_source import RegistrySnapshot
from .simulated import DevTrust, is_simulated_quote

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
DEFAULT_ACCEPTED_TCB = frozenset({"UpToDate"})
CHECK_NAMES = (
    "quote_format",
    "collateral",
    "quote_signature",
    "tcb_status",
    "tee_environment",
    "image_hash",
    "report_data",
    "claims",
    "model_hash",
)


@dataclass(frozen=True)
class Policy:
    """What a verifier accepts. ``role`` is the role the peer must have."""

    role: str
    accepted_tcb: frozenset[str] = DEFAULT_ACCEPTED_TCB
    dev_trust: DevTrust | None = None
    # Platform properties from the PCK certificate; COCOON (QV_RESULT_OK) does not
    # restrict them, and Intel's own "UpToDate" cloud platforms have all three.
    allow_dynamic_platform: bool = True
    allow_cached_keys: bool = True
    allow_smt: bool = True

    def __post_init__(self) -> None:
        if self.role not in ("worker", "proxy", "client"):
            raise ValueError(f"unknown role {self.role!r}")
        bad = set(self.accepted_tcb) - set(TCB_STATUSES)
        if bad:
            raise ValueError(f"unknown TCB status {sorted(bad)}; known: {', '.join(TCB_STATUSES)}")


@dataclass
class Check:
    name: str
    ok: bool | None  # None = skipped (not applicable)
    detail: str = ""

    @property
    def label(self) -> str:
        return {True: "pass", False: "FAIL", None: "skip"}[self.ok]


@dataclass
class Verdict:
    """The outcome with everything that could be parsed, also when a check failed."""

    checks: list[Check] = field(default_factory=list)
    quote: ParsedQuote | None = None
    tcb_status: str | None = None
    advisory_ids: list[str] = field(default_factory=list)
    claims: claims_mod.Claims | None = None
    simulated: bool = False
    crypto: "QuoteCrypto | None" = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok is not False for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if c.ok is False]

    @property
    def image_hash(self) -> bytes | None:
        return self.quote.image_hash if self.quote else None

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def reason(self) -> str:
        """One line naming every failed check and why."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if c.ok is False) or "ok"

    def to_dict(self) -> dict[str, object]:
        q = self.quote
        return {
            "ok": self.ok,
            "simulated": self.simulated,
            "quote_version": q.version if q else None,
            "measurements": q.measurements.as_hex() if q else None,
            "image_hash": q.image_hash.hex() if q else None,
            "quote_hash": q.quote_hash.hex() if q else None,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "claims": self.claims.as_dict() if self.claims else None,
            "checks": [{"name": c.name, "result": c.label, "detail": c.detail} for c in self.checks],
            "failed": self.failed,
        }


def chain_root_der(q: ParsedQuote) -> bytes | None:
    """DER of the last certificate in the quote's PCK chain (the root it claims)."""
    if not q.pck_chain_pem:
        return None
    try:
        certs = x509.load_pem_x509_certificates(q.pck_chain_pem.rstrip(b"\0"))
    except ValueError:
        return None
    return certs[-1].public_bytes(serialization.Encoding.DER) if certs else None


def uses_dev_root(raw: bytes, policy: Policy) -> bool:
    """True if the quote's chain ends in the policy's development root (simulated TEE)."""
    if policy.dev_trust is None:
        return False
    try:
        return chain_root_der(parse_quote(raw)) == policy.dev_trust.root_der
    except QuoteParseError:
        return False


def _dcap_policy(now: int, p: Policy) -> dcap_qvl.QuotePolicy:
    pol = dcap_qvl.QuotePolicy.strict(now)
    for s in TCB_STATUSES:
        pol = pol.allow_status(s)
    return (
        pol.allow_dynamic_platform(p.allow_dynamic_platform)
        .allow_cached_keys(p.allow_cached_keys)
        .allow_smt(p.allow_smt)
    )


@dataclass(frozen=True)
class QuoteCrypto:
    """The dcap-qvl part of a verdict; depends only on the quote, roots and collateral."""

    quote_hash: bytes
    collateral: Check
    signature: Check
    tcb_status: str | None
    tcb_detail: str
    advisory_ids: tuple[str, ...]
    collateral_next_update: float | None

    @property
    def cacheable(self) -> bool:
        return self.collateral.ok is True


def quote_crypto(
    q: ParsedQuote,
    policy: Policy,
    collateral: dcap_qvl.QuoteCollateralV3 | None,
    collateral_error: str | None,
    now: int,
    use_dev: bool,
) -> QuoteCrypto:
    """Run dcap-qvl once: signature, QE report, PCK chain, CRLs, collateral validity, TCB."""
    if collateral is None:
        return QuoteCrypto(
            q.quote_hash,
            Check("collateral", False, collateral_error or "no collateral given (use a file or a PCCS URL)"),
            Check("quote_signature", False, "cannot verify without collateral"),
            None,
            "unknown without collateral",
            (),
            None,
        )
    from .collateral import next_update

    try:
        nu: float | None = next_update(collateral)
    except (KeyError, ValueError):
        nu = None
    coll = Check("collateral", True, "simulated development bundle" if use_dev else "provided")
    verifier = dcap_qvl.QuoteVerifier(policy.dev_trust.root_der) if use_dev else dcap_qvl.QuoteVerifier()  # type: ignore[union-attr]
    try:
        res = json.loads(verifier.verify_with_policy(q.raw, collateral, now, _dcap_policy(now, policy)).to_json())
    except (ValueError, RuntimeError) as e:
        msg = str(e)
        if is_simulated_quote(q.raw) and not use_dev:
            msg += " (this is a SIMULATED quote: it verifies only against a development trust bundle)"
        if "No matching TCB level" in msg:
            # dcap-qvl evaluates TCB levels last; the platform is older than every level
            # the collateral lists: a TCB-status failure, not a signature one.
            return QuoteCrypto(
                q.quote_hash, coll,
                Check("quote_signature", None, "not reported: dcap-qvl stopped at the TCB evaluation"),
                "OutOfDate (below every listed TCB level)",
                f"platform TCB is below every level in the TCB info: {msg}",
                (), nu,
            )
        return QuoteCrypto(q.quote_hash, coll, Check("quote_signature", False, msg), None,
                           "unknown: quote did not verify", (), nu)
    tcb = res.get("tcb", {})
    root = "the simulated development root" if use_dev else "Intel's SGX root CA"
    return QuoteCrypto(
        q.quote_hash,
        coll,
        Check("quote_signature", True, f"signature, QE report and PCK chain to {root}; collateral valid at {now}"),
        str(tcb.get("status")),
        "",
        tuple(str(a) for a in tcb.get("advisory_ids", [])),
        nu,
    )


def _tcb_check(c: QuoteCrypto, policy: Policy) -> Check:
    if c.tcb_status is None:
        return Check("tcb_status", False, c.tcb_detail)
    if c.tcb_status not in TCB_STATUSES:
        return Check("tcb_status", False, c.tcb_detail or f"unrecognised TCB status {c.tcb_status!r}")
    if c.tcb_status in policy.accepted_tcb:
        adv = f" (advisories: {', '.join(c.advisory_ids)})" if c.advisory_ids else ""
        return Check("tcb_status", True, c.tcb_status + adv)
    return Check("tcb_status", False, f"{c.tcb_status} is not accepted (accepted: {', '.join(sorted(policy.accepted_tcb))})")


def verify_quote(
    raw_quote: bytes,
    *,
    policy: Policy,
    snapshot: RegistrySnapshot | None,
    collateral: dcap_qvl.QuoteCollateralV3 | None = None,
    collateral_error: str | None = None,
    now: int | float | None = None,
    claims_bytes: bytes | None = None,
    expected_public_key: bytes | None = None,
    crypto: "QuoteCrypto | None" = None,
) -> Verdict:
    """Run every check and return a Verdict; never raises for a bad quote.

    ``snapshot`` None means "no registry given": the registry checks then fail, except in
    the CLI where the caller passes an explicit allow-list snapshot. ``claims_bytes`` None
    skips the report-data and claims checks (a bare quote file has no claims).
    ``crypto`` is a cached dcap-qvl outcome for this very quote (see VerdictCache).
    """
    now_i = int(time.time() if now is None else now)
    v = Verdict()
    add = v.checks.append

    try:
        v.quote = parse_quote(raw_quote)
        add(Check("quote_format", True, f"TDX quote v{v.quote.version}"))
    except QuoteParseError as e:
        add(Check("quote_format", False, str(e)))
        for name in CHECK_NAMES[1:]:
            add(Check(name, False, "no parsable quote"))
        return v
    q = v.quote

    dev = policy.dev_trust
    use_dev = dev is not None and chain_root_der(q) == dev.root_der
    v.simulated = use_dev or is_simulated_quote(q.raw)
    if crypto is None or crypto.quote_hash != q.quote_hash:
        if use_dev and collateral is None:
            collateral, collateral_error = dev.collateral(), None  # type: ignore[union-attr]
        crypto = quote_crypto(q, policy, collateral, collateral_error, now_i, use_dev)
    v.crypto = crypto
    v.tcb_status, v.advisory_ids = crypto.tcb_status, list(crypto.advisory_ids)
    add(crypto.collateral)
    add(crypto.signature)
    add(_tcb_check(crypto, policy))

    # tee_environment
    if not v.simulated:
        add(Check("tee_environment", True, "Intel TDX (not the simulated TEE)"))
    elif snapshot is None or not snapshot.is_test:
        add(Check("tee_environment", False, "SIMULATED TEE quote, but the registry parameters have no test flag"))
    elif not use_dev:
        add(Check("tee_environment", False, "SIMULATED TEE quote, and no development trust bundle is configured"))
    else:
        add(Check("tee_environment", True, "SIMULATED TEE (development root; registry has the test flag)"))

    # image hash
    if policy.role == "client":
        add(Check("image_hash", None, "clients are not attested by image"))
    elif snapshot is None:
        add(Check("image_hash", False, "no registry snapshot or allow-list given"))
    elif q.image_hash in snapshot.images_for(policy.role):
        add(Check("image_hash", True, f"{q.image_hash.hex()} allowed for {policy.role} (registry v{snapshot.version})"))
    else:
        add(Check("image_hash", False, f"{q.image_hash.hex()} is not an allowed {policy.role} image (registry v{snapshot.version})"))

    # report data and claims
    if claims_bytes is None:
        add(Check("report_data", None, "no claims given"))
        add(Check("claims", None, "no claims given"))
        add(Check("model_hash", None, "no claims given"))
        return v
    expected = claims_mod.report_data(claims_bytes)
    if hmac.compare_digest(expected, q.report_data):
        add(Check("report_data", True, "SHA-512(claims)"))
    else:
        add(Check("report_data", False, "report data is not SHA-512 of the claims"))
    try:
        v.claims = claims_mod.decode(claims_bytes)
    except claims_mod.ClaimsError as e:
        add(Check("claims", False, str(e)))
        add(Check("model_hash", False, "claims unreadable"))
        return v
    if expected_public_key is not None and not hmac.compare_digest(v.claims.public_key, expected_public_key):
        add(Check("claims", False, "claims key differs from the certificate key"))
    elif v.claims.role is not None and v.claims.role != policy.role:
        add(Check("claims", False, f"peer claims role {v.claims.role}, expected {policy.role}"))
    else:
        add(Check("claims", True, f"v{v.claims.version}, key {v.claims.public_key.hex()[:16]}…"))
    add(_model_check(v.claims, snapshot))
    return v


def _model_check(c: claims_mod.Claims, snapshot: RegistrySnapshot | None) -> Check:
    if c.model_hash is None:
        return Check("model_hash", None, "claims name no model")
    if snapshot is None:
        return Check("model_hash", False, "no registry snapshot to check the model against")
    if c.model_hash in snapshot.model_hashes:
        return Check("model_hash", True, f"{c.model_hash.hex()} allowed")
    return Check("model_hash", False, f"model {c.model_hash.hex()} is not in the registry")


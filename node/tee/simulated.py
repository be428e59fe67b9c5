"""A simulated TDX TEE for development, with its own development root of trust.

Everything produced here is labelled SIMULATED: certificate names, the quote header's
user data and the trust bundle. It exists so that the whole network (RA-TLS, registry
checks, the CLI) can run on machines without TDX, while verifiers accept it only when
the registry's parameters carry the test flag (see :mod:`node.tee.verify`).

The quotes are in the real TDX v4 layout and are signed exactly like Intel's:
a development root CA issues a "PCK platform CA", which issues a PCK certificate that
carries Intel's SGX extension (FMSPC, CPU SVN, PCE SVN); the PCK key signs a
quoting-enclave report whose report data binds the per-instance ECDSA attestation key,
and that key signs header + TD report. The development root also signs TCB info, QE
identity and CRLs, so the collateral has the same form as Intel's. Verification then goes
through the *same* dcap-qvl code path as real quotes, with ``dcap_qvl.QuoteVerifier``
given the development root instead of Intel's (nothing is checked by hand).

Files:
- the *development root directory* (private keys; only simulated TEEs need it),
- the *trust bundle* JSON (public: root certificate and collateral; verifiers need it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from . import der
from .quote import HEADER_LEN, TD_REPORT10_FIELDS, TDX_TEE_TYPE

LABEL = "SIMULATED TDX - DEVELOPMENT ONLY - NOT INTEL"
#: 20 bytes of quote-header user data that mark every simulated quote.
QUOTE_USER_DATA = b"COCOON-SIMULATED-TDX"
BUNDLE_KIND = "cocoon-simulated-tdx-trust-bundle"

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
DEV_FMSPC = bytes.fromhex("00DE00000000")  # not a real platform family
DEV_PCE_ID = b"\x00\x00"
DEV_CPU_SVN = bytes([2] * 8 + [0] * 8)
DEV_PCE_SVN = 11
DEV_TEE_TCB_SVN = bytes([3, 1, 2] + [0] * 13)  # TDX module SVN 3, major 1
DEV_QE_MRSIGNER = hashlib.sha256(b"cocoon simulated quoting enclave signer").digest()
DEV_QE_MRENCLAVE = hashlib.sha256(b"cocoon simulated quoting enclave").digest()
DEV_QE_ISVPRODID = 2
DEV_QE_ISVSVN = 4
DEV_QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
# TD attributes with SEPT_VE_DISABLE set and debug off, as dcap-qvl requires.
DEV_TD_ATTRIBUTES = bytes.fromhex("0000001000000000")
DEV_XFAM = bytes.fromhex("e702060000000000")

_TS = "%Y-%m-%dT%H:%M:%SZ"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, LABEL),
        ]
    )


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256/SHA-256 signature as 64 raw bytes (r || s), Intel's wire form."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _sgx_extension() -> bytes:
    """Intel's SGX extension (processor-CA form) for the simulated PCK certificate."""
    base = SGX_EXTENSION_OID
    comps = [
        der.seq(der.oid(f"{base}.2.{i + 1}"), der.integer(DEV_CPU_SVN[i])) for i in range(16)
    ]
    comps.append(der.seq(der.oid(f"{base}.2.17"), der.integer(DEV_PCE_SVN)))
    comps.append(der.seq(der.oid(f"{base}.2.18"), der.octets(DEV_CPU_SVN)))
    return der.seq(
        der.seq(der.oid(f"{base}.1"), der.octets(hashlib.sha256(b"simulated ppid").digest()[:16])),
        der.seq(der.oid(f"{base}.2"), der.seq(*comps)),
        der.seq(der.oid(f"{base}.3"), der.octets(DEV_PCE_ID)),
        der.seq(der.oid(f"{base}.4"), der.octets(DEV_FMSPC)),
        der.seq(der.oid(f"{base}.5"), der.enumerated(0)),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    path_len: int | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    extra: list[x509.ExtensionType] | None = None,
) -> x509.Certificate:
    issuer_name = issuer_cert.subject if issuer_cert else _name(subject)
    issuer_pub = issuer_cert.public_key() if issuer_cert else key.public_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len if ca else None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), False)
    )
    for ext in extra or []:
        b = b.add_extension(ext, False)
    return b.sign(issuer_key, hashes.SHA256())


def _crl(
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    until: dt.datetime,
) -> bytes:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(now)
        .next_update(until)
        .add_extension(x509.CRLNumber(1), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _tcb_info(issue: dt.datetime, until: dt.datetime) -> str:
    sgx = [{"svn": int(s)} for s in DEV_CPU_SVN]
    tdx = [{"svn": int(s)} for s in DEV_TEE_TCB_SVN]
    zero48 = "00" * 48
    info = {
        "id": "TDX",
        "version": 3,
        "issueDate": issue.strftime(_TS),
        "nextUpdate": until.strftime(_TS),
        "fmspc": DEV_FMSPC.hex().upper(),
        "pceId": DEV_PCE_ID.hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 1,
        "tdxModule": {"mrsigner": zero48, "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF"},
        "tdxModuleIdentities": [
            {
                "id": f"TDX_{DEV_TEE_TCB_SVN[1]:02X}",
                "mrsigner": zero48,
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
                "tcbLevels": [
                    {"tcb": {"isvsvn": DEV_TEE_TCB_SVN[0]}, "tcbDate": issue.strftime(_TS), "tcbStatus": "UpToDate"}
                ],
            }
        ],
        "tcbLevels": [
            {
                "tcb": {"sgxtcbcomponents": sgx, "pcesvn": DEV_PCE_SVN, "tdxtcbcomponents": tdx},
                "tcbDate": issue.strftime(_TS),
                "tcbStatus": "UpToDate",
            }
        ],
    }
    return json.dumps(info, separators=(",", ":"))


def _qe_identity(issue: dt.datetime, until: dt.datetime) -> str:
    ident = {
        "id": "TD_QE",
        "version": 2,
        "issueDate": issue.strftime(_TS),
        "nextUpdate": until.strftime(_TS),
        "tcbEvaluationDataNumber": 1,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": DEV_QE_ATTRIBUTES.hex().upper(),
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": DEV_QE_MRSIGNER.hex().upper(),
        "isvprodid": DEV_QE_ISVPRODID,
        "tcbLevels": [
            {"tcb": {"isvsvn": DEV_QE_ISVSVN}, "tcbDate": issue.strftime(_TS), "tcbStatus": "UpToDate"}
        ],
    }
    return json.dumps(ident, separators=(",", ":"))


@dataclass(frozen=True)
class DevTrust:
    """Public half of a development root: what a verifier needs to accept simulated quotes."""

    root_der: bytes
    collateral_json: str

    @property
    def root_cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.root_der)

    def collateral(self) -> dcap_qvl.QuoteCollateralV3:
        return dcap_qvl.QuoteCollateralV3.from_json(self.collateral_json)

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": BUNDLE_KIND,
                "label": LABEL,
                "root_ca_pem": self.root_cert.public_bytes(serialization.Encoding.PEM).decode(),
                "collateral": json.loads(self.collateral_json),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> "DevTrust":
        try:
            d = json.loads(text)
            if d.get("kind") != BUNDLE_KIND:
                raise ValueError(f"not a {BUNDLE_KIND} file")
            root = x509.load_pem_x509_certificate(d["root_ca_pem"].encode())
            coll = json.dumps(d["collateral"])
            dcap_qvl.QuoteCollateralV3.from_json(coll)
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"malformed development trust bundle: {e}") from None
        return cls(root.public_bytes(serialization.Encoding.DER), coll)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DevTrust":
        return cls.from_json(Path(path).read_text())


@dataclass
class DevRoot:
    """A development root of trust with every key needed to sign simulated quotes."""

    root_key: ec.EllipticCurvePrivateKey
    root_cert: x509.Certificate
    pck_ca_key: ec.EllipticCurvePrivateKey
    pck_ca_cert: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    pck_cert: x509.Certificate
    collateral_json: str

    @classmethod
    def generate(
        cls, *, now: dt.datetime | None = None, collateral_days: int = 365
    ) -> "DevRoot":
        now = now or _now()
        start = now - dt.timedelta(days=1)
        end = now + dt.timedelta(days=max(collateral_days, 1) + 1)
        k = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
        root_key, pck_ca_key, pck_key, tcb_key = k(), k(), k(), k()
        root = _cert("Simulated TDX Root CA", root_key, None, root_key, ca=True, path_len=1,
                     not_before=start, not_after=end)
        pck_ca = _cert("Simulated TDX PCK Platform CA", pck_ca_key, root, root_key, ca=True,
                       path_len=0, not_before=start, not_after=end)
        sgx_ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), _sgx_extension())
        pck = _cert("Simulated TDX PCK Certificate", pck_key, pck_ca, pck_ca_key, ca=False,
                    path_len=None, not_before=start, not_after=end, extra=[sgx_ext])
        tcb = _cert("Simulated TDX TCB Signing", tcb_key, root, root_key, ca=False,
                    path_len=None, not_before=start, not_after=end)
        until = now + dt.timedelta(days=collateral_days)
        tcb_info = _tcb_info(start, until)
        qe_id = _qe_identity(start, until)
        collateral = {
            "pck_crl_issuer_chain": _pem(pck_ca, root),
            "root_ca_crl": _crl(root, root_key, start, end).hex(),
            "pck_crl": _crl(pck_ca, pck_ca_key, start, end).hex(),
            "tcb_info_issuer_chain": _pem(tcb, root),
            "tcb_info": tcb_info,
            "tcb_info_signature": _raw_sig(tcb_key, tcb_info.encode()).hex(),
            "qe_identity_issuer_chain": _pem(tcb, root),
            "qe_identity": qe_id,
            "qe_identity_signature": _raw_sig(tcb_key, qe_id.encode()).hex(),
        }
        return cls(root_key, root, pck_ca_key, pck_ca, pck_key, pck, json.dumps(collateral))

    def trust(self) -> DevTrust:
        return DevTrust(self.root_cert.public_bytes(serialization.Encoding.DER), self.collateral_json)

    # -- persistence -----------------------------------------------------------------
    _KEYS = ("root_key", "pck_ca_key", "pck_key")
    _CERTS = ("root_cert", "pck_ca_cert", "pck_cert")

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write keys (0600), certificates, collateral and the public trust bundle."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "LABEL").write_text(LABEL + "\n")
        for name in self._KEYS:
            p = d / f"{name}.pem"
            p.write_bytes(
                getattr(self, name).private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            p.chmod(0o600)
        for name in self._CERTS:
            (d / f"{name}.pem").write_bytes(getattr(self, name).public_bytes(serialization.Encoding.PEM))
        (d / "collateral.json").write_text(self.collateral_json)
        (d / "trust.json").write_text(self.trust().to_json())
        return d / "trust.json"

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "DevRoot":
        d = Path(directory)
        try:
            keys = {
                n: serialization.load_pem_private_key((d / f"{n}.pem").read_bytes(), None)
                for n in cls._KEYS
            }
            certs = {
                n: x509.load_pem_x509_certificate((d / f"{n}.pem").read_bytes()) for n in cls._CERTS
            }
            coll = (d / "collateral.json").read_text()
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load development root from {d}: {e}") from None
        return cls(collateral_json=coll, **keys, **certs)  # type: ignore[arg-type]


def default_measurements(name: str = "dev") -> dict[str, bytes]:
    """Deterministic, obviously-fake measurements derived from an image name."""
    out = {}
    for f in ("mr_td", "mr_config_id", "mr_owner", "mr_owner_config", "rt_mr0", "rt_mr1", "rt_mr2", "rt_mr3"):
        out[f] = hashlib.sha384(f"simulated:{name}:{f}".encode()).digest()
    return out


def load_measurements(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read measurements from a JSON file ``{"mr_td": "<96 hex>", ...}``.

    Missing image fields default to those of :func:`default_measurements` with the file's
    ``"name"`` (so a config may just name an image); unknown keys are an error.
    """
    d = json.loads(Path(path).read_text())
    base = default_measurements(str(d.pop("name", "dev")))
    for k, v in d.items():
        if k not in base:
            raise ValueError(f"unknown measurement {k!r} in {path}")
        raw = bytes.fromhex(v)
        if len(raw) != 48:
            raise ValueError(f"{k} must be 48 bytes (96 hex digits)")
        base[k] = raw
    return base


@dataclass
class SimulatedTdx:
    """Produces simulated TDX v4 quotes with fixed measurements, signed via a DevRoot."""

    dev_root: DevRoot
    measurements: dict[str, bytes] = field(default_factory=default_measurements)
    attestation_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def _header(self) -> bytes:
        return struct.pack("<HHIHH", 4, 2, TDX_TEE_TYPE, 0, 0) + INTEL_QE_VENDOR_ID + QUOTE_USER_DATA

    def _body(self, report_data: bytes) -> bytes:
        fixed = {
            "tee_tcb_svn": DEV_TEE_TCB_SVN,
            "mr_seam": hashlib.sha384(b"simulated tdx module").digest(),
            "mr_signer_seam": bytes(48),
            "seam_attributes": bytes(8),
            "td_attributes": DEV_TD_ATTRIBUTES,
            "xfam": DEV_XFAM,
            "report_data": report_data,
            **self.measurements,
        }
        out = b"".join(fixed[name] for name, _ in TD_REPORT10_FIELDS)
        assert len(out) == 584
        return out

    def _qe_report(self, att_pub: bytes, auth: bytes) -> bytes:
        rd = hashlib.sha256(att_pub + auth).digest() + bytes(32)
        return (
            DEV_CPU_SVN  # cpu_svn
            + struct.pack("<I", 0)  # misc_select
            + bytes(28)
            + DEV_QE_ATTRIBUTES
            + DEV_QE_MRENCLAVE
            + bytes(32)
            + DEV_QE_MRSIGNER
            + bytes(96)
            + struct.pack("<HH", DEV_QE_ISVPRODID, DEV_QE_ISVSVN)
            + bytes(60)
            + rd
        )

    def quote(self, report_data: bytes) -> bytes:
        """A quote over ``report_data`` (exactly 64 bytes) in the real TDX v4 layout."""
        if len(report_data) != 64:
            raise ValueError("report data must be exactly 64 bytes")
        signed = self._header() + self._body(report_data)
        assert len(signed) == HEADER_LEN + 584
        att_pub = self.attestation_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )[1:]
        auth = hashlib.sha256(b"simulated qe auth data").digest()
        qe_report = self._qe_report(att_pub, auth)
        chain = _pem(self.dev_root.pck_cert, self.dev_root.pck_ca_cert, self.dev_root.root_cert).encode()
        qe_cert_data = (
            qe_report
            + _raw_sig(self.dev_root.pck_key, qe_report)
            + struct.pack("<H", len(auth))
            + auth
            + struct.pack("<HI", 5, len(chain))
            + chain
        )
        sig_data = (
            _raw_sig(self.attestation_key, signed)
            + att_pub
            + struct.pack("<HI", 6, len(qe_cert_data))
            + qe_cert_data
        )
        return signed + struct.pack("<I", len(sig_data)) + sig_data


def is_simulated_quote(raw: bytes) -> bool:
    """True when the header carries the simulated marker (a hint; trust decides, not this)."""
    return raw[28:48] == QUOTE_USER_DATA

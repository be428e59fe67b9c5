"""Claims: what a TEE states about itself, bound into the quote's report data.

``report_data = SHA-512(encode(claims))`` — 64 bytes, exactly the TDX report-data size.

Encodings (versioned, chosen so a plain COCOON peer interoperates):

- **version 0** — the raw 32-byte Ed25519 public key, nothing else. This is what COCOON
  puts in its certificates, so our verifier accepts COCOON's and vice versa.
- **version 1** — ``0x01`` then fields as ``tag:u8 len:u16be value``, tags strictly
  increasing, each at most once: 1 = public key (32 bytes, required), 2 = role (ASCII),
  3 = model hash (32 bytes), 4 = operator address (UTF-8 text). Unknown tags are an error: a new
  field means a new version byte, so an old verifier never silently ignores a statement.

:func:`encode` picks version 0 when only the key is present.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

ROLES = ("worker", "proxy", "client")
_TAG_KEY, _TAG_ROLE, _TAG_MODEL, _TAG_OPERATOR = 1, 2, 3, 4
MAX_CLAIMS_LEN = 4096


class ClaimsError(ValueError):
    """Claims bytes that do not decode under any known version."""


@dataclass(frozen=True)
class Claims:
    public_key: bytes
    role: str | None = None
    model_hash: bytes | None = None
    operator: str | None = None

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise ClaimsError("public key must be 32 bytes (Ed25519)")
        if self.role is not None and self.role not in ROLES:
            raise ClaimsError(f"unknown role {self.role!r}")
        if self.model_hash is not None and len(self.model_hash) != 32:
            raise ClaimsError("model hash must be 32 bytes")

    @property
    def version(self) -> int:
        return 0 if (self.role, self.model_hash, self.operator) == (None, None, None) else 1

    def encode(self) -> bytes:
        return encode(self)

    def report_data(self) -> bytes:
        return report_data(self.encode())

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "public_key": self.public_key.hex(),
            "role": self.role,
            "model_hash": self.model_hash.hex() if self.model_hash else None,
            "operator": self.operator,
        }


def encode(c: Claims) -> bytes:
    if c.version == 0:
        return bytes(c.public_key)
    fields = [(_TAG_KEY, c.public_key)]
    if c.role is not None:
        fields.append((_TAG_ROLE, c.role.encode("ascii")))
    if c.model_hash is not None:
        fields.append((_TAG_MODEL, c.model_hash))
    if c.operator is not None:
        fields.append((_TAG_OPERATOR, c.operator.encode("utf-8")))
    return b"\x01" + b"".join(struct.pack(">BH", t, len(v)) + v for t, v in fields)


def decode(data: bytes) -> Claims:
    if len(data) > MAX_CLAIMS_LEN:
        raise ClaimsError("claims too long")
    if len(data) == 32:
        return Claims(public_key=bytes(data))
    if not data or data[0] != 1:
        raise ClaimsError(f"unknown claims version (first byte {data[:1].hex() or 'none'})")
    pos, last, vals = 1, 0, {}
    while pos < len(data):
        if pos + 3 > len(data):
            raise ClaimsError("truncated claims field header")
        tag, n = struct.unpack_from(">BH", data, pos)
        pos += 3
        if tag <= last:
            raise ClaimsError("claims fields out of order or repeated")
        if tag not in (_TAG_KEY, _TAG_ROLE, _TAG_MODEL, _TAG_OPERATOR):
            raise ClaimsError(f"unknown claims field {tag}")
        if pos + n > len(data):
            raise ClaimsError("truncated claims field")
        vals[tag], pos, last = bytes(data[pos : pos + n]), pos + n, tag
    if _TAG_KEY not in vals:
        raise ClaimsError("claims carry no public key")
    try:
        role = vals[_TAG_ROLE].decode("ascii") if _TAG_ROLE in vals else None
        op = vals[_TAG_OPERATOR].decode("utf-8") if _TAG_OPERATOR in vals else None
    except UnicodeDecodeError:
        raise ClaimsError("claims text field is not valid text") from None
    c = Claims(vals[_TAG_KEY], role, vals.get(_TAG_MODEL), op)
    if c.version == 0:
        raise ClaimsError("version 1 claims with only a key must be encoded as version 0")
    return c


def report_data(claims_bytes: bytes) -> bytes:
    """The 64 bytes a quote must carry to vouch for these claims."""
    return hashlib.sha512(claims_bytes).digest()

"""Just enough DER encoding to write Intel's SGX extension in simulated PCK certificates.

``cryptography`` has no builder for that private extension, and dcap-qvl reads it from
the PCK leaf, so the simulated TEE must encode it in the exact ASN.1 shape Intel uses.
"""

from __future__ import annotations


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _len(len(value)) + value


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out.extend(reversed(chunk))
    return tlv(0x06, bytes(out))


def integer(v: int) -> bytes:
    body = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True)
    return tlv(0x02, body)


def enumerated(v: int) -> bytes:
    return tlv(0x0A, integer(v)[2:])


def octets(b: bytes) -> bytes:
    return tlv(0x04, b)


def boolean(b: bool) -> bytes:
    return tlv(0x01, b"\xff" if b else b"\x00")


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))

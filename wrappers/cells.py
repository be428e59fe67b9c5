"""Representation hashes of small ordinary cells computed from their bits, without building pytoniq
``Cell`` objects (the hot path of every voucher and receipt signature).

An ordinary cell of ``n`` ≤ 1023 data bits and references r1..rk hashes as
``sha256(d1 ‖ d2 ‖ data padded ‖ depth(r1..rk) ‖ hash(r1..rk))`` with ``d1 = k``,
``d2 = floor(n/8) + ceil(n/8)``, the data completed by a 1 bit and zeros to whole bytes when ``n``
is not a multiple of 8, each depth as 2 bytes (tests/payments/test_cells.py checks this against pytoniq).
The layouts themselves stay with their contracts (e.g. :func:`wrappers.escrow.statement_bits`).
"""
from __future__ import annotations

import hashlib

from pytoniq_core import Address


def _repr(value: int, nbits: int, nrefs: int) -> bytes:
    """d1 ‖ d2 ‖ the data completed to whole bytes: how a cell starts in its hash and in a BoC."""
    if not 0 <= nbits <= 1023 or value >> nbits or nrefs > 4:
        raise ValueError("an ordinary cell holds at most 1023 bits and 4 references")
    whole, rem = divmod(nbits, 8)
    size = whole + (1 if rem else 0)
    if rem:
        pad = 8 - rem
        value = (value << pad) | (1 << (pad - 1))
    return bytes((nrefs, whole + size)) + value.to_bytes(size, "big")


def ordinary_hash(value: int, nbits: int, refs: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """Hash of the ordinary cell whose data is ``value`` as ``nbits`` bits (big-endian) and whose
    references are ``(depth, hash)`` pairs."""
    out = _repr(value, nbits, len(refs))
    out += b"".join(d.to_bytes(2, "big") for d, _ in refs) + b"".join(h for _, h in refs)
    return hashlib.sha256(out).digest()


def chain_boc(cells: list[tuple[int, int]]) -> bytes:
    """The BoC (no index, no CRC, one root) of a chain of ordinary cells given as (value, nbits),
    root first, each referring to the next: byte for byte what pytoniq's ``to_boc()`` writes."""
    n = len(cells)
    if not 0 < n < 256:
        raise ValueError("a chain of 1 to 255 cells")
    payload = b"".join(_repr(v, b, 1 if i + 1 < n else 0) + (bytes((i + 1,)) if i + 1 < n else b"")
                       for i, (v, b) in enumerate(cells))
    size = (len(payload).bit_length() + 7) // 8
    return (b"\xb5\xee\x9c\x72" + bytes((1, size, n, 1, 0)) + len(payload).to_bytes(size, "big") + b"\x00"
            + payload)


def depth(refs: tuple[tuple[int, bytes], ...]) -> int:
    """The depth of a cell with these ``(depth, hash)`` references."""
    return 1 + max(d for d, _ in refs) if refs else 0


def push_uint(acc: tuple[int, int], value: int, bits: int) -> tuple[int, int]:
    """Append ``value`` as ``bits`` unsigned bits to ``acc`` = (value, nbits)."""
    if value < 0 or value >> bits:
        raise ValueError(f"{value} does not fit in {bits} unsigned bits")
    return (acc[0] << bits) | value, acc[1] + bits


def push_address(acc: tuple[int, int], a: Address) -> tuple[int, int]:
    """Append a MsgAddressInt (addr_std$10, no anycast): 267 bits."""
    v = (0b100 << 8 | (a.wc & 0xFF)) << 256 | int.from_bytes(a.hash_part, "big")
    return (acc[0] << 267) | v, acc[1] + 267


def push_coins(acc: tuple[int, int], amount: int) -> tuple[int, int]:
    """Append Coins (VarUInteger 16): 4 bits of length in bytes, then the bytes."""
    if amount < 0 or amount >> 120:
        raise ValueError("coins are between 0 and 2^120 - 1")
    n = (amount.bit_length() + 7) // 8
    return (acc[0] << (4 + 8 * n)) | (n << (8 * n)) | amount, acc[1] + 4 + 8 * n

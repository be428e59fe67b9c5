"""Quote parsing and the image hash, cross-checked against raw byte offsets."""

from __future__ import annotations

import hashlib
import struct

import pytest

from node.tee.quote import (
    HEADER_LEN,
    IMAGE_FIELDS,
    TD_REPORT10_FIELDS,
    QuoteParseError,
    image_hash,
    parse_quote,
)

# Offsets written out by hand from Intel's TDX quote v4 layout (not from node.tee.quote).
OFFSETS = {
    "mr_td": 48 + 136,
    "mr_config_id": 48 + 184,
    "mr_owner": 48 + 232,
    "mr_owner_config": 48 + 280,
    "rt_mr0": 48 + 328,
    "rt_mr1": 48 + 376,
    "rt_mr2": 48 + 424,
    "rt_mr3": 48 + 472,
}


def independent_image_hash(raw: bytes) -> bytes:
    body = b"".join(raw[OFFSETS[n] : OFFSETS[n] + 48] for n in IMAGE_FIELDS)
    assert len(body) == 384
    return hashlib.sha256(body + bytes(64)).digest()


@pytest.mark.parametrize("name", ["tdx_quote", "cocoon_quote.dat"])
def test_image_hash_matches_independent_computation(tdx_dir, name):
    raw = (tdx_dir / name).read_bytes()
    q = parse_quote(raw)
    assert q.version == 4 and q.tee_type == 0x81
    assert q.image_hash == independent_image_hash(raw)
    # report data sits right after RTMR3 in a v4 quote
    assert q.report_data == raw[48 + 520 : 48 + 584]
    assert q.measurements.mr_td == raw[OFFSETS["mr_td"] : OFFSETS["mr_td"] + 48]


def test_known_image_hash_of_intel_fixture(intel_quote):
    # computed once with the command `sha256(mrtd..rtmr3 || 0^64)` over the fixture's fields
    assert parse_quote(intel_quote).image_hash.hex() == (
        "b260fa9168ca9f28e7f15f128a45ac31c419705b31a60feac30b322ee06bc752"
    )


def test_v5_quote_parses_with_measurements(tdx_dir):
    q = parse_quote((tdx_dir / "tdx_quote_outdated").read_bytes())
    assert q.version == 5
    assert len(q.image_hash) == 32 and q.measurements.mr_td != bytes(48)


def test_image_hash_depends_on_every_field_and_ignores_report_data(intel_quote):
    m = parse_quote(intel_quote).measurements
    base = image_hash(m)
    from dataclasses import replace

    for name in IMAGE_FIELDS:
        changed = replace(m, **{name: bytes(48)}) if getattr(m, name) != bytes(48) else replace(m, **{name: b"\x01" * 48})
        assert image_hash(changed) != base, name
    assert image_hash(replace(m, report_data=b"\x55" * 64)) == base


def test_layout_table_adds_up():
    assert sum(n for _, n in TD_REPORT10_FIELDS) == 584
    assert HEADER_LEN == 48


@pytest.mark.parametrize("raw", [b"", b"\x04\x00" + bytes(100), bytes(5000), b"\xff" * 700])
def test_garbage_is_a_parse_error(raw):
    with pytest.raises(QuoteParseError):
        parse_quote(raw)


def test_sgx_tee_type_is_refused(intel_quote):
    raw = bytearray(intel_quote)
    struct.pack_into("<I", raw, 4, 0)  # tee_type = SGX
    with pytest.raises(QuoteParseError):
        parse_quote(bytes(raw))

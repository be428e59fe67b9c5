"""dcap-qvl verification of the real Intel-signed fixture, and our policy on top."""

from __future__ import annotations

import pytest

from node.tee import claims as claims_mod
from node.tee.collateral import load_collateral_file
from node.tee.quote import parse_quote
from node.tee.registry_source import RegistrySnapshot
from node.tee.verify import Policy, verify_quote

from .conftest import AFTER_EXPIRY, FIXTURE_TIME

SIGNED_LEN = 48 + 584  # header + TD report: what the attestation key signs
SIG_END = SIGNED_LEN + 4 + 64  # + signature length field + ECDSA signature


@pytest.fixture(scope="module")
def allow(intel_quote) -> RegistrySnapshot:
    return RegistrySnapshot(worker_image_hashes=frozenset([parse_quote(intel_quote).image_hash]), version=3)


def run(quote, collateral, snap, now=FIXTURE_TIME, **kw):
    return verify_quote(quote, policy=kw.pop("policy", Policy("worker")), snapshot=snap,
                        collateral=collateral, now=now, **kw)


def test_fixture_verifies(intel_quote, intel_collateral, allow):
    v = run(intel_quote, intel_collateral, allow)
    assert v.ok, v.reason()
    assert v.tcb_status == "UpToDate"
    assert [c.name for c in v.checks if c.ok] == [
        "quote_format", "collateral", "quote_signature", "tcb_status", "tee_environment", "image_hash",
    ]
    assert not v.simulated


def test_every_byte_flip_in_signed_body_and_signature_is_rejected(intel_quote, intel_collateral, allow):
    for i in range(SIG_END):
        if SIGNED_LEN <= i < SIGNED_LEN + 4:
            continue  # the length field itself: covered below
        bad = bytearray(intel_quote)
        bad[i] ^= 0xFF
        v = run(bytes(bad), intel_collateral, allow)
        assert not v.ok, f"flip at {i} accepted"
        assert v.check("quote_format").ok is False or v.check("quote_signature").ok is False, (
            f"flip at {i} not caught by parsing or signature: {v.reason()}"
        )


def test_every_byte_flip_in_qe_report_and_its_signature_is_rejected(intel_quote, intel_collateral, allow):
    start = SIG_END + 64 + 6  # attestation key, then cert data type (2) and size (4)
    for i in range(start, start + 384 + 64):
        bad = bytearray(intel_quote)
        bad[i] ^= 0xFF
        v = run(bytes(bad), intel_collateral, allow)
        assert not v.ok, f"flip at {i} accepted"


def test_signature_length_field_corruption_is_rejected(intel_quote, intel_collateral, allow):
    for i in range(SIGNED_LEN, SIGNED_LEN + 4):
        bad = bytearray(intel_quote)
        bad[i] ^= 0xFF
        assert not run(bytes(bad), intel_collateral, allow).ok


def test_collateral_after_expiry_is_rejected(intel_quote, intel_collateral, allow):
    v = run(intel_quote, intel_collateral, allow, now=AFTER_EXPIRY)
    assert not v.ok
    sig = v.check("quote_signature")
    assert sig.ok is False and "expired" in sig.detail.lower()
    # everything parsable is still reported
    assert v.quote is not None and v.image_hash == parse_quote(intel_quote).image_hash


def test_missing_collateral_fails_with_reason_but_parses(intel_quote, allow):
    v = run(intel_quote, None, allow, collateral_error="PCCS unreachable")
    assert v.failed == ["collateral", "quote_signature", "tcb_status"]
    assert v.check("collateral").detail == "PCCS unreachable"
    assert v.check("image_hash").ok is True


def test_tcb_policy_is_configuration(intel_quote, intel_collateral, allow):
    v = run(intel_quote, intel_collateral, allow, policy=Policy("worker", accepted_tcb=frozenset({"OutOfDate"})))
    assert v.failed == ["tcb_status"]
    assert "UpToDate is not accepted" in v.check("tcb_status").detail


def test_unknown_tcb_status_in_policy_is_refused():
    with pytest.raises(ValueError):
        Policy("worker", accepted_tcb=frozenset({"Fine"}))


def test_outdated_platform_is_refused_with_reason(tdx_dir, allow):
    raw = (tdx_dir / "tdx_quote_outdated").read_bytes()
    coll = load_collateral_file(tdx_dir / "tdx_quote_outdated_collateral.json")
    snap = RegistrySnapshot(worker_image_hashes=frozenset([parse_quote(raw).image_hash]))
    v = verify_quote(raw, policy=Policy("worker"), snapshot=snap, collateral=coll, now=1771412400)
    assert not v.ok
    assert v.failed == ["tcb_status"]
    assert "TCB" in v.check("tcb_status").detail


def test_image_not_in_registry_or_wrong_role(intel_quote, intel_collateral, allow):
    v = run(intel_quote, intel_collateral, RegistrySnapshot())
    assert v.failed == ["image_hash"]
    v = run(intel_quote, intel_collateral, allow, policy=Policy("proxy"))
    assert v.failed == ["image_hash"]
    v = run(intel_quote, intel_collateral, None)
    assert v.failed == ["image_hash"]


def test_report_data_must_be_sha512_of_claims(intel_quote, intel_collateral, allow):
    v = run(intel_quote, intel_collateral, allow, claims_bytes=bytes(32))
    assert v.check("report_data").ok is False
    assert "report_data" in v.failed


def test_claims_check_with_matching_report_data(dev_root, worker_tee):
    from node.tee.registry_source import RegistrySnapshot

    key = bytes(range(32))
    c = claims_mod.Claims(key, role="worker")
    q = worker_tee.quote(c.report_data())
    snap = RegistrySnapshot(worker_image_hashes=frozenset([parse_quote(q).image_hash]), is_test=True)
    pol = Policy("worker", dev_trust=dev_root.trust())
    v = verify_quote(q, policy=pol, snapshot=snap, claims_bytes=c.encode(), expected_public_key=key)
    assert v.ok, v.reason()
    v = verify_quote(q, policy=pol, snapshot=snap, claims_bytes=c.encode(), expected_public_key=bytes(32))
    assert v.failed == ["claims"]
    v = verify_quote(q, policy=Policy("proxy", dev_trust=dev_root.trust()),
                     snapshot=RegistrySnapshot(proxy_image_hashes=snap.worker_image_hashes, is_test=True),
                     claims_bytes=c.encode())
    assert v.failed == ["claims"]  # claims say worker, policy wants a proxy


def test_garbage_quote_fails_every_check():
    v = verify_quote(b"not a quote", policy=Policy("worker"), snapshot=RegistrySnapshot())
    assert not v.ok and v.check("quote_format").ok is False
    assert v.to_dict()["image_hash"] is None


def test_model_hash_must_be_in_registry(dev_root, worker_tee):
    model = b"\x4d" * 32
    key = bytes(range(32))
    c = claims_mod.Claims(key, role="worker", model_hash=model)
    q = worker_tee.quote(c.report_data())
    img = frozenset([parse_quote(q).image_hash])
    pol = Policy("worker", dev_trust=dev_root.trust())
    ok = RegistrySnapshot(worker_image_hashes=img, model_hashes=[model], is_test=True)
    v = verify_quote(q, policy=pol, snapshot=ok, claims_bytes=c.encode(), expected_public_key=key)
    assert v.ok and v.check("model_hash").ok is True
    v = verify_quote(q, policy=pol, snapshot=RegistrySnapshot(worker_image_hashes=img, is_test=True),
                     claims_bytes=c.encode(), expected_public_key=key)
    assert v.failed == ["model_hash"]

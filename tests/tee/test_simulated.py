"""The simulated TEE: real layout, same dcap-qvl path, accepted only by test registries."""

from __future__ import annotations

import datetime as dt
import json
import struct

import pytest
from cryptography import x509

from node.tee.claims import Claims
from node.tee.quote import parse_quote
from node.tee.registry_source import RegistrySnapshot
from node.tee.simulated import (
    LABEL,
    QUOTE_USER_DATA,
    DevRoot,
    DevTrust,
    SimulatedTdx,
    default_measurements,
    is_simulated_quote,
    load_measurements,
)
from node.tee.verify import Policy, verify_quote

KEY = bytes(range(32))


def _round_trip(tee, trust, is_test=True, **kw):
    c = Claims(KEY, role="worker")
    q = tee.quote(c.report_data())
    snap = RegistrySnapshot(worker_image_hashes=frozenset([parse_quote(q).image_hash]), is_test=is_test)
    return verify_quote(q, policy=Policy("worker", dev_trust=trust), snapshot=snap,
                        claims_bytes=c.encode(), expected_public_key=KEY, **kw)


def test_round_trip_verifies_through_dcap_qvl(dev_root, worker_tee):
    v = _round_trip(worker_tee, dev_root.trust())
    assert v.ok, v.reason()
    assert v.simulated and v.tcb_status == "UpToDate"
    assert "simulated development root" in v.check("quote_signature").detail
    assert "SIMULATED" in v.check("tee_environment").detail


def test_refused_when_registry_has_no_test_flag(dev_root, worker_tee):
    v = _round_trip(worker_tee, dev_root.trust(), is_test=False)
    assert v.failed == ["tee_environment"]
    assert "test flag" in v.check("tee_environment").detail


def test_refused_without_dev_trust_even_on_test_registry(worker_tee):
    v = _round_trip(worker_tee, None)
    assert not v.ok
    assert v.check("tee_environment").ok is False
    assert v.check("quote_signature").ok is False  # no collateral for it, and not Intel's root


def test_refused_against_intel_root_with_dev_collateral(dev_root, worker_tee):
    # Even given its collateral, a simulated quote does not chain to Intel's root.
    c = Claims(KEY)
    q = worker_tee.quote(c.report_data())
    v = verify_quote(q, policy=Policy("worker"), snapshot=RegistrySnapshot(is_test=True),
                     collateral=dev_root.trust().collateral())
    assert v.check("quote_signature").ok is False
    assert "SIMULATED" in v.check("quote_signature").detail


def test_another_dev_root_does_not_vouch(other_dev_root, worker_tee):
    v = _round_trip(worker_tee, other_dev_root.trust())
    assert not v.ok and v.check("tee_environment").ok is False


def test_forged_dev_quote_body_is_rejected(dev_root, worker_tee):
    c = Claims(KEY)
    q = bytearray(worker_tee.quote(c.report_data()))
    q[48 + 136] ^= 1  # MRTD
    v = verify_quote(bytes(q), policy=Policy("worker", dev_trust=dev_root.trust()),
                     snapshot=RegistrySnapshot(is_test=True))
    assert v.check("quote_signature").ok is False


def test_dev_collateral_expires(dev_root, worker_tee):
    later = int((dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)).timestamp())
    v = _round_trip(worker_tee, dev_root.trust(), now=later)
    assert v.check("quote_signature").ok is False


def test_real_layout_and_labels(dev_root):
    meas = default_measurements("x")
    tee = SimulatedTdx(dev_root, meas)
    q = tee.quote(b"\x07" * 64)
    version, key_type, tee_type = struct.unpack_from("<HHI", q)
    assert (version, key_type, tee_type) == (4, 2, 0x81)
    assert q[28:48] == QUOTE_USER_DATA and is_simulated_quote(q)
    p = parse_quote(q)
    assert p.measurements.mr_td == meas["mr_td"] == q[48 + 136 : 48 + 184]
    assert p.measurements.rt_mr3 == meas["rt_mr3"]
    assert p.report_data == b"\x07" * 64 == q[48 + 520 : 48 + 584]
    for cert in (dev_root.root_cert, dev_root.pck_ca_cert, dev_root.pck_cert):
        names = cert.subject.rfc4514_string()
        assert "Simulated" in names and LABEL in names
    assert json.loads(dev_root.trust().to_json())["label"] == LABEL


def test_measurements_come_from_config_file(tmp_path, dev_root):
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"name": "img", "rt_mr1": "ab" * 48}))
    meas = load_measurements(f)
    assert meas["rt_mr1"] == b"\xab" * 48
    assert meas["mr_td"] == default_measurements("img")["mr_td"]
    q = SimulatedTdx(dev_root, meas).quote(bytes(64))
    assert parse_quote(q).measurements.rt_mr1 == b"\xab" * 48
    f.write_text(json.dumps({"rt_mr9": "00" * 48}))
    with pytest.raises(ValueError):
        load_measurements(f)
    f.write_text(json.dumps({"mr_td": "00" * 47}))
    with pytest.raises(ValueError):
        load_measurements(f)


def test_save_load_round_trip(tmp_path, dev_root):
    trust_path = dev_root.save(tmp_path / "dev")
    assert (tmp_path / "dev" / "root_key.pem").stat().st_mode & 0o077 == 0
    loaded = DevRoot.load(tmp_path / "dev")
    trust = DevTrust.load(trust_path)
    assert trust.root_der == dev_root.trust().root_der
    v = _round_trip(SimulatedTdx(loaded, default_measurements("w")), trust)
    assert v.ok, v.reason()
    with pytest.raises(ValueError):
        DevRoot.load(tmp_path / "missing")
    (tmp_path / "bad.json").write_text('{"kind": "something else"}')
    with pytest.raises(ValueError):
        DevTrust.load(tmp_path / "bad.json")


def test_report_data_length_enforced(worker_tee):
    with pytest.raises(ValueError):
        worker_tee.quote(b"short")


def test_pck_certificate_carries_sgx_extension(dev_root):
    ext = dev_root.pck_cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.2.840.113741.1.13.1"))
    assert ext.value.value[:1] == b"\x30"
    q = parse_quote(SimulatedTdx(dev_root).quote(bytes(64)))
    import dcap_qvl

    assert dcap_qvl.parse_quote(q.raw).fmspc() == "00DE00000000"

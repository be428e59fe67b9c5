"""The receipt checks the gateway runs before paying, and `cocoon receipt verify` runs later: real
Ed25519 keys, a simulated-TEE worker certificate, and worker stakes on the embedded chain (one of them
slashed for equivocation by the stake contract itself)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq_core import Cell

from node.payments.receipts import CHECKS, Evidence, ReceiptVerifier, verify_record, view_record
from node.lifecycle import MODEL, ready
from node.tee.providers import SimulatedProvider
from node.tee.quote import parse_quote
from node.tee.ratls import Identity, PeerVerifier
from node.tee.registry_source import RegistrySnapshot, SnapshotSource
from node.tee.simulated import DevRoot, SimulatedTdx, default_measurements
from node.tee.verify import Policy
from wrappers import stake as S
from node.payments.pricing import Usage, charge
from node.payments.receipts import Receipt, response_hash

REQUEST = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'
USAGE = Usage(12, 7)
COEF = 1000


class World:
    def __init__(self):
        self.net = ready("tolk")
        self.dev = DevRoot.generate()
        self.trust = self.dev.trust()
        tee = SimulatedTdx(self.dev, default_measurements("worker-image"))
        self.workers = {}
        for name in ("worker-a", "worker-b"):
            p = self.net.workers[name]
            ident = Identity.create(SimulatedProvider(tee), role="worker", model_hash=MODEL.to_bytes(32, "big"),
                                    operator=p.wallet.address.to_str(is_user_friendly=False), key=p.key)
            self.workers[name] = (p, ident)
        image = parse_quote(self.workers["worker-a"][1].quote).image_hash
        self.snapshot = RegistrySnapshot(worker_image_hashes=[image], model_hashes=[MODEL.to_bytes(32, "big")],
                                         is_test=True, version=1)
        self.economics = self.net.params.economics

    async def stake_lookup(self, address):
        rd = S.StakeReader(self.net.chain.get_method, address)
        return rd.state() if self.net.chain.state(address)[0] == "active" else None

    def verifier(self, snapshot=None, lookup=True, max_coefficient=2000) -> ReceiptVerifier:
        workers = PeerVerifier(Policy("worker", dev_trust=self.trust), SnapshotSource.fixed(snapshot or self.snapshot))
        return ReceiptVerifier(workers=workers, registry=self.net.reg.address, stake_code=self.net.codes.stake,
                               economics=self.economics, max_coefficient=max_coefficient,
                               stake_lookup=self.stake_lookup if lookup else None)

    def answer(self, worker="worker-a", content="Hello there.", calls=(), usage=USAGE, coef=COEF, job=7,
               sign_with=None, cost=None, request=REQUEST) -> dict:
        p, ident = self.workers[worker]
        r = Receipt(p.stake.address, job, hashlib.sha256(request).digest(), response_hash(content, calls), usage, coef)
        signed = r.sign(sign_with or p.key)
        return {"request_id": "r1", "job_id": f"{job:064x}",
                "receipt": base64.b64encode(signed.to_cell().to_boc()).decode(),
                "worker_cert": base64.b64encode(ident.cert_der).decode(), "coefficient": coef,
                "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                          "total_tokens": usage.prompt_tokens + usage.completion_tokens},
                "cost": charge(usage, coef, self.economics).client_cost if cost is None else cost,
                "settled_before": 0}


@pytest.fixture(scope="module")
def world():
    return World()


def run(coro):
    return asyncio.run(coro)


def check(world, cocoon, content="Hello there.", calls=(), **kw):
    ev = Evidence.from_cocoon(cocoon, REQUEST, content, list(calls))
    return run(world.verifier(**kw).verify(ev))


def test_an_honest_answer_passes_every_check(world):
    v = check(world, world.answer())
    assert v.ok, v.reason()
    assert [c.name for c in v.checks] == list(CHECKS)
    assert all(c.ok for c in v.checks)
    assert v.worker_owner == world.net.workers["worker-a"].wallet.address.to_str(is_user_friendly=False)


def test_a_receipt_in_another_boc_form_gets_the_same_verdict(world):
    """The canonical receipt is checked without parsing it; the same receipt in another valid BoC
    form (with an index and a CRC) is parsed, and every check comes out the same, word for word."""
    def reformed(cocoon: dict) -> dict:
        cell = Cell.one_from_boc(base64.b64decode(cocoon["receipt"]))
        return dict(cocoon, receipt=base64.b64encode(cell.to_boc(has_idx=True, hash_crc32=True)).decode())

    canonical = world.answer()
    other = reformed(canonical)
    assert other["receipt"] != canonical["receipt"]
    a, b = check(world, canonical), check(world, other)
    assert a.ok and b.ok
    assert [(c.name, c.ok, c.detail) for c in a.checks] == [(c.name, c.ok, c.detail) for c in b.checks]
    tampered = reformed(world.answer(content="The answer is 4."))
    assert check(world, tampered, content="The answer is 5.").failed == ["response_hash"]


def test_tool_calls_are_part_of_the_response_hash(world):
    calls = [("get_weather", '{"city":"Paris"}')]
    assert check(world, world.answer(content="", calls=calls), content="", calls=calls).ok
    v = check(world, world.answer(content="", calls=calls), content="", calls=[("get_weather", '{"city":"Rome"}')])
    assert v.failed == ["response_hash"]


def test_content_changed_after_signing_is_detected(world):
    v = check(world, world.answer(content="The answer is 4."), content="The answer is 5.")
    assert v.failed == ["response_hash"]


def test_a_receipt_signed_by_another_key_is_detected(world):
    v = check(world, world.answer(sign_with=Ed25519PrivateKey.generate()))
    assert v.failed == ["signature"]


def test_another_workers_certificate_is_detected(world):
    c = world.answer()
    c["worker_cert"] = base64.b64encode(world.workers["worker-b"][1].cert_der).decode()
    v = check(world, c)
    assert set(v.failed) == {"signature", "stake"}


def test_a_request_other_than_the_one_sent_is_detected(world):
    v = check(world, world.answer(request=REQUEST.replace(b"hi", b"ho")))
    assert v.failed == ["request_hash"]


def test_usage_and_price_must_match_what_the_worker_signed(world):
    c = world.answer()
    c["usage"] = {"prompt_tokens": 12, "completion_tokens": 70, "total_tokens": 82}
    assert "usage" in check(world, c).failed
    c = world.answer(cost=charge(USAGE, COEF, world.economics).client_cost + 1)
    assert check(world, c).failed == ["price"]
    c = world.answer()
    c["coefficient"] = 900
    assert "coefficient" in check(world, c).failed
    assert check(world, world.answer(coef=1500), max_coefficient=1200).failed == ["coefficient"]


def test_a_model_or_image_the_registry_does_not_allow_is_refused(world):
    snap = RegistrySnapshot(worker_image_hashes=world.snapshot.worker_image_hashes, model_hashes=[b"\1" * 32],
                            is_test=True, version=2)
    assert check(world, world.answer(), snapshot=snap).failed == ["model_hash"]
    snap = RegistrySnapshot(worker_image_hashes=[b"\2" * 32], model_hashes=world.snapshot.model_hashes,
                            is_test=True, version=3)
    assert check(world, world.answer(), snapshot=snap).failed == ["worker_cert"]


def test_a_garbled_receipt_fails_every_check(world):
    c = world.answer()
    c["receipt"] = base64.b64encode(b"not a bag of cells").decode()
    v = check(world, c)
    assert v.failed == list(CHECKS)


def test_offline_the_stake_check_is_skipped_not_passed(world):
    v = check(world, world.answer(), lookup=False)
    assert v.ok and v.checks[CHECKS.index("stake")].ok is None


def test_a_record_round_trips_and_verifies_offline(world):
    ev = Evidence.from_cocoon(world.answer(calls=[("f", "{}")]), REQUEST, "Hello there.", [("f", "{}")])
    rec = json.loads(json.dumps(ev.to_json()))
    rec["registry"] = view_record(world.net.reg.address, world.snapshot, world.economics, world.net.codes.stake)
    assert Evidence.from_json(rec) == ev
    v = run(verify_record(rec, dev_trust=world.trust))
    assert v.ok, v.reason()
    rec["response"]["content"] = "Hello there!"
    assert run(verify_record(rec, dev_trust=world.trust)).failed == ["response_hash"]
    # without the development root the simulated TEE is not trusted
    assert "worker_cert" in run(verify_record(dict(rec, response=ev.to_json()["response"]))).failed


def test_a_slashed_worker_is_detected(world):
    """Last: it slashes worker-b on the module's chain. The stake contract jails it on evidence of two
    different receipts for one job."""
    assert check(world, world.answer(worker="worker-b")).ok
    p = world.net.workers["worker-b"]
    world.net.report_equivocation(p, world.net.equivocation(p, job_id=99))
    assert world.net.chain.get_method(p.stake.address, "get_stake", [])[6]  # jailed
    v = check(world, world.answer(worker="worker-b"))
    assert v.failed == ["stake"]
    assert "slashed" in v.checks[CHECKS.index("stake")].detail

"""Collateral from a file and from a PCCS (a loopback server answering like one), with caching."""

from __future__ import annotations

import json
from urllib.parse import quote as urlquote

import pytest
from aiohttp import web

from node.tee.collateral import (
    CollateralError,
    FileCollateral,
    PccsCollateral,
    load_collateral_file,
    next_update,
)
from node.tee.registry_source import RegistrySnapshot
from node.tee.quote import parse_quote
from node.tee.verify import Policy, verify_quote

from .conftest import FIXTURE_TIME


def fake_pccs(doc: dict, calls: list[str], *, missing: str | None = None) -> web.Application:
    """A PCCS serving the fixture collateral the way Intel's PCS/PCCS v4 API does."""

    def h(name, body, headers=None, content_type="application/json"):
        async def handler(request):
            calls.append(request.path_qs)
            if name == missing:
                return web.Response(status=404)
            return web.Response(body=body, headers=headers or {}, content_type=content_type)

        return handler

    tcb = f'{{"tcbInfo":{doc["tcb_info"]},"signature":"{doc["tcb_info_signature"]}"}}'
    qe = f'{{"enclaveIdentity":{doc["qe_identity"]},"signature":"{doc["qe_identity_signature"]}"}}'
    app = web.Application()
    app.router.add_get("/tdx/certification/v4/tcb", h("tcb", tcb.encode(), {"TCB-Info-Issuer-Chain": urlquote(doc["tcb_info_issuer_chain"])}))
    app.router.add_get("/tdx/certification/v4/qe/identity", h("qe", qe.encode(), {"SGX-Enclave-Identity-Issuer-Chain": urlquote(doc["qe_identity_issuer_chain"])}))
    app.router.add_get("/sgx/certification/v4/pckcrl", h("pckcrl", bytes.fromhex(doc["pck_crl"]), {"SGX-PCK-CRL-Issuer-Chain": urlquote(doc["pck_crl_issuer_chain"])}, "application/pkix-crl"))
    app.router.add_get("/sgx/certification/v4/rootcacrl", h("rootcacrl", doc["root_ca_crl"].encode(), None, "text/plain"))
    return app


@pytest.fixture
def doc(tdx_dir):
    return json.loads((tdx_dir / "tdx_quote_collateral.json").read_text())


async def _serve(app):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site.port}"


@pytest.mark.asyncio
async def test_pccs_fetch_verifies_and_is_cached(doc, intel_quote, tmp_path):
    calls: list[str] = []
    runner, url = await _serve(fake_pccs(doc, calls))
    try:
        pccs = PccsCollateral(url, cache_dir=tmp_path, clock=lambda: FIXTURE_TIME)
        c = await pccs.get(intel_quote)
        assert "/tdx/certification/v4/tcb?fmspc=B0C06F000000" in calls
        assert "/sgx/certification/v4/pckcrl?ca=platform&encoding=der" in calls
        snap = RegistrySnapshot(worker_image_hashes=frozenset([parse_quote(intel_quote).image_hash]))
        v = verify_quote(intel_quote, policy=Policy("worker"), snapshot=snap, collateral=c, now=FIXTURE_TIME)
        assert v.ok, v.reason()
        n = len(calls)
        await pccs.get(intel_quote)
        assert len(calls) == n and pccs.fetches == 1  # memory cache
        again = PccsCollateral(url, cache_dir=tmp_path, clock=lambda: FIXTURE_TIME)
        await again.get(intel_quote)
        assert len(calls) == n and again.fetches == 0  # disk cache
        stale = PccsCollateral(url, cache_dir=tmp_path, clock=lambda: next_update(c) + 1)
        await stale.get(intel_quote)
        assert stale.fetches == 1 and len(calls) > n  # expired entries are refetched
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
@pytest.mark.parametrize("missing", ["tcb", "qe", "pckcrl"])
async def test_pccs_error_is_a_collateral_error(doc, intel_quote, missing):
    runner, url = await _serve(fake_pccs(doc, [], missing=missing))
    try:
        with pytest.raises(CollateralError, match="404"):
            await PccsCollateral(url, clock=lambda: FIXTURE_TIME).get(intel_quote)
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_unreachable_pccs(intel_quote):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(CollateralError, match="unreachable"):
        await PccsCollateral(f"http://127.0.0.1:{port}", timeout=2).get(intel_quote)


@pytest.mark.asyncio
async def test_file_collateral(tdx_dir, intel_quote, tmp_path):
    c = await FileCollateral(tdx_dir / "tdx_quote_collateral.json").get(intel_quote)
    assert json.loads(c.tcb_info)["fmspc"] == "B0C06F000000"
    with pytest.raises(CollateralError, match="cannot read"):
        load_collateral_file(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CollateralError, match="malformed"):
        load_collateral_file(tmp_path / "bad.json")


@pytest.mark.asyncio
async def test_garbage_quote_cannot_select_collateral():
    with pytest.raises(CollateralError):
        await PccsCollateral("http://127.0.0.1:9").get(b"nonsense")

"""`cocoon attest verify` on the Intel fixture, certificate files and a live simulated endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

from node.cli.attest import attest
from node.tee.quote import parse_quote
from node.tee.ratls import Identity, PeerVerifier, RaTlsSite
from node.tee.registry_source import RegistrySnapshot, SnapshotSource
from node.tee.verify import Policy

INTEL_IMAGE = "b260fa9168ca9f28e7f15f128a45ac31c419705b31a60feac30b322ee06bc752"
REPO = Path(__file__).resolve().parents[2]


def run(*args: str):
    r = CliRunner().invoke(attest, ["verify", *args])
    assert "Traceback" not in r.output
    return r


@pytest.fixture
def fixture_args(tdx_dir):
    return [str(tdx_dir / "tdx_quote"), "--collateral", str(tdx_dir / "tdx_quote_collateral.json"),
            "--time", "2025-06-25T00:00:00Z"]


def test_fixture_passes_and_prints_everything(fixture_args):
    r = run(*fixture_args, "--allow-image", INTEL_IMAGE, "--role", "worker")
    assert r.exit_code == 0, r.output
    assert "MRTD           91eb2b44d141d4ec" in r.output
    for label in ("RTMR0", "RTMR3", "MRCONFIGID", "MROWNER", "REPORTDATA"):
        assert label in r.output
    assert f"Image hash:   {INTEL_IMAGE}" in r.output
    assert "TCB status:   UpToDate" in r.output
    assert re.search(r"\[pass\] quote_signature", r.output)
    assert "Result:       PASS" in r.output


def test_json_output(fixture_args):
    r = run(*fixture_args, "--allow-image", INTEL_IMAGE, "--json", "--time", "1750809600")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["ok"] is True and d["image_hash"] == INTEL_IMAGE and d["tcb_status"] == "UpToDate"
    assert d["verified_at"] == 1750809600
    assert {c["name"]: c["result"] for c in d["checks"]}["quote_signature"] == "pass"
    assert d["measurements"]["rt_mr0"].startswith("44c0197b")


def test_no_collateral_still_prints_and_fails(tdx_dir):
    r = run(str(tdx_dir / "tdx_quote"), "--allow-image", INTEL_IMAGE, "--json")
    assert r.exit_code == 1
    d = json.loads(r.output)
    assert d["image_hash"] == INTEL_IMAGE and d["measurements"]["mr_td"].startswith("91eb2b44")
    assert d["failed"] == ["collateral", "quote_signature", "tcb_status"]
    assert "--collateral" in d["checks"][1]["detail"]


def test_expired_collateral_fails(fixture_args):
    r = run(*fixture_args, "--allow-image", INTEL_IMAGE, "--time", "2025-08-01")
    assert r.exit_code == 1
    assert re.search(r"\[FAIL\] quote_signature .*expired", r.output, re.I)
    assert "Image hash:" in r.output


def test_unlisted_image_and_tcb_policy(fixture_args):
    r = run(*fixture_args)
    assert r.exit_code == 1 and "[FAIL] image_hash" in r.output
    r = run(*fixture_args, "--allow-image", INTEL_IMAGE, "--accept-tcb", "OutOfDate")
    assert r.exit_code == 1 and "UpToDate is not accepted" in r.output


def test_outdated_quote_is_refused_with_reason(tdx_dir):
    r = run(str(tdx_dir / "tdx_quote_outdated"), "--collateral", str(tdx_dir / "tdx_quote_outdated_collateral.json"),
            "--time", "2026-02-19T00:00:00Z", "--json")
    assert r.exit_code == 1
    d = json.loads(r.output)
    assert "tcb_status" in d["failed"] and d["quote_version"] == 5


def test_registry_snapshot_file(fixture_args, tmp_path):
    f = tmp_path / "snap.json"
    f.write_text(json.dumps({"worker_image_hashes": [INTEL_IMAGE], "version": 9}))
    r = run(*fixture_args, "--registry-snapshot", str(f))
    assert r.exit_code == 0 and "registry v9" in r.output
    r = run(*fixture_args, "--registry-snapshot", str(f), "--role", "proxy")
    assert r.exit_code == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/file"], "neither an existing file nor host:port"),
        (["{q}", "--time", "yesterday"], "neither ISO 8601 nor unix"),
        (["{q}", "--allow-image", "zz"], "64 hex digits"),
        (["{q}", "--allow-image", "00"], "64 hex digits"),
        (["{q}", "--allow-simulated", "/no/such/trust.json"], "--allow-simulated"),
        (["{q}", "--registry-snapshot", "/no/such/snap.json"], "--registry-snapshot"),
    ],
)
def test_usage_errors_are_clear(tdx_dir, args, message):
    args = [a.replace("{q}", str(tdx_dir / "tdx_quote")) for a in args]
    r = run(*args)
    assert r.exit_code == 2
    assert message in r.output


def test_garbage_file_fails_cleanly(tmp_path):
    f = tmp_path / "junk.bin"
    f.write_bytes(b"hello world" * 10)
    r = run(str(f))
    assert r.exit_code == 1 and "[FAIL] quote_format" in r.output


def test_help_explains_options():
    r = CliRunner().invoke(attest, ["verify", "--help"])
    assert r.exit_code == 0
    for opt in ("--collateral", "--pccs-url", "--time", "--role", "--allow-image", "--registry-snapshot",
                "--accept-tcb", "--json", "--allow-simulated"):
        assert opt in r.output


@pytest.fixture
def sim(dev_root, worker_provider, tmp_path):
    ident = Identity.create(worker_provider, role="worker")
    trust = tmp_path / "trust.json"
    trust.write_text(dev_root.trust().to_json())
    return ident, str(trust), parse_quote(ident.quote).image_hash.hex()


@pytest.mark.parametrize("form", ["pem", "der"])
def test_certificate_file(sim, tmp_path, form):
    ident, trust, img = sim
    f = tmp_path / f"cert.{form}"
    f.write_bytes(ident.cert_pem if form == "pem" else ident.cert_der)
    r = run(str(f), "--allow-simulated", trust, "--allow-image", img)
    assert r.exit_code == 0, r.output
    assert "SIMULATED TEE" in r.output and "[pass] report_data" in r.output and "[pass] claims" in r.output
    assert "Peer role:    worker" in r.output
    r = run(str(f), "--allow-image", img)  # without the development root: refused
    assert r.exit_code == 1 and "[FAIL] tee_environment" in r.output


class LiveEndpoint:
    """An RA-TLS aiohttp site on loopback, in its own thread and event loop."""

    def __init__(self, identity: Identity, trust) -> None:
        self.identity, self.trust = identity, trust
        self.ready = threading.Event()
        self.port = 0

    def __enter__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def start():
            async def ok(request):
                return web.Response(text="ok")

            app = web.Application()
            app.router.add_get("/", ok)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            src = SnapshotSource.fixed(RegistrySnapshot(is_test=True))
            site = RaTlsSite(self.runner, "127.0.0.1", 0, identity=self.identity,
                             verifier=PeerVerifier(Policy("proxy", dev_trust=self.trust), src))
            await site.start()
            self.port = site.port
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_live_simulated_endpoint(sim, dev_root):
    ident, trust, img = sim
    with LiveEndpoint(ident, dev_root.trust()) as ep:
        r = run(f"127.0.0.1:{ep.port}", "--allow-simulated", trust, "--allow-image", img, "--json")
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        assert d["source"]["endpoint"] == f"127.0.0.1:{ep.port}" and d["source"]["tls"] == "TLSv1.3"
        assert d["image_hash"] == img and d["simulated"] is True
        assert d["claims"]["role"] == "worker"
        r = run(f"127.0.0.1:{ep.port}", "--allow-simulated", trust, "--allow-image", "11" * 32)
        assert r.exit_code == 1 and "[FAIL] image_hash" in r.output


def test_unreachable_endpoint():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run(f"127.0.0.1:{port}")
    assert r.exit_code == 1 and "cannot fetch the certificate" in r.output


def test_dev_root_and_serve_simulated_commands(tmp_path):
    d = tmp_path / "dev"
    r = CliRunner().invoke(attest, ["dev-root", str(d)])
    assert r.exit_code == 0, r.output
    assert (d / "trust.json").exists() and "SIMULATED" in r.output
    r = CliRunner().invoke(attest, ["dev-root", str(d)])
    assert r.exit_code != 0 and "not empty" in r.output

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from node.cli.attest import attest; attest()", "serve-simulated",
         "--dev-root", str(d), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )
    try:
        line = proc.stdout.readline().decode()
        assert "SIMULATED worker" in line, line
        img = line.split("image hash ")[1].split()[0]
        deadline = time.time() + 10
        while True:
            r = run(f"127.0.0.1:{port}", "--allow-simulated", str(d / "trust.json"), "--allow-image", img)
            if r.exit_code == 0 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert r.exit_code == 0, r.output
    finally:
        proc.terminate()
        proc.wait(10)


def test_pccs_url(tdx_dir):
    """Collateral fetched from a PCCS (a loopback one) instead of a file."""
    from .test_collateral import fake_pccs

    doc = json.loads((tdx_dir / "tdx_quote_collateral.json").read_text())
    calls: list[str] = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}

    def serve():
        asyncio.set_event_loop(loop)

        async def start():
            runner = web.AppRunner(fake_pccs(doc, calls))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            state.update(runner=runner, port=site.port)
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(state["runner"].cleanup())
        loop.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        r = run(str(tdx_dir / "tdx_quote"), "--pccs-url", f"http://127.0.0.1:{state['port']}",
                "--time", "2025-06-25", "--allow-image", INTEL_IMAGE)
        assert r.exit_code == 0, r.output
        assert any(c.startswith("/tdx/certification/v4/tcb") for c in calls)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
    r = run(str(tdx_dir / "tdx_quote"), "--pccs-url", f"http://127.0.0.1:{state['port']}",
            "--time", "2025-06-25", "--allow-image", INTEL_IMAGE)
    assert r.exit_code == 1 and "[FAIL] collateral" in r.output and "unreachable" in r.output


def test_bare_quote_with_claims(sim, tmp_path):
    ident, trust, img = sim
    q = tmp_path / "quote.bin"
    q.write_bytes(ident.quote)
    r = run(str(q), "--allow-simulated", trust, "--allow-image", img, "--claims", ident.claims.encode().hex())
    assert r.exit_code == 0, r.output
    assert "[pass] report_data" in r.output and "Peer role:    worker" in r.output
    r = run(str(q), "--allow-simulated", trust, "--allow-image", img, "--claims", "00" * 32)
    assert r.exit_code == 1 and "[FAIL] report_data" in r.output

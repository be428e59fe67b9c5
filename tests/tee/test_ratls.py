"""RA-TLS between two aiohttp endpoints on loopback, both sides attested (simulated TEE)."""

from __future__ import annotations

import asyncio
import datetime as dt

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from node.tee import certs
from node.tee.claims import Claims
from node.tee.quote import parse_quote
from node.tee.ratls import (
    Identity,
    PeerVerifier,
    RaTlsConnector,
    RaTlsError,
    RaTlsSite,
    peer_verdict,
)
from node.tee.registry_source import RegistrySnapshot, SnapshotSource
from node.tee.verify import Policy


def image(identity: Identity) -> bytes:
    return parse_quote(identity.quote).image_hash


class Net:
    """A worker server and a proxy client sharing one registry snapshot source."""

    def __init__(self, dev_root, worker_id: Identity, proxy_id: Identity, snapshot: RegistrySnapshot):
        self.trust = dev_root.trust()
        self.worker_id, self.proxy_id = worker_id, proxy_id
        self.snap = snapshot
        self.source = SnapshotSource(fetch=self._fetch, interval=3600)
        self.calls: list[str] = []

    async def _fetch(self) -> RegistrySnapshot:
        return self.snap

    async def start(self):
        await self.source.refresh()

        async def handler(request):
            v = peer_verdict(request)
            self.calls.append(v.claims.role if v and v.claims else "?")
            return web.json_response({"peer_role": v.claims.role, "image": v.image_hash.hex() if v.image_hash else None})

        app = web.Application()
        app.router.add_get("/", handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.server_verifier = PeerVerifier(Policy("proxy", dev_trust=self.trust), self.source)
        self.site = RaTlsSite(self.runner, "127.0.0.1", 0, identity=self.worker_id, verifier=self.server_verifier)
        await self.site.start()
        self.url = f"https://127.0.0.1:{self.site.port}/"
        return self

    def session(self, identity: Identity | None = None, role: str = "worker", **kw) -> aiohttp.ClientSession:
        self.client_verifier = PeerVerifier(Policy(role, dev_trust=self.trust), self.source)
        conn = RaTlsConnector(identity if identity is not None else self.proxy_id, self.client_verifier, **kw)
        self.connector = conn
        return aiohttp.ClientSession(connector=conn)

    async def stop(self):
        await self.runner.cleanup()


@pytest.fixture
def ids(worker_provider, proxy_provider):
    return Identity.create(worker_provider, role="worker"), Identity.create(proxy_provider, role="proxy")


@pytest_asyncio.fixture
async def net(dev_root, ids):
    w, p = ids
    n = await Net(dev_root, w, p, RegistrySnapshot(
        worker_image_hashes=[image(w)], proxy_image_hashes=[image(p)], is_test=True, version=1)).start()
    yield n
    await n.stop()


def custom_cert(key, claims: bytes | None, quote: bytes | None, *, crit_quote=True, crit_claims=True,
                not_before=None, not_after=None) -> bytes:
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before or now - dt.timedelta(minutes=1))
         .not_valid_after(not_after or now + dt.timedelta(hours=1)))
    if claims is not None:
        b = b.add_extension(x509.UnrecognizedExtension(certs.OID_CLAIMS, claims), critical=crit_claims)
    if quote is not None:
        b = b.add_extension(x509.UnrecognizedExtension(certs.OID_QUOTE, quote), critical=crit_quote)
    return b.sign(key, None).public_bytes(serialization.Encoding.DER)


def forged(base: Identity, der: bytes, key=None) -> Identity:
    return Identity(key or base.key, base.claims, base.quote, der, base.not_after)


async def refused_by_client(net: Net, server_identity: Identity) -> RaTlsError:
    """Swap the server's certificate, connect, and return the client's refusal."""
    net.site.rotate(server_identity)
    async with net.session() as s:
        with pytest.raises(RaTlsError) as e:
            await s.get(net.url)
    assert net.calls == []  # nothing reached the application
    return e.value


async def refused_by_server(net: Net, client_identity: Identity) -> None:
    async with net.session(client_identity) as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(net.url) as r:
                await r.read()
    assert net.calls == []


@pytest.mark.asyncio
async def test_mutual_attestation_accepted(net):
    async with net.session() as s:
        async with s.get(net.url) as r:
            assert r.status == 200
            body = await r.json()
        assert net.connector.tracker.live() == 1 and net.site.tracker.live() == 1
    assert body == {"peer_role": "proxy", "image": image(net.proxy_id).hex()}
    assert net.calls == ["proxy"]
    await asyncio.sleep(0.05)
    assert net.connector.tracker.live() == 0


@pytest.mark.asyncio
async def test_verdict_cache_keyed_by_quote_hash(net):
    for _ in range(3):
        async with net.session(force_close=True) as s:
            async with s.get(net.url) as r:
                assert r.status == 200
    assert len(net.server_verifier.cache) >= 1
    assert net.server_verifier.cache.hits >= 2


@pytest.mark.asyncio
async def test_server_image_not_allowed_is_refused_by_client(net, worker_provider):
    net.snap = RegistrySnapshot(proxy_image_hashes=[image(net.proxy_id)], is_test=True, version=2)
    await net.source.refresh()
    async with net.session() as s:
        with pytest.raises(RaTlsError) as e:
            await s.get(net.url)
    assert "image_hash" in e.value.verdict.failed
    assert net.calls == []


@pytest.mark.asyncio
async def test_client_image_not_allowed_is_refused_by_server(net):
    net.snap = RegistrySnapshot(worker_image_hashes=[image(net.worker_id)], is_test=True, version=2)
    await net.source.refresh()
    await refused_by_server(net, net.proxy_id)


@pytest.mark.asyncio
async def test_revocation_drops_live_connections(net):
    async with net.session() as s:
        async with s.get(net.url) as r:
            assert r.status == 200
        assert net.site.tracker.live() == 1 and net.connector.tracker.live() == 1
        net.snap = RegistrySnapshot(worker_image_hashes=[image(net.worker_id)], is_test=True, version=2)
        await net.source.refresh()  # the proxy image is revoked
        assert net.site.tracker.dropped == 1
        await asyncio.sleep(0.05)
        assert net.site.tracker.live() == 0
        with pytest.raises(aiohttp.ClientError):  # a new connection is refused too
            async with s.get(net.url) as r:
                await r.read()
    assert net.calls == ["proxy"]


@pytest.mark.asyncio
async def test_test_flag_removed_drops_simulated_peers(net):
    async with net.session() as s:
        async with s.get(net.url) as r:
            assert r.status == 200
        net.snap = RegistrySnapshot(worker_image_hashes=[image(net.worker_id)],
                                    proxy_image_hashes=[image(net.proxy_id)], is_test=False, version=2)
        await net.source.refresh()
        assert net.connector.tracker.dropped == 1 and net.site.tracker.dropped == 1


@pytest.mark.asyncio
async def test_report_data_mismatch(net, worker_provider):
    w = net.worker_id
    other_claims = Claims(w.claims.public_key, role="worker", operator="someone else").encode()
    der = certs.make_certificate(w.key, other_claims, w.quote)  # quote vouches for different claims
    err = await refused_by_client(net, forged(w, der))
    assert err.verdict.failed == ["report_data"]


@pytest.mark.asyncio
async def test_swapped_certificate_key(net):
    w = net.worker_id
    thief = ed25519.Ed25519PrivateKey.generate()
    der = certs.make_certificate(thief, w.claims.encode(), w.quote)  # a stolen quote under a new key
    err = await refused_by_client(net, forged(w, der, key=thief))
    assert err.verdict.failed == ["claims"]
    assert "certificate key" in err.verdict.check("claims").detail


@pytest.mark.asyncio
async def test_expired_certificate(net):
    w = net.worker_id
    der = certs.make_certificate(w.key, w.claims.encode(), w.quote,
                                 now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    err = await refused_by_client(net, forged(w, der))
    assert err.verdict.failed == ["certificate_validity"]


@pytest.mark.asyncio
@pytest.mark.parametrize("which", ["quote", "claims"])
async def test_non_critical_extension(net, which):
    w = net.worker_id
    der = custom_cert(w.key, w.claims.encode(), w.quote, crit_quote=which != "quote", crit_claims=which != "claims")
    err = await refused_by_client(net, forged(w, der))
    assert err.verdict.failed == ["certificate_extensions"]
    assert f"{which} extension is not critical" in err.verdict.check("certificate_extensions").detail


@pytest.mark.asyncio
async def test_missing_quote_extension(net):
    w = net.worker_id
    err = await refused_by_client(net, forged(w, custom_cert(w.key, w.claims.encode(), None)))
    assert "certificate_extensions" in err.verdict.failed and "quote_format" in err.verdict.failed


@pytest.mark.asyncio
async def test_missing_claims_extension(net):
    w = net.worker_id
    err = await refused_by_client(net, forged(w, custom_cert(w.key, None, w.quote)))
    assert {"certificate_extensions", "report_data", "claims"} <= set(err.verdict.failed)


@pytest.mark.asyncio
async def test_unknown_critical_extension(net):
    w = net.worker_id
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    der = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(w.key.public_key())
           .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
           .add_extension(x509.UnrecognizedExtension(certs.OID_CLAIMS, w.claims.encode()), critical=True)
           .add_extension(x509.UnrecognizedExtension(certs.OID_QUOTE, w.quote), critical=True)
           .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.12345.99"), b"x"), critical=True)
           .sign(w.key, None).public_bytes(serialization.Encoding.DER))
    err = await refused_by_client(net, forged(w, der))
    assert err.verdict.failed == ["certificate_extensions"]


@pytest.mark.asyncio
async def test_server_refuses_forged_client_certificate(net):
    p = net.proxy_id
    thief = ed25519.Ed25519PrivateKey.generate()
    der = certs.make_certificate(thief, p.claims.encode(), p.quote)
    await refused_by_server(net, forged(p, der, key=thief))


@pytest.mark.asyncio
async def test_server_refuses_client_without_quote(net):
    await refused_by_server(net, Identity.create(None, role="client"))


@pytest.mark.asyncio
async def test_client_role_endpoint_accepts_quoteless_clients(dev_root, ids):
    """A proxy's client port: peers are clients, so a certificate without a quote is enough."""
    w, p = ids
    source = SnapshotSource.fixed(RegistrySnapshot(proxy_image_hashes=[image(p)], is_test=True))
    trust = dev_root.trust()

    async def handler(request):
        v = peer_verdict(request)
        return web.Response(text=v.claims.public_key.hex())

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = RaTlsSite(runner, "127.0.0.1", 0, identity=p, verifier=PeerVerifier(Policy("client", dev_trust=trust), source))
    await site.start()
    try:
        client = Identity.create(None, role="client")
        conn = RaTlsConnector(client, PeerVerifier(Policy("proxy", dev_trust=trust), source))
        async with aiohttp.ClientSession(connector=conn) as s:
            async with s.get(f"https://127.0.0.1:{site.port}/") as r:
                assert await r.text() == client.claims.public_key.hex()
        # a client whose claims name another key is refused even here
        thief = ed25519.Ed25519PrivateKey.generate()
        bad = forged(client, certs.make_certificate(thief, client.claims.encode(), None), key=thief)
        conn = RaTlsConnector(bad, PeerVerifier(Policy("proxy", dev_trust=trust), source))
        async with aiohttp.ClientSession(connector=conn) as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"https://127.0.0.1:{site.port}/") as r:
                    await r.read()
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_plain_tls_client_without_certificate_gets_nothing(net):
    """A client that presents no certificate is refused during the handshake."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(net.url, ssl=ctx) as r:
                await r.read()
    assert net.calls == []


@pytest.mark.asyncio
async def test_stale_registry_refuses(dev_root, ids):
    w, p = ids
    now = [0.0]

    async def fetch():
        return RegistrySnapshot(worker_image_hashes=[image(w)], is_test=True)

    src = SnapshotSource(fetch=fetch, max_age=10, clock=lambda: now[0])
    await src.refresh()
    verifier = PeerVerifier(Policy("worker", dev_trust=dev_root.trust()), src)
    assert (await verifier.verify_certificate(w.cert_der)).ok
    now[0] = 11
    v = await verifier.verify_certificate(w.cert_der)
    assert v.failed == ["registry", "tee_environment", "image_hash"]


@pytest.mark.asyncio
async def test_verifier_on_garbage_and_missing_certificates(dev_root):
    verifier = PeerVerifier(Policy("worker", dev_trust=dev_root.trust()), None)
    assert (await verifier.verify_certificate(None)).failed == ["certificate"]
    assert (await verifier.verify_certificate(b"\x30\x03abc")).failed == ["certificate"]


@pytest.mark.asyncio
async def test_rotation_presents_the_renewed_certificate(net, worker_provider):
    from node.tee.ratls import renew_forever

    made: list[Identity] = []

    def make() -> Identity:
        made.append(Identity.create(worker_provider, role="worker"))
        return made[-1]

    task = asyncio.create_task(renew_forever(make, [net.site], every=0.01))
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if made:
                break
        assert made
    finally:
        task.cancel()
    from node.tee.ratls import client_context

    _, writer = await asyncio.open_connection("127.0.0.1", net.site.port, ssl=client_context(net.proxy_id))
    presented = certs.read_certificate(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
    writer.close()
    assert presented.public_key in {m.claims.public_key for m in made}
    assert presented.public_key != net.worker_id.claims.public_key
    async with net.session(force_close=True) as s:  # and the renewed certificate verifies
        async with s.get(net.url) as r:
            assert r.status == 200


def test_simulated_identity_is_labelled(worker_provider):
    ident = Identity.create(worker_provider, role="worker")
    cert = x509.load_der_x509_certificate(ident.cert_der)
    assert "SIMULATED" in cert.subject.rfc4514_string()

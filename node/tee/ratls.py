"""RA-TLS: TLS 1.3 where each side proves, by its certificate, which code it runs.

Each node has an :class:`Identity`: a fresh Ed25519 key, claims naming that key, a quote
whose report data is SHA-512(claims), and a short-lived self-signed certificate carrying
quote and claims in critical extensions (:mod:`node.tee.certs`). Clients present the same
kind of certificate without a quote: a client is not a TEE, and a certificate without a
quote is accepted only by an endpoint whose policy says its peers are clients.

Why verification happens *after* the handshake: Python's ``ssl`` has no hook to judge a
certificate during the handshake, and OpenSSL would reject a self-signed certificate with
unknown critical extensions. So both contexts let OpenSSL accept any certificate, and the
peer's certificate is then verified completely — self-signature, validity period, critical
extensions, quote (dcap-qvl), registry policy, report data == SHA-512(claims), claims key
== certificate key — before a single application byte is exchanged:

- server side, :class:`RaTlsSite` puts a gate in front of aiohttp's protocol: bytes the
  client sends are held, the certificate is verified, and only then does aiohttp see the
  connection; a failed peer's connection is aborted without an answer;
- client side, :class:`RaTlsConnector` verifies the server's certificate as soon as the
  connection is made, before aiohttp writes the request; on failure it aborts and raises
  :class:`RaTlsError`.

A server must *ask* for the client certificate (``SSL_VERIFY_PEER``) yet not let OpenSSL
judge it. Python cannot install an OpenSSL verify callback, so :func:`_accept_any_peer_cert`
installs one returning 1 through ctypes on the context's ``SSL_CTX``, after checking that the
pointer it found really is that context (its verify mode read through OpenSSL must match).
If that check fails the server refuses to start rather than run unauthenticated.

Connections are tracked with their peer's image hash; when the registry snapshot changes,
:class:`ConnectionTracker` aborts those whose image was revoked (or that are simulated while
the registry lost its test flag). Verified dcap-qvl outcomes are cached by quote hash.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import logging
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import certs
from .cache import VerdictCache
from .claims import Claims
from .collateral import CollateralError, CollateralProvider
from .providers import QuoteProvider
from .quote import QuoteParseError, parse_quote
from .registry_source import RegistrySnapshot, SnapshotSource, StaleSnapshotError
from .verify import CHECK_NAMES, Check, Policy, Verdict, uses_dev_root, verify_quote

log = logging.getLogger(__name__)

MAX_PENDING_BYTES = 1 << 20  # held from a not-yet-verified client


class RaTlsError(aiohttp.ClientConnectionError):
    """The server's attestation did not verify; ``verdict`` says which check failed."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"RA-TLS peer refused: {verdict.reason()}")
        self.verdict = verdict


# --------------------------------------------------------------------------- identity
@dataclass
class Identity:
    """Our key, claims, quote and certificate (regenerate before ``not_after``)."""

    key: ed25519.Ed25519PrivateKey
    claims: Claims
    quote: bytes | None
    cert_der: bytes
    not_after: dt.datetime

    @classmethod
    def create(
        cls,
        provider: QuoteProvider | None,
        *,
        role: str | None = None,
        model_hash: bytes | None = None,
        operator: str | None = None,
        lifetime: dt.timedelta = certs.DEFAULT_LIFETIME,
        now: dt.datetime | None = None,
        key: ed25519.Ed25519PrivateKey | None = None,
    ) -> "Identity":
        """A new identity; ``provider`` None makes a client identity (no quote)."""
        key = key or ed25519.Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        claims = Claims(pub, role, model_hash, operator)
        enc = claims.encode()
        quote = provider.get_quote(claims.report_data()) if provider is not None else None
        now = now or dt.datetime.now(dt.timezone.utc)
        simulated = bool(getattr(provider, "simulated", False))
        cn = "cocoon ra-tls (SIMULATED TEE, development only)" if simulated else "cocoon ra-tls"
        der = certs.make_certificate(key, enc, quote, now=now, lifetime=lifetime, common_name=cn)
        return cls(key, claims, quote, der, now + lifetime)

    @property
    def cert_pem(self) -> bytes:
        return ("-----BEGIN CERTIFICATE-----\n" + _b64lines(self.cert_der) + "-----END CERTIFICATE-----\n").encode()

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _b64lines(b: bytes) -> str:
    import base64

    s = base64.b64encode(b).decode()
    return "".join(s[i : i + 64] + "\n" for i in range(0, len(s), 64))


# --------------------------------------------------------------------------- ssl contexts
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_ACCEPT_ALL = _VERIFY_CB(lambda preverify_ok, store_ctx: 1)  # kept alive for the process
_SSL_VERIFY_PEER, _SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x01, 0x02


def _libssl() -> ctypes.CDLL:
    import _ssl

    lib = ctypes.CDLL(_ssl.__file__)  # resolves through _ssl's own libssl
    lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
    lib.SSL_CTX_set_verify.restype = None
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    return lib


def _accept_any_peer_cert(ctx: ssl.SSLContext) -> None:
    """Request a peer certificate but let any through the handshake (judged afterwards)."""
    ctx.verify_mode = ssl.CERT_REQUIRED
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    lib = _libssl()
    want = _SSL_VERIFY_PEER | _SSL_VERIFY_FAIL_IF_NO_PEER_CERT
    if not ptr or lib.SSL_CTX_get_verify_mode(ptr) != want:
        raise RuntimeError("cannot locate the OpenSSL context of ssl.SSLContext; RA-TLS server unavailable")
    ctx.verify_mode = ssl.CERT_OPTIONAL  # flip and read back: proves we hold the right pointer
    if lib.SSL_CTX_get_verify_mode(ptr) != _SSL_VERIFY_PEER:
        raise RuntimeError("OpenSSL context pointer check failed; RA-TLS server unavailable")
    lib.SSL_CTX_set_verify(ptr, want, _ACCEPT_ALL)


def load_identity(ctx: ssl.SSLContext, identity: Identity) -> None:
    """(Re)load our certificate into a context; new handshakes use it (rotation)."""
    with tempfile.TemporaryDirectory(prefix="ratls-") as d:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        with open(key, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as f:
            f.write(identity.key_pem)
        with open(cert, "wb") as f:
            f.write(identity.cert_pem)
        ctx.load_cert_chain(cert, key)


def _base_context(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET  # no resumption: every connection shows its certificate
    return ctx


def server_context(identity: Identity) -> ssl.SSLContext:
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER)
    load_identity(ctx, identity)
    _accept_any_peer_cert(ctx)
    return ctx


def client_context(identity: Identity | None) -> ssl.SSLContext:
    """Client side: the server always sends its certificate; it is judged after the handshake."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # identity is the attestation, not a DNS name
    ctx.verify_mode = ssl.CERT_NONE
    if identity is not None:
        load_identity(ctx, identity)
    return ctx


# --------------------------------------------------------------------------- verification
@dataclass
class PeerVerifier:
    """Judges a peer certificate: structure, then the quote and our policy."""

    policy: Policy
    snapshots: SnapshotSource | None
    collateral: CollateralProvider | None = None
    cache: VerdictCache | None = field(default_factory=VerdictCache)
    clock: Callable[[], float] = time.time

    async def verify_certificate(self, data: bytes | None) -> Verdict:
        now = self.clock()
        v = Verdict()
        add = v.checks.append
        if not data:
            add(Check("certificate", False, "peer presented no certificate"))
            return v
        try:
            info = certs.read_certificate(data)
        except certs.CertificateError as e:
            add(Check("certificate", False, str(e)))
            return v
        if info.key_error:
            add(Check("certificate", False, info.key_error))
        elif not info.signature_ok:
            add(Check("certificate", False, "not validly self-signed by its own key"))
        else:
            add(Check("certificate", True, "self-signed Ed25519"))
        t = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        if t < info.not_before - certs.CLOCK_SKEW:
            add(Check("certificate_validity", False, f"not valid before {info.not_before:%Y-%m-%d %H:%M:%S}Z"))
        elif t > info.not_after:
            add(Check("certificate_validity", False, f"expired at {info.not_after:%Y-%m-%d %H:%M:%S}Z"))
        else:
            add(Check("certificate_validity", True, f"valid until {info.not_after:%Y-%m-%d %H:%M:%S}Z"))
        add(self._extensions_check(info))

        try:
            if self.snapshots is None:
                raise StaleSnapshotError("no registry snapshot or allow-list given")
            snapshot: RegistrySnapshot | None = self.snapshots.current()
            add(Check("registry", True, f"snapshot v{snapshot.version}{' (test network)' if snapshot.is_test else ''}"))
        except StaleSnapshotError as e:
            snapshot = None
            add(Check("registry", False, str(e)))

        if self.policy.role == "client":
            for name in CHECK_NAMES[: CHECK_NAMES.index("claims")]:
                add(Check(name, None, "peer is a client: not attested by quote"))
            check, v.claims = self._client_claims(info)
            add(check)
            add(Check("model_hash", None, "clients serve no model"))
            return v
        if info.quote is None:
            for name in CHECK_NAMES:
                add(Check(name, False, "certificate carries no quote"))
            return v
        crypto = None
        collateral = collateral_error = None
        try:
            qh = parse_quote(info.quote).quote_hash
            crypto = self.cache.get(qh) if self.cache is not None else None
        except QuoteParseError:
            pass
        if crypto is None and not uses_dev_root(info.quote, self.policy):
            if self.collateral is None:
                collateral_error = "no collateral source configured"
            else:
                try:
                    collateral = await self.collateral.get(info.quote)
                except CollateralError as e:
                    collateral_error = str(e)
        qv = verify_quote(
            info.quote,
            policy=self.policy,
            snapshot=snapshot,
            collateral=collateral,
            collateral_error=collateral_error,
            now=now,
            claims_bytes=info.claims if info.claims is not None else b"",
            expected_public_key=info.public_key,
            crypto=crypto,
        )
        if self.cache is not None and qv.crypto is not None and crypto is None:
            self.cache.put(qv.crypto)
        qv.checks[:0] = v.checks
        return qv

    def _extensions_check(self, info: certs.CertInfo) -> Check:
        problems = []
        if info.claims is None:
            problems.append("claims extension missing")
        elif not info.claims_critical:
            problems.append("claims extension is not critical")
        if info.quote is None:
            if self.policy.role != "client":
                problems.append("quote extension missing")
        elif not info.quote_critical:
            problems.append("quote extension is not critical")
        if info.unknown_critical:
            problems.append(f"unknown critical extensions {', '.join(info.unknown_critical)}")
        if problems:
            return Check("certificate_extensions", False, "; ".join(problems))
        return Check("certificate_extensions", True, "quote and claims, both critical" if info.quote else "claims, critical")

    @staticmethod
    def _client_claims(info: certs.CertInfo) -> tuple[Check, Claims | None]:
        from .claims import ClaimsError, decode

        if info.claims is None:
            return Check("claims", False, "no claims"), None
        try:
            c = decode(info.claims)
        except ClaimsError as e:
            return Check("claims", False, str(e)), None
        if c.public_key != info.public_key:
            return Check("claims", False, "claims key differs from the certificate key"), c
        if c.role not in (None, "client"):
            return Check("claims", False, f"peer claims role {c.role}, expected client"), c
        return Check("claims", True, f"client key {c.public_key.hex()[:16]}…"), c

    async def verify_ssl_object(self, sslobj: ssl.SSLObject | ssl.SSLSocket | None) -> Verdict:
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        return await self.verify_certificate(der)


# --------------------------------------------------------------------------- tracking
# Keyed by transport in plain dicts (uvloop's transports take no weak references); a closed
# transport's entry goes when the next connection is added.
_peers: dict[Any, Verdict] = {}


def _prune(conns: dict[Any, Verdict]) -> None:
    for t in [t for t in conns if t.is_closing()]:
        del conns[t]


def peer_verdict(request_or_transport: Any) -> Verdict | None:
    """The verdict of the peer behind an aiohttp request (or a transport), if verified."""
    transport = getattr(request_or_transport, "transport", request_or_transport)
    return _peers.get(transport) if transport is not None else None


@dataclass
class ConnectionTracker:
    """Live verified connections; aborts those the registry no longer allows."""

    role: str
    _conns: dict[Any, Verdict] = field(default_factory=dict)
    dropped: int = 0

    def add(self, transport: Any, verdict: Verdict) -> None:
        _prune(self._conns)
        _prune(_peers)
        self._conns[transport] = verdict
        _peers[transport] = verdict

    def live(self) -> int:
        return sum(1 for t in list(self._conns) if not t.is_closing())

    def allowed(self, verdict: Verdict, snap: RegistrySnapshot) -> bool:
        if self.role == "client" or verdict.image_hash is None:
            return True
        if verdict.simulated and not snap.is_test:
            return False
        return verdict.image_hash in snap.images_for(self.role)

    def on_snapshot(self, old: RegistrySnapshot | None, new: RegistrySnapshot) -> None:
        """SnapshotSource listener: drop connections whose image is no longer allowed."""
        for t, verdict in list(self._conns.items()):
            if t.is_closing():
                continue
            if not self.allowed(verdict, new):
                log.warning("dropping %s connection: image %s no longer allowed (registry v%d)",
                            self.role, verdict.image_hash.hex() if verdict.image_hash else "?", new.version)
                t.abort()
                self.dropped += 1


# --------------------------------------------------------------------------- aiohttp server
class _GatedProtocol(asyncio.Protocol):
    """Holds a connection until the client's certificate is verified, then hands it to aiohttp."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], verifier: PeerVerifier,
                 tracker: ConnectionTracker, pending: set["_GatedProtocol"]) -> None:
        self._factory, self._verifier, self._tracker = factory, verifier, tracker
        self._pending = pending
        self._buf: list[bytes] = []
        self._size = 0
        self._eof = False
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self.verdict: Verdict | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._pending.add(self)
        self._task = asyncio.get_running_loop().create_task(self._verify())

    async def _verify(self) -> None:
        t = self._transport
        assert t is not None
        try:
            verdict = await self._verifier.verify_ssl_object(t.get_extra_info("ssl_object"))
        except Exception as e:  # a verifier bug must not leave the gate open
            log.exception("RA-TLS verification crashed")
            verdict = Verdict([Check("certificate", False, f"verification error: {e}")])
        self.verdict = verdict
        self._pending.discard(self)
        if t.is_closing():
            return
        if not verdict.ok:
            log.warning("refusing %s peer %s: %s", self._verifier.policy.role,
                        t.get_extra_info("peername"), verdict.reason())
            t.abort()
            return
        self._tracker.add(t, verdict)
        inner = self._factory()
        t.set_protocol(inner)
        inner.connection_made(t)
        for chunk in self._buf:
            inner.data_received(chunk)
        self._buf.clear()
        if self._eof:
            inner.eof_received()

    def data_received(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_PENDING_BYTES and self._transport is not None:
            self._transport.abort()
            return
        self._buf.append(data)

    def eof_received(self) -> bool | None:
        self._eof = True  # replayed to aiohttp if the peer verifies
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._pending.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class RaTlsSite(web.TCPSite):
    """An aiohttp site that serves only peers whose RA-TLS certificate verifies."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int | None, *,
                 identity: Identity, verifier: PeerVerifier, **kw: Any) -> None:
        super().__init__(runner, host, port, ssl_context=server_context(identity), **kw)
        self.verifier = verifier
        self.tracker = ConnectionTracker(verifier.policy.role)
        self._pending: set[_GatedProtocol] = set()
        if verifier.snapshots is not None:
            verifier.snapshots.add_listener(self.tracker.on_snapshot)

    def rotate(self, identity: Identity) -> None:
        """Present a renewed certificate on new connections."""
        assert self._ssl_context is not None
        load_identity(self._ssl_context, identity)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            lambda: _GatedProtocol(server, self.verifier, self.tracker, self._pending),
            self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port

    async def stop(self) -> None:
        if self.verifier.snapshots is not None:
            self.verifier.snapshots.remove_listener(self.tracker.on_snapshot)
        for p in list(self._pending):
            p.close()
        await super().stop()


# --------------------------------------------------------------------------- aiohttp client
class RaTlsConnector(aiohttp.TCPConnector):
    """A connector that verifies the server's RA-TLS certificate before any request is sent."""

    def __init__(self, identity: Identity | None, verifier: PeerVerifier, **kw: Any) -> None:
        super().__init__(ssl=client_context(identity), **kw)
        self.verifier = verifier
        self.tracker = ConnectionTracker(verifier.policy.role)
        if verifier.snapshots is not None:
            verifier.snapshots.add_listener(self.tracker.on_snapshot)

    def rotate(self, identity: Identity) -> None:
        """Present a renewed certificate on new connections."""
        assert isinstance(self._ssl, ssl.SSLContext)
        load_identity(self._ssl, identity)

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        proto = await super()._create_connection(req, traces, timeout)
        transport = proto.transport
        verdict = await self.verifier.verify_ssl_object(
            transport.get_extra_info("ssl_object") if transport is not None else None
        )
        if not verdict.ok:
            if transport is not None:
                transport.abort()
            proto.close()
            raise RaTlsError(verdict)
        self.tracker.add(transport, verdict)
        return proto

    async def close(self, *a: Any, **kw: Any) -> Any:
        if self.verifier.snapshots is not None:
            self.verifier.snapshots.remove_listener(self.tracker.on_snapshot)
        return await super().close(*a, **kw)


async def renew_forever(
    make_identity: Callable[[], Identity],
    endpoints: list[RaTlsSite | RaTlsConnector],
    every: float = 3600.0,
) -> None:
    """Regenerate the identity (new key, quote, certificate) every ``every`` seconds.

    Certificates live a day (as in COCOON) and are renewed hourly, so a stolen certificate
    key is useful only briefly. Run it as a task next to the site or connector.
    """
    while True:
        await asyncio.sleep(every)
        try:
            ident = await asyncio.to_thread(make_identity)
        except Exception:  # keep the old certificate; it is valid for a while longer
            log.exception("RA-TLS identity renewal failed")
            continue
        for e in endpoints:
            e.rotate(ident)

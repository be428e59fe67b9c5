"""Choosing a proxy and trusting it: candidates from the registry, RA-TLS checked against it.

``auto`` orders the registry's active proxies by stake (the money a proxy loses if it cheats: the
reputation it has on chain) and then by age of registration, and takes the first one that answers,
passes attestation and lists models; the price of each is its ``/v1/models`` answer, and among the
reachable ones the cheapest (lowest coefficient of the wanted model) wins. A named proxy (its owner
address) is used or nothing is.

The attestation check is :class:`node.tee.ratls.PeerVerifier` (quote, image allowed for proxies,
claims key = certificate key, role proxy) plus one more, ``registered``: the proxy whose claims name
owner O is registered and active in the registry with the very key the certificate holds. It runs on
every new connection against the latest registry view, so a removal or revocation stops the proxy's
use at the next refresh (and the RA-TLS tracker drops live connections whose image was revoked).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import aiohttp
from pytoniq_core import Address

from node.link.endpoint import EndpointError, ProxyEndpoint, parse as parse_endpoint
from node.tee.ratls import Identity, PeerVerifier, RaTlsConnector, RaTlsError
from node.tee.verify import Check, Verdict
from wrappers import registry as R

from .chain import owner_address, raw

log = logging.getLogger(__name__)


def registered_check(v: Verdict, proxy: Optional[R.ProxyInfo]) -> Check:
    """The proxy behind this verdict is registered and active with the key its claims name."""
    c = v.claims
    if c is None:
        return Check("registered", False, "no claims to compare with the registry")
    if proxy is None:
        return Check("registered", False, "the proxy is not registered in the registry")
    try:
        claimed_owner = Address(c.operator) if c.operator else None
    except Exception:
        claimed_owner = None
    if claimed_owner is None or int.from_bytes(claimed_owner.hash_part, "big") != proxy.owner_hash:
        return Check("registered", False, f"the claims name operator {c.operator!r}, not the registered owner")
    if int.from_bytes(c.public_key, "big") != proxy.operator_key:
        return Check("registered", False, "the certificate key is not the operator key the registry holds")
    if not proxy.active:
        return Check("registered", False, "the proxy's stake is not active")
    return Check("registered", True, f"registered proxy {raw(owner_address(proxy.owner_hash))[:18]}…")


@dataclass
class ProxyVerifier(PeerVerifier):
    """PeerVerifier for role proxy plus the registry check of one expected proxy."""
    expected: Callable[[], Optional[R.ProxyInfo]] = field(default=lambda: None)

    async def verify_certificate(self, data: bytes | None) -> Verdict:
        v = await super().verify_certificate(data)
        v.checks.append(registered_check(v, self.expected()))
        return v


@dataclass
class Candidate:
    info: R.ProxyInfo
    endpoint: ProxyEndpoint

    @property
    def owner(self) -> Address:
        return owner_address(self.info.owner_hash)


def candidates(proxies: list[R.ProxyInfo], wanted: str = "auto") -> list[Candidate]:
    """The proxies to try, best first; ``wanted`` is ``auto`` or an owner address."""
    out = []
    target = None
    if wanted != "auto":
        target = int.from_bytes(Address(wanted).hash_part, "big")
    for p in proxies:
        if not p.active or (target is not None and p.owner_hash != target):
            continue
        try:
            ep = parse_endpoint(p.endpoint)
        except EndpointError:
            log.warning("proxy %x has an unreadable endpoint %r; skipped", p.owner_hash, p.endpoint)
            continue
        out.append(Candidate(p, ep))
    out.sort(key=lambda c: (-c.info.stake, c.info.registered_at, c.info.owner_hash))
    return out


def with_clients_address(c: Candidate, hostport: str) -> Candidate:
    """The same proxy reached at another clients address (a tunnel or port forward)."""
    host, _, port = hostport.rpartition(":")
    ep = ProxyEndpoint(host, int(port), c.endpoint.workers_host, c.endpoint.workers_port)
    return Candidate(c.info, ep)


class ProxyConnection:
    """An HTTPS session to one proxy's clients listener, attested on every new connection."""

    def __init__(self, cand: Candidate, base: PeerVerifier, expected: Callable[[], Optional[R.ProxyInfo]],
                 identity: Optional[Identity] = None, timeout: float = 600.0):
        self.cand = cand
        self.verifier = ProxyVerifier(policy=base.policy, snapshots=base.snapshots, collateral=base.collateral,
                                      cache=base.cache, expected=expected)
        self.connector = RaTlsConnector(identity, self.verifier, limit=64, keepalive_timeout=30)
        self.http = aiohttp.ClientSession(base_url=cand.endpoint.clients_url, connector=self.connector,
                                          timeout=aiohttp.ClientTimeout(total=None, sock_connect=10,
                                                                        sock_read=timeout))
        self.models: dict[str, dict] = {}
        self.last_verdict: Optional[Verdict] = None

    async def fetch_models(self) -> dict[str, dict]:
        async with self.http.get("/v1/models") as r:
            if r.status != 200:
                raise aiohttp.ClientResponseError(r.request_info, (), status=r.status,
                                                  message=f"/v1/models answered {r.status}")
            body = await r.json(content_type=None)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ValueError("the proxy's /v1/models is not a model list")
        self.models = {m["id"]: m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
        return self.models

    async def close(self) -> None:
        await self.http.close()


def describe_failure(e: BaseException) -> str:
    if isinstance(e, RaTlsError):
        return f"attestation failed: {e.verdict.reason()}"
    return f"{type(e).__name__}: {e}"

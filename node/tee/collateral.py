"""DCAP collateral: from a file, or fetched from a PCCS over aiohttp and cached.

Collateral (TCB info, QE identity, CRLs and their issuer chains) is what dcap-qvl needs
besides the quote. It is public and changes about monthly, so it is fetched per
(FMSPC, CA type), cached in memory and optionally on disk, and refetched when its
``nextUpdate`` passes. The PCCS URL is the server's base, e.g. ``https://pccs.example``;
the paths are those of Intel's PCS/PCCS v4 API.
"""

from __future__ import annotations

import asyncio
import binascii
import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol
from urllib.parse import unquote

import aiohttp
import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import serialization


class CollateralError(RuntimeError):
    """Collateral could not be had; the message says why."""


class CollateralProvider(Protocol):
    async def get(self, raw_quote: bytes) -> dcap_qvl.QuoteCollateralV3: ...


def collateral_from_json(text: str) -> dcap_qvl.QuoteCollateralV3:
    try:
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except ValueError as e:
        raise CollateralError(f"malformed collateral JSON: {e}") from None


def load_collateral_file(path: str | os.PathLike[str]) -> dcap_qvl.QuoteCollateralV3:
    """Read collateral in the JSON form of ``QuoteCollateralV3.to_json``."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise CollateralError(f"cannot read collateral file {path}: {e.strerror or e}") from None
    return collateral_from_json(text)


def next_update(c: dcap_qvl.QuoteCollateralV3) -> float:
    """The earliest ``nextUpdate`` of TCB info and QE identity, as a unix time."""
    times = []
    for doc in (c.tcb_info, c.qe_identity):
        s = json.loads(doc)["nextUpdate"]
        times.append(dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp())
    return min(times)


@dataclass
class FileCollateral:
    """Collateral from one file (offline verification, tests)."""

    path: str | os.PathLike[str]

    async def get(self, raw_quote: bytes) -> dcap_qvl.QuoteCollateralV3:
        return load_collateral_file(self.path)


def _raw_member(body: str, key: str) -> str:
    """The exact text of ``body[key]``: signatures cover those bytes, not a re-encoding."""
    start = body.find(f'"{key}"')
    if start < 0:
        raise CollateralError(f"PCCS answer has no {key!r}")
    colon = body.index(":", start + len(key) + 2)
    i = colon + 1
    while body[i] in " \t\r\n":
        i += 1
    _, end = json.JSONDecoder().raw_decode(body, i)
    return body[i:end]


def _crl_der(data: bytes) -> bytes:
    """PCCS servers answer CRLs as DER, PEM or hex; normalise to DER."""
    s = data.strip()
    if s.startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(s).public_bytes(serialization.Encoding.DER)
    try:
        return binascii.unhexlify(s)
    except (binascii.Error, ValueError):
        return data


@dataclass
class PccsCollateral:
    """Fetches collateral from a PCCS (or Intel PCS) and caches it per (FMSPC, CA)."""

    url: str
    cache_dir: str | os.PathLike[str] | None = None
    timeout: float = 15.0
    clock: Callable[[], float] = time.time
    _mem: dict[tuple[str, str], dcap_qvl.QuoteCollateralV3] = field(default_factory=dict, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    fetches: int = field(default=0, init=False)

    def _cache_file(self, key: tuple[str, str]) -> Path | None:
        return Path(self.cache_dir) / f"collateral-{key[0]}-{key[1]}.json" if self.cache_dir else None

    def _fresh(self, c: dcap_qvl.QuoteCollateralV3) -> bool:
        try:
            return self.clock() < next_update(c)
        except (KeyError, ValueError):
            return False

    async def get(self, raw_quote: bytes) -> dcap_qvl.QuoteCollateralV3:
        try:
            q = dcap_qvl.parse_quote(raw_quote)
            key = (q.fmspc().upper(), q.ca())
        except ValueError as e:
            raise CollateralError(f"cannot tell which collateral the quote needs: {e}") from None
        async with self._lock:
            c = self._mem.get(key)
            if c is not None and self._fresh(c):
                return c
            f = self._cache_file(key)
            if f is not None and f.exists():
                try:
                    c = collateral_from_json(f.read_text())
                    if self._fresh(c):
                        self._mem[key] = c
                        return c
                except (OSError, CollateralError):
                    pass
            c = await self._fetch(*key, q)
            self._mem[key] = c
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(c.to_json())
            return c

    async def _fetch(self, fmspc: str, ca: str, q: dcap_qvl.Quote) -> dcap_qvl.QuoteCollateralV3:
        self.fetches += 1
        base = self.url.rstrip("/")
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s:
                tcb_body, tcb_h = await self._get(s, f"{base}/tdx/certification/v4/tcb?fmspc={fmspc}")
                qe_body, qe_h = await self._get(s, f"{base}/tdx/certification/v4/qe/identity")
                crl_body, crl_h = await self._get(s, f"{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der")
                root_crl = await self._root_crl(s, base, q)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise CollateralError(f"PCCS {self.url} unreachable: {e or type(e).__name__}") from None
        tcb_text, qe_text = tcb_body.decode(), qe_body.decode()
        doc = {
            "pck_crl_issuer_chain": self._header(crl_h, "SGX-PCK-CRL-Issuer-Chain"),
            "root_ca_crl": root_crl.hex(),
            "pck_crl": _crl_der(crl_body).hex(),
            "tcb_info_issuer_chain": self._header(tcb_h, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"),
            "tcb_info": _raw_member(tcb_text, "tcbInfo"),
            "tcb_info_signature": json.loads(tcb_text)["signature"],
            "qe_identity_issuer_chain": self._header(qe_h, "SGX-Enclave-Identity-Issuer-Chain"),
            "qe_identity": _raw_member(qe_text, "enclaveIdentity"),
            "qe_identity_signature": json.loads(qe_text)["signature"],
        }
        return collateral_from_json(json.dumps(doc))

    async def _get(self, s: aiohttp.ClientSession, url: str) -> tuple[bytes, "aiohttp.typedefs.LooseHeaders"]:
        async with s.get(url) as r:
            if r.status != 200:
                raise CollateralError(f"PCCS answered {r.status} for {url}")
            return await r.read(), r.headers

    async def _root_crl(self, s: aiohttp.ClientSession, base: str, q: dcap_qvl.Quote) -> bytes:
        """PCCS serves the root CA CRL itself; Intel's PCS only via the root's CRL URL."""
        async with s.get(f"{base}/sgx/certification/v4/rootcacrl") as r:
            if r.status == 200:
                return _crl_der(await r.read())
        chain = q.cert_chain_pem_bytes()
        if not chain:
            raise CollateralError("no root CA CRL: PCCS has none and the quote carries no chain")
        root = x509.load_pem_x509_certificates(bytes(chain).rstrip(b"\0"))[-1]
        try:
            cdp = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
            url = cdp[0].full_name[0].value  # type: ignore[index,union-attr]
        except (x509.ExtensionNotFound, IndexError, TypeError):
            raise CollateralError("no root CA CRL: PCCS has none and the root names no CRL URL") from None
        body, _ = await self._get(s, url)
        return _crl_der(body)

    @staticmethod
    def _header(h: "aiohttp.typedefs.LooseHeaders", *names: str) -> str:
        for n in names:
            v = h.get(n)  # type: ignore[union-attr]
            if v:
                return unquote(v)
        raise CollateralError(f"PCCS answer lacks the {names[0]} header")

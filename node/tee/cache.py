"""Verdict cache: dcap-qvl outcomes keyed by SHA-256 of the quote.

Every RA-TLS connection from the same peer carries the same quote until its certificate
is renewed, so quote verification (and any collateral fetch) is done once per quote.
Only the dcap-qvl part is cached; registry policy (image hash, test flag) is re-evaluated
on every connection against the current snapshot, so a revocation is never hidden by the
cache. Entries expire after ``ttl`` or when their collateral's ``nextUpdate`` passes,
whichever is first; at most ``max_entries`` are kept (least recently used go first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from .verify import QuoteCrypto


@dataclass
class VerdictCache:
    ttl: float = 3600.0
    max_entries: int = 10_000
    clock: Callable[[], float] = time.time
    _d: "OrderedDict[bytes, tuple[float, QuoteCrypto]]" = field(default_factory=OrderedDict, init=False)
    hits: int = field(default=0, init=False)
    misses: int = field(default=0, init=False)

    def get(self, quote_hash: bytes) -> QuoteCrypto | None:
        item = self._d.get(quote_hash)
        if item is None or item[0] <= self.clock():
            if item is not None:
                del self._d[quote_hash]
            self.misses += 1
            return None
        self._d.move_to_end(quote_hash)
        self.hits += 1
        return item[1]

    def put(self, crypto: QuoteCrypto) -> None:
        if not crypto.cacheable:
            return
        expires = self.clock() + self.ttl
        if crypto.collateral_next_update is not None:
            expires = min(expires, crypto.collateral_next_update)
        self._d[crypto.quote_hash] = (expires, crypto)
        self._d.move_to_end(crypto.quote_hash)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)

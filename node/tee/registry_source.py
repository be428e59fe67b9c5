"""The registry's trust roots as seen off chain, and a source that keeps them fresh.

:class:`RegistrySnapshot` is what attestation policy needs from the registry contract:
the allowed worker and proxy image hashes, the allowed model hashes, the test flag and
the registry's version counter.

:class:`SnapshotSource` refreshes a snapshot by calling an injected coroutine
``fetch() -> RegistrySnapshot`` every ``interval`` seconds and tells listeners about
changes (the RA-TLS layer listens and drops connections whose image was revoked).
Wiring it to the chain is a small adapter that reads the registry contract's getters::

    async def fetch() -> RegistrySnapshot:
        return RegistrySnapshot(
            worker_image_hashes=frozenset(await registry.get_worker_image_hashes()),
            proxy_image_hashes=frozenset(await registry.get_proxy_image_hashes()),
            model_hashes=frozenset(await registry.get_model_hashes()),
            is_test=(await registry.get_params()).is_test,
            version=await registry.get_version(),
        )

    source = SnapshotSource(fetch=fetch, interval=30)
    await source.start()

(the getter names are those of the registry wrapper; only this adapter depends on them).
A snapshot older than ``max_age`` is *stale*: verification against it fails, as a node
must not keep trusting images that may have been revoked since (COCOON: 7200 s).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Union

log = logging.getLogger(__name__)

ROLES_WITH_IMAGES = ("worker", "proxy")


def _hashes(values: Iterable[bytes | str]) -> frozenset[bytes]:
    out = set()
    for v in values:
        b = bytes.fromhex(v) if isinstance(v, str) else bytes(v)
        if len(b) != 32:
            raise ValueError(f"hash must be 32 bytes, got {len(b)}")
        out.add(b)
    return frozenset(out)


@dataclass(frozen=True)
class RegistrySnapshot:
    worker_image_hashes: frozenset[bytes] = frozenset()
    proxy_image_hashes: frozenset[bytes] = frozenset()
    model_hashes: frozenset[bytes] = frozenset()
    is_test: bool = False
    version: int = 0

    def __post_init__(self) -> None:
        for name in ("worker_image_hashes", "proxy_image_hashes", "model_hashes"):
            object.__setattr__(self, name, _hashes(getattr(self, name)))

    def images_for(self, role: str) -> frozenset[bytes]:
        """Allowed image hashes for a peer role; clients are not attested by image."""
        if role == "worker":
            return self.worker_image_hashes
        if role == "proxy":
            return self.proxy_image_hashes
        raise ValueError(f"role {role!r} has no image list")

    def to_dict(self) -> dict[str, object]:
        return {
            "worker_image_hashes": sorted(h.hex() for h in self.worker_image_hashes),
            "proxy_image_hashes": sorted(h.hex() for h in self.proxy_image_hashes),
            "model_hashes": sorted(h.hex() for h in self.model_hashes),
            "is_test": self.is_test,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "RegistrySnapshot":
        unknown = set(d) - {"worker_image_hashes", "proxy_image_hashes", "model_hashes", "is_test", "version"}
        if unknown:
            raise ValueError(f"unknown registry snapshot keys: {sorted(unknown)}")
        return cls(
            worker_image_hashes=_hashes(d.get("worker_image_hashes", [])),  # type: ignore[arg-type]
            proxy_image_hashes=_hashes(d.get("proxy_image_hashes", [])),  # type: ignore[arg-type]
            model_hashes=_hashes(d.get("model_hashes", [])),  # type: ignore[arg-type]
            is_test=bool(d.get("is_test", False)),
            version=int(d.get("version", 0)),  # type: ignore[arg-type]
        )

    @classmethod
    def load(cls, path: str | Path) -> "RegistrySnapshot":
        return cls.from_dict(json.loads(Path(path).read_text()))


def revoked_images(old: RegistrySnapshot, new: RegistrySnapshot) -> dict[str, frozenset[bytes]]:
    """Image hashes per role that ``old`` allowed and ``new`` does not."""
    return {r: old.images_for(r) - new.images_for(r) for r in ROLES_WITH_IMAGES}


Listener = Callable[[RegistrySnapshot | None, RegistrySnapshot], Union[None, Awaitable[None]]]


class StaleSnapshotError(RuntimeError):
    """No snapshot, or the last one is older than the source's maximum age."""


@dataclass
class SnapshotSource:
    """Holds the current registry snapshot and refreshes it from an injected fetcher."""

    fetch: Callable[[], Awaitable[RegistrySnapshot]]
    interval: float = 30.0
    max_age: float = 7200.0
    clock: Callable[[], float] = time.monotonic
    _snapshot: RegistrySnapshot | None = field(default=None, init=False)
    _delivered: RegistrySnapshot | None = field(default=None, init=False)   # every listener has acted on it
    _fetched_at: float = field(default=0.0, init=False)
    _listeners: list[Listener] = field(default_factory=list, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    last_error: BaseException | None = field(default=None, init=False)

    @classmethod
    def fixed(cls, snapshot: RegistrySnapshot) -> "SnapshotSource":
        """A source that always returns one snapshot (tests, the CLI, offline tools)."""

        async def fetch() -> RegistrySnapshot:
            return snapshot

        src = cls(fetch=fetch, max_age=float("inf"))
        src._snapshot = src._delivered = snapshot
        src._fetched_at = src.clock()
        return src

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def age(self) -> float:
        return float("inf") if self._snapshot is None else self.clock() - self._fetched_at

    def current(self) -> RegistrySnapshot:
        """The snapshot to verify against; raises StaleSnapshotError if none is fresh."""
        if self._snapshot is None:
            raise StaleSnapshotError("no registry snapshot has been fetched yet")
        if self.age > self.max_age:
            raise StaleSnapshotError(
                f"registry snapshot is {self.age:.0f} s old (limit {self.max_age:.0f} s)"
            )
        return self._snapshot

    async def refresh(self) -> RegistrySnapshot:
        """Fetch once; notify listeners if anything changed since every listener last acted. Fetch
        errors propagate. A listener that raises does not keep the others from being told; the
        first error propagates after all of them ran, and the change is told again at the next
        refresh (listeners act on the snapshot as it is, so telling one twice is harmless), so a
        revocation is never lost to one listener's failure."""
        new = await self.fetch()
        if not isinstance(new, RegistrySnapshot):
            raise TypeError("fetch() must return a RegistrySnapshot")
        self._snapshot, self._fetched_at = new, self.clock()
        old = self._delivered
        if old != new:
            failed: BaseException | None = None
            for listener in list(self._listeners):
                try:
                    res = listener(old, new)
                    if inspect.isawaitable(res):
                        await res
                except Exception as e:
                    log.warning("a registry snapshot listener failed: %r", e)
                    failed = failed or e
            if failed is not None:
                raise failed
            self._delivered = new
        return new

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
                self.last_error = None
            except Exception as e:  # keep the old snapshot; it goes stale after max_age
                self.last_error = e
                log.warning("registry snapshot refresh failed: %s", e)

    async def start(self) -> None:
        """Fetch now (errors propagate), then keep refreshing in the background."""
        await self.refresh()
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def __aenter__(self) -> "SnapshotSource":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

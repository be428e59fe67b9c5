"""Registry snapshots: refresh, change notification, staleness, revocation diff."""

from __future__ import annotations

import asyncio

import pytest

from node.tee.registry_source import (
    RegistrySnapshot,
    SnapshotSource,
    StaleSnapshotError,
    revoked_images,
)

A, B = b"\xaa" * 32, b"\xbb" * 32


def test_snapshot_validation_and_json_round_trip(tmp_path):
    s = RegistrySnapshot(worker_image_hashes=[A.hex()], proxy_image_hashes=[B], is_test=True, version=7)
    assert s.worker_image_hashes == frozenset([A]) and s.images_for("proxy") == frozenset([B])
    p = tmp_path / "s.json"
    import json

    p.write_text(json.dumps(s.to_dict()))
    assert RegistrySnapshot.load(p) == s
    with pytest.raises(ValueError):
        RegistrySnapshot(worker_image_hashes=[b"short"])
    with pytest.raises(ValueError):
        RegistrySnapshot.from_dict({"workers": []})
    with pytest.raises(ValueError):
        s.images_for("client")


def test_revoked_images():
    old = RegistrySnapshot(worker_image_hashes=[A, B], proxy_image_hashes=[A])
    new = RegistrySnapshot(worker_image_hashes=[B], proxy_image_hashes=[A])
    assert revoked_images(old, new) == {"worker": frozenset([A]), "proxy": frozenset()}


@pytest.mark.asyncio
async def test_refresh_notifies_only_on_change_and_keeps_last_on_error():
    snaps = [RegistrySnapshot(version=1), RegistrySnapshot(version=1), RegistrySnapshot(version=2)]
    seen = []

    async def fetch():
        if not snaps:
            raise ConnectionError("chain down")
        return snaps.pop(0)

    src = SnapshotSource(fetch=fetch, interval=0.01)
    with pytest.raises(StaleSnapshotError):
        src.current()
    src.add_listener(lambda old, new: seen.append((old and old.version, new.version)))

    async def async_listener(old, new):
        seen.append(("async", new.version))

    src.add_listener(async_listener)
    await src.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if src.last_error is not None:
                break
        assert seen == [(None, 1), ("async", 1), (1, 2), ("async", 2)]
        assert isinstance(src.last_error, ConnectionError)
        assert src.current().version == 2  # kept
    finally:
        await src.stop()


@pytest.mark.asyncio
async def test_snapshot_goes_stale():
    now = [0.0]

    async def fetch():
        return RegistrySnapshot(version=1)

    src = SnapshotSource(fetch=fetch, max_age=100, clock=lambda: now[0])
    await src.refresh()
    now[0] = 99
    assert src.current().version == 1
    now[0] = 101
    with pytest.raises(StaleSnapshotError, match="old"):
        src.current()


@pytest.mark.asyncio
async def test_fetch_must_return_a_snapshot():
    async def fetch():
        return {"version": 1}

    with pytest.raises(TypeError):
        await SnapshotSource(fetch=fetch).refresh()


@pytest.mark.asyncio
async def test_a_failing_listener_neither_stops_the_others_nor_loses_the_change():
    """A revocation reaches every listener even when one of them fails, and is told again at the
    next refresh (the snapshot itself has not changed again) until every listener has acted on it."""
    snaps = [RegistrySnapshot(version=1), RegistrySnapshot(version=2), RegistrySnapshot(version=2),
             RegistrySnapshot(version=2)]
    seen, failures = [], [1]

    async def fetch():
        return snaps.pop(0)

    def flaky(old, new):
        if new.version == 2 and failures:
            failures.pop()
            raise ConnectionError("chain down while re-checking")
        seen.append(("flaky", old and old.version, new.version))

    src = SnapshotSource(fetch=fetch)
    src.add_listener(flaky)
    src.add_listener(lambda old, new: seen.append(("other", old and old.version, new.version)))
    await src.refresh()
    with pytest.raises(ConnectionError):
        await src.refresh()                      # v2: the first listener fails, the second still acts
    assert seen == [("flaky", None, 1), ("other", None, 1), ("other", 1, 2)]
    assert src.current().version == 2
    await src.refresh()                          # v2 again: told again, this time to both
    assert seen[3:] == [("flaky", 1, 2), ("other", 1, 2)]
    await src.refresh()                          # nothing new once every listener acted
    assert len(seen) == 5

"""The registry snapshot comes from the registry contract itself: a revocation on chain reaches the
attestation layer's listeners at the next refresh."""
from __future__ import annotations

import asyncio

import pytest

from node.tee.registry_chain import read_snapshot, registry_fetch
from node.tee.registry_source import SnapshotSource, revoked_images
from wrappers import registry as R
from wrappers.chain.contract import Instant
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider

IMG, MODEL = 0xAB << 248, 0xCD << 248


@pytest.mark.parametrize("lang", ["func", "tolk"])
def test_snapshot_follows_the_registry(lang):
    c = EmbeddedChain()
    owner = c.treasury("owner")
    params = R.NetworkParams(staking=R.Staking(treasury=owner.address), is_test=True)
    reg = Instant(R.Registry.from_init(EmbeddedProvider(c), owner.address, params, lang=lang,
                                       worker_images={IMG: 1}, proxy_images={IMG + 1: 1}, models={MODEL: 1}))
    reg.send_deploy(owner)
    snap = read_snapshot(c.get_method, reg.address)
    assert snap.worker_image_hashes == {IMG.to_bytes(32, "big")}
    assert snap.proxy_image_hashes == {(IMG + 1).to_bytes(32, "big")}
    assert snap.model_hashes == {MODEL.to_bytes(32, "big")} and snap.is_test and snap.version == 0

    seen = []

    async def scenario():
        src = SnapshotSource(fetch=registry_fetch(c.get_method, reg.address))
        src.add_listener(lambda old, new: seen.append(revoked_images(old, new) if old else None))
        await src.refresh()
        reg.send(owner, R.revoke("worker_image", IMG))   # tighten now: revoked on chain at once
        new = await src.refresh()
        return new

    new = asyncio.run(scenario())
    assert new.worker_image_hashes == frozenset() and new.version == 1
    assert seen[-1]["worker"] == {IMG.to_bytes(32, "big")} and seen[-1]["proxy"] == frozenset()

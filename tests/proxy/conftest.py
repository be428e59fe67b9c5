"""A local network per test module (chain server process, registry, dev root), shared by its tests."""
from __future__ import annotations

import pytest

from tests.procs import Procs

from tests.devnet_kit import Devnet


@pytest.fixture(scope="module")
def module_procs(tmp_path_factory):
    p = Procs(tmp_path_factory.mktemp("procs"))
    try:
        yield p
    finally:
        p.stop_all()


def make_devnet(module_procs, tmp_path_factory, models: dict) -> Devnet:
    net = Devnet(module_procs, tmp_path_factory.mktemp("devnet"))
    net.start(models)
    return net

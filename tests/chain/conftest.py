"""Fixtures of the chain server tests."""
from __future__ import annotations

import pytest

from tests.chain.server import ChainServer


@pytest.fixture
def chain_server(procs, tmp_path):
    """A running `cocoon chain serve` with its state in a fresh folder."""
    return ChainServer(procs, tmp_path / "chain-state").start()

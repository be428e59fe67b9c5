"""Shared fixtures for the TEE tests: the real Intel quote fixtures and a development root."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from node.tee.collateral import load_collateral_file
from node.tee.providers import SimulatedProvider
from node.tee.simulated import DevRoot, SimulatedTdx, default_measurements


def fixtures_dir() -> Path:
    """``<repo>/../shared/fixtures/tdx``, or ``$COCOON_FIXTURES/tdx`` when set."""
    env = os.environ.get("COCOON_FIXTURES")
    base = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "fixtures"
    return base / "tdx"


#: The fixture collateral's validity window contains this instant (see the fixture README).
FIXTURE_TIME = int(dt.datetime(2025, 6, 25, tzinfo=dt.timezone.utc).timestamp())
#: Well after the fixture collateral's nextUpdate (2025-07-19).
AFTER_EXPIRY = int(dt.datetime(2025, 8, 1, tzinfo=dt.timezone.utc).timestamp())


@pytest.fixture(scope="session")
def tdx_dir() -> Path:
    d = fixtures_dir()
    if not (d / "tdx_quote").exists():
        pytest.skip(f"TDX fixtures not found in {d}: COCOON_FIXTURES must name the folder that holds tdx/ "
                    f"(now {d.parent})")
    return d


@pytest.fixture(scope="session")
def intel_quote(tdx_dir: Path) -> bytes:
    return (tdx_dir / "tdx_quote").read_bytes()


@pytest.fixture(scope="session")
def intel_collateral(tdx_dir: Path):
    return load_collateral_file(tdx_dir / "tdx_quote_collateral.json")


@pytest.fixture(scope="session")
def dev_root() -> DevRoot:
    return DevRoot.generate()


@pytest.fixture(scope="session")
def other_dev_root() -> DevRoot:
    return DevRoot.generate()


@pytest.fixture(scope="session")
def worker_tee(dev_root: DevRoot) -> SimulatedTdx:
    return SimulatedTdx(dev_root, default_measurements("worker-image"))


@pytest.fixture(scope="session")
def proxy_tee(dev_root: DevRoot) -> SimulatedTdx:
    return SimulatedTdx(dev_root, default_measurements("proxy-image"))


@pytest.fixture(scope="session")
def worker_provider(worker_tee: SimulatedTdx) -> SimulatedProvider:
    return SimulatedProvider(worker_tee)


@pytest.fixture(scope="session")
def proxy_provider(proxy_tee: SimulatedTdx) -> SimulatedProvider:
    return SimulatedProvider(proxy_tee)

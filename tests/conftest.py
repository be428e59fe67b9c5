"""Shared fixtures. Contract tests take ``lang`` and so run once for the FunC and once for the Tolk
build: a behaviour that differs between the two fails one of the runs."""
from __future__ import annotations

import pytest

LANGS = ("func", "tolk")


@pytest.fixture(params=LANGS)
def lang(request) -> str:
    return request.param


def per_language(factory):
    """A fixture giving ``factory(lang)``'s environment, built once per language and restored to its
    first snapshot before every test, so each test starts from the same deployed state cheaply.
    The environment must have a ``chain`` (an EmbeddedChain)."""
    cache: dict[str, tuple] = {}

    @pytest.fixture
    def env(lang):
        if lang not in cache:
            e = factory(lang)
            e.base_snapshot = e.chain.snapshot()  # property tests restore it before each example
            cache[lang] = (e, e.base_snapshot)
        e, snap = cache[lang]
        e.chain.restore(snap)
        return e

    return env


@pytest.fixture
def procs(tmp_path):
    """Real processes for a service test (tests/procs.py): each stopped by pid when the test ends."""
    from tests.procs import Procs

    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()

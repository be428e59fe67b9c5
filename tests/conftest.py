"""Shared fixtures. Contract tests take ``lang`` and so run once for the FunC and once for the Tolk
build: a behaviour that differs between the two fails one of the runs."""
from __future__ import annotations

import pytest

LANGS = ("func", "tolk")


@pytest.fixture(params=LANGS)
def lang(request) -> str:
    return request.param

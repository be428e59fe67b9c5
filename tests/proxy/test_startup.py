"""`cocoon proxy run` refuses to start, with one line naming the failed check, unless it is registered
with this endpoint and operator key, its image is allowed and its stake active; then it serves."""
from __future__ import annotations

import subprocess

import pytest

from tests.procs import free_port

from .conftest import make_devnet
from tests.devnet_kit import image_of
from .kit import proxy_argv, start_proxy




@pytest.fixture(scope="module")
def net(module_procs, tmp_path_factory):
    n = make_devnet(module_procs, tmp_path_factory, {"m": image_of("some-model")})
    yield n
    n.close()


def refused(net, label, *extra, register=None) -> str:
    p = net.party(label)
    cport, wport, mport = free_port(), free_port(), free_port()
    if register:
        net.register_proxy(p, register.format(c=cport, w=wport))
    argv = proxy_argv(net, p, net.dir / f"{label}-state", cport, wport, mport, *extra)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr.strip().splitlines()[-1]


def test_unregistered_proxy_is_refused(net):
    line = refused(net, "p-unregistered")
    assert "is not registered in the registry" in line and "register-proxy" in line


def test_other_endpoint_is_refused(net):
    from wrappers.stake import ROLE_PROXY

    net.stake(net.party("p-endpoint"), ROLE_PROXY, 60 * 10**9)
    line = refused(net, "p-endpoint", register="127.0.0.1:1 127.0.0.1:2")
    assert "lists the endpoint '127.0.0.1:1 127.0.0.1:2'" in line


def test_image_not_allowed_is_refused(net):
    from wrappers.stake import ROLE_PROXY

    net.stake(net.party("p-image"), ROLE_PROXY, 60 * 10**9)
    line = refused(net, "p-image", "--image", "unknown-image", register="127.0.0.1:{c} 127.0.0.1:{w}")
    assert f"image {image_of('unknown-image').hex()} is not allowed" in line


def test_registered_proxy_serves_and_shows_status(net):
    pp = start_proxy(net, "p-good")
    h = pp.health()
    assert h["ok"] and h["workers"] == 0
    assert "cocoon_proxy_workers_connected 0.0" in pp.metrics()
    out = subprocess.run([pp.argv[0], "proxy", "status", "--state", str(pp.state)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "clients:          0 channel(s)" in out.stdout
    net.procs.stop(pp.proc)

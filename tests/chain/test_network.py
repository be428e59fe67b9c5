"""node.chain, the async chain access services use: keys, wallets, sending, contract objects, the
faucet and the clock, the same on the embedded chain and on the chain server; no click."""
from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys

import pytest

from node.chain import CocoonError, keys_from_words, load_keys, new_mnemonic, open_network, write_mnemonic
from wrappers import registry as R
from wrappers import TON


def test_importing_the_chain_layer_loads_no_click():
    code = ("import sys, node.chain, node.chain.server, wrappers.chain.http; "
            "assert 'click' not in sys.modules, 'click was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_keys(tmp_path, monkeypatch):
    words = new_mnemonic()
    f = tmp_path / "k" / "me.words"
    write_mnemonic(f, words)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    with pytest.raises(CocoonError, match="already exists"):
        write_mnemonic(f, new_mnemonic())
    assert load_keys(str(f)).public == keys_from_words(" ".join(words), "x").public
    monkeypatch.setenv("COCOON_MNEMONIC", " ".join(words))
    assert load_keys().public == keys_from_words(" ".join(words), "x").public
    seed = tmp_path / "seed"
    seed.write_text("11" * 32)
    assert load_keys(key_file=str(seed)).private[:32] == b"\x11" * 32
    seed.write_text("11" * 31)
    with pytest.raises(CocoonError, match="32-byte"):
        load_keys(key_file=str(seed))
    (tmp_path / "bad.words").write_text(" ".join(words[:23] + ["zoo"]))
    with pytest.raises(CocoonError) as e:
        load_keys(str(tmp_path / "bad.words"))
    assert "not a valid 24-word" in str(e.value) and words[0] not in str(e.value)
    monkeypatch.delenv("COCOON_MNEMONIC")
    with pytest.raises(CocoonError, match="no key"):
        load_keys()
    with pytest.raises(CocoonError, match="unknown network"):
        asyncio.run(open_network("devnet"))


async def _story(name: str, state_file=None) -> dict:
    """Deploy a registry from a fresh v4r2 wallet, read it through the async reader, move time."""
    net = await open_network(name, state_file)
    try:
        progress = []
        from node.chain import keys_from_seed

        w = await net.wallet(keys_from_seed(b"\x07" * 32))
        v5 = await net.wallet(keys_from_seed(b"\x08" * 32), "v5r1")
        params = R.NetworkParams(staking=R.Staking(treasury=w.address), governance_delay=60)
        si = R.state_init(R.registry_code("tolk"), R.initial_data(w.address, params))
        addr = R.address_of(si)
        txs = await net.send(w, addr, TON, None, state_init=si, bounce=False,
                             on_progress=lambda waited, timeout: progress.append(waited))
        rd = net.contract(R.Registry, addr)
        t0 = await net.now()
        await net.fund(v5.address, 3 * TON)
        t1 = await net.advance(3600)
        bad = None
        try:
            await net.get_method(w.address, "no_such_getter", [])
        except CocoonError as e:
            bad = str(e)
        return {"wallet": w.address.to_str(), "v5": v5.address.to_str(), "registry": addr.to_str(),
                "status": await net.status(addr), "deploy": [(t.account.to_str(), t.success, t.deploy) for t in txs],
                "owner": (await rd.get_owner())[0].to_str(), "version": await rd.get_version(), "params": await rd.get_params(),
                "allowed": await rd.is_allowed("worker_image", 5), "balance": await net.balance(addr),
                "v5_balance": await net.balance(v5.address), "time": t1 - t0, "bad_getter": bad is not None}
    finally:
        await net.close(save=False)


def test_same_story_on_the_embedded_chain_and_the_server(chain_server, tmp_path):
    embedded = asyncio.run(_story("embedded", tmp_path / "chain.json"))
    served = asyncio.run(_story(chain_server.url))
    assert embedded == served
    assert served["status"] == "active" and served["deploy"][-1][1:] == (True, True)
    assert served["owner"] == served["wallet"] and served["time"] == 3600 and served["bad_getter"]


def test_dev_only_operations_are_refused_elsewhere():
    from node.chain.network import Network

    net = Network("testnet", provider=None)
    with pytest.raises(CocoonError, match="only on the embedded and local chains"):
        asyncio.run(net.fund(None, 1))
    with pytest.raises(CocoonError, match="only on the embedded and local chains"):
        asyncio.run(net.advance(1))


def test_wallet_commands(tmp_path):
    from click.testing import CliRunner

    from node.cli import main

    runner = CliRunner()
    out = tmp_path / "keys" / "me.words"
    r = runner.invoke(main, ["wallet", "new", "--out", str(out)])
    assert r.exit_code == 0, r.output
    words = out.read_text().split()
    assert len(words) == 24 and stat.S_IMODE(os.stat(out).st_mode) == 0o600
    address = r.output.strip()
    assert len(r.output.strip().splitlines()) == 1 and not any(w in r.output.split() for w in words)
    assert address.startswith("UQ")  # non-bounceable, as wallets show their own address
    r = runner.invoke(main, ["wallet", "new", "--out", str(out)])
    assert r.exit_code == 1 and "already exists" in r.output and out.read_text().split() == words
    r = runner.invoke(main, ["wallet", "new", "--out", str(tmp_path / "t.words"), "--network", "testnet"])
    assert r.exit_code == 0 and r.output.startswith("0Q")  # the test flag
    state = str(tmp_path / "chain.json")
    r = runner.invoke(main, ["wallet", "fund", "2.5", "--mnemonic-file", str(out), "--state-file", state])
    assert r.exit_code == 0 and "with 2.5 TON; balance 2.5 TON" in r.output, r.output
    r = runner.invoke(main, ["wallet", "show", "--mnemonic-file", str(out), "--state-file", state])
    assert f"address   {address}" in r.output and "balance   2.5 TON" in r.output and "state     uninit" in r.output
    r = runner.invoke(main, ["wallet", "show", "--mnemonic-file", str(out), "--state-file", state, "--wallet", "v5r1"])
    assert "state     nonexist" in r.output and address not in r.output
    r = runner.invoke(main, ["wallet", "fund", "1", "--mnemonic-file", str(out), "--network", "mainnet"])
    assert r.exit_code == 1 and "only on the embedded and local chains" in r.output
    r = runner.invoke(main, ["wallet", "fund", "1", "--mnemonic-file", str(out), "--network", "devnet"])
    assert r.exit_code == 2 and "unknown network" in r.output


@pytest.mark.parametrize("where", ["embedded", "server"])
def test_sends_work_when_the_chain_clock_runs_ahead_of_the_wall_clock(where, chain_server, tmp_path):
    import time

    from node.chain import keys_from_seed

    async def run():
        net = await open_network(chain_server.url if where == "server" else "embedded", tmp_path / "c.json")
        try:
            w4 = await net.wallet(keys_from_seed(b"\x31" * 32))
            w5 = await net.wallet(keys_from_seed(b"\x32" * 32), "v5r1")
            while await net.now() < time.time() + 400 * 86400:  # time travel past the wall clock
                await net.advance(300 * 86400)
            return [(await net.send(w, w4.address, TON, bounce=False))[0].success for w in (w4, w5)]
        finally:
            await net.close(save=False)

    assert asyncio.run(run()) == [True, True]

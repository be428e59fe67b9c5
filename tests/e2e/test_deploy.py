"""`cocoon deploy`: the registry deployed from a TOML file, idempotently, verified and recorded.

Every run goes through the CLI (click's CliRunner on `cocoon`), with the embedded chain in a
temporary state file and records in a temporary directory. Expectations are computed here from the
committed artifacts and the example files' values, not through the deploy package.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytoniq_core import Address

from node.cli import main
from wrappers import registry as R
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider
from wrappers import TON

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scripts" / "deploy" / "examples"


def artifact(name: str, lang: str = "tolk") -> dict:
    return json.loads((ROOT / "contracts" / "build" / f"{name}.{lang}.json").read_text())


def example_params(owner: Address, governance_delay: int = 60, unbonding: int = 604800) -> R.NetworkParams:
    """The parameters written in the example files, spelled out."""
    return R.NetworkParams(
        staking=R.Staking(treasury=owner, min_worker_stake=10 * TON, min_proxy_stake=50 * TON,
                          unbonding_period=unbonding, slash_bps=5000, reporter_bps=1000),
        economics=R.Economics(price_per_token=20, worker_fee_per_token=16, prompt_mult=10000, cached_mult=1000,
                              completion_mult=40000, reasoning_mult=40000, min_escrow_deposit=1 * TON,
                              close_delay=3600),
        is_test=True, governance_delay=governance_delay, max_proxies=64)


def v4r2_address(private: bytes) -> Address:
    from pytoniq import WalletV4R2

    return asyncio.run(WalletV4R2.from_private_key(EmbeddedProvider(EmbeddedChain()), private, version="v4r2")).address


def expected_address(owner: Address, params: R.NetworkParams, lang: str = "tolk") -> Address:
    from pytoniq_core import Cell
    import base64

    code = lambda n: Cell.one_from_boc(base64.b64decode(artifact(n, lang)["code_boc"]))
    data = R.initial_data(owner, params, R.ChildCodes(code("stake"), code("escrow"), code("reputation")))
    return R.address_of(R.state_init(code("registry"), data))


class Deployer:
    """Runs `cocoon deploy` on a temporary embedded chain and counts the transactions it executes."""

    def __init__(self, tmp: Path, monkeypatch):
        from nacl.bindings import crypto_sign_seed_keypair

        self.tmp = tmp
        self.state = tmp / "chain" / "chain.json"
        self.records = tmp / "records"
        seed = hashlib.sha256(b"deploy-test-owner").digest()
        self.key = tmp / "owner.key"
        self.key.write_text(seed.hex())
        self.owner = v4r2_address(crypto_sign_seed_keypair(seed)[1])
        self.executed = 0
        real = EmbeddedChain._execute

        def counting(chain, q):
            self.executed += 1
            return real(chain, q)

        monkeypatch.setattr(EmbeddedChain, "_execute", counting)

    def config(self, example: str = "embedded", name: str = "deploy.toml", **values: str) -> Path:
        """A copy of an example file with the owner's key file and some values replaced."""
        text = (EXAMPLES / f"{example}.toml").read_text()
        text = re.sub(r"^mnemonic_env = .*$", f'key_file = "{self.key}"', text, count=1, flags=re.M)
        for key, value in values.items():
            text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
            assert n == 1, key
        p = self.tmp / name
        p.write_text(text)
        return p

    def __call__(self, *args, code: int = 0, records: bool = True) -> str:
        argv = ["deploy", *map(str, args), "--state-file", str(self.state)]
        if records:
            argv += ["--record-dir", str(self.records)]
        self.executed = 0
        r = CliRunner().invoke(main, argv)
        out = r.output
        assert "Traceback" not in out, out
        assert r.exception is None or isinstance(r.exception, SystemExit), out
        assert r.exit_code == code, f"exit {r.exit_code}, wanted {code}\n{out}"
        if code:
            errors = [line for line in out.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1, out
        return out

    def chain(self) -> EmbeddedChain:
        return EmbeddedChain.load(self.state)

    def record(self, address: Address, network: str = "embedded") -> dict:
        name = address.to_str(is_bounceable=True, is_test_only=network == "testnet")
        return json.loads((self.records / f"{network}-{name}.json").read_text())


@pytest.fixture
def d(tmp_path, monkeypatch) -> Deployer:
    monkeypatch.chdir(tmp_path)
    return Deployer(tmp_path, monkeypatch)


def total(out: str, what: str) -> int:
    """A nanoTON figure from the cost summary: what = 'total fees' or 'the wallet pays'."""
    m = re.search(rf"{what} [0-9.]+ TON = (\d+) nanoTON", out)
    assert m, out
    return int(m.group(1))


# ---------------------------------------------------------------------------------------- deploy
def test_deploy_verifies_and_a_second_run_sends_nothing(d):
    cfg = d.config()
    params = example_params(d.owner)
    addr = expected_address(d.owner, params)

    out = d(cfg)
    assert d.executed >= 2   # at least the wallet's transaction and the registry's
    assert "ok          registry" in out and "23 of 23 checks pass" in out

    # on chain: the artifacts' code, the child codes, the parameters of the file, the owner
    chain = d.chain()
    status, code, _ = chain.state(addr)
    assert status == "active" and code.hash.hex() == artifact("registry")["code_hash"]
    rd = R.RegistryReader(chain.get_method, addr)
    codes = rd.child_codes()
    for n in ("stake", "escrow", "reputation"):
        assert getattr(codes, n).hash.hex() == artifact(n)["code_hash"]
    assert rd.params() == params
    assert rd.owner()[0] == d.owner
    assert chain.balance(addr) > 0.99 * TON

    # the record: addresses, code hashes from the artifacts, the transactions that really happened
    rec = d.record(addr)
    assert Address(rec["registry"]) == addr and rec["network"] == "embedded" and rec["language"] == "tolk"
    assert Address(rec["owner"]) == d.owner
    for n in ("registry", "stake", "escrow", "reputation"):
        assert rec["code_hashes"][n]["code_hash"] == artifact(n)["code_hash"]
    assert rec["params"]["governance_delay"] == 60 and rec["params"]["staking.min_proxy_stake"] == 50 * TON
    assert rec["verification"]["ok"] and rec["verification"]["failed"] == []
    [tx] = rec["transactions"]
    assert tx["action"] == "deploy" and tx["ok"]
    assert tx["registry_tx"] == chain.shard_account(addr).last_trans_hash.hex()
    assert tx["wallet_tx"] == chain.shard_account(d.owner).last_trans_hash.hex()
    assert tx["wallet_debit"] == tx["fees"] + tx["registry_gain"]   # nothing else was paid
    assert (d.state.parent / "registry.txt").read_text().strip() == addr.to_str()

    # the same file again: the registry is found, nothing is sent, the chain does not change
    before = d.state.read_bytes()
    out = d(cfg)
    assert d.executed == 0
    assert "nothing to send" in out and "ok          registry" in out
    assert d.state.read_bytes() == before
    again = d.record(addr)
    assert again["verification"]["checked_at"] >= rec["verification"]["checked_at"]
    for r in (rec, again):
        del r["verification"]["checked_at"]
    assert again == rec   # only the time of the verification moved

    # a dry run now plans nothing and leaves the chain as it was
    out = d(cfg, "--dry-run")
    assert "plan        0 message(s)" in out and d.state.read_bytes() == before


def test_dry_run_on_the_embedded_chain_measures_the_real_cost(d):
    cfg = d.config()
    addr = expected_address(d.owner, example_params(d.owner))
    out = d(cfg, "--dry-run")
    assert "nothing was sent" in out
    assert not d.state.exists() and not d.records.exists()   # nothing kept, nothing recorded
    assert f"to      {addr.to_str()} (non-bounceable)" in out
    assert "value   1 TON" in out and f"init    code {artifact('registry')['code_hash']}" in out
    fees, debit = total(out, "total fees"), total(out, "the wallet pays")
    assert 0 < fees < debit and debit > 1 * TON

    d(cfg)
    [tx] = d.record(addr)["transactions"]
    assert (tx["fees"], tx["wallet_debit"]) == (fees, debit)


def test_dry_run_for_testnet_is_offline_and_prints_every_message(d, monkeypatch):
    from pytoniq import LiteBalancer
    from pytoniq_core.crypto.keys import mnemonic_new, mnemonic_to_private_key

    def no_network(*a, **kw):
        raise AssertionError("a dry run must not connect")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(LiteBalancer, "from_testnet_config", classmethod(no_network))
    words = mnemonic_new(24)
    monkeypatch.setenv("COCOON_TESTNET_MNEMONIC", " ".join(words))   # the example names this variable
    owner = v4r2_address(mnemonic_to_private_key(words)[1])
    addr = expected_address(owner, example_params(owner, governance_delay=3600, unbonding=86400))

    out = d(EXAMPLES / "testnet.toml", "--dry-run", records=False)
    # the key is never printed (single words can be ordinary English: look for any two in sequence)
    assert not any(f"{a} {b}" in out for a, b in zip(words, words[1:]))
    assert "does not connect" in out and "nothing connected to testnet" in out
    assert f"owner       {owner.to_str(is_test_only=True)}" in out
    assert "plan        1 message(s)" in out
    assert f"to      {addr.to_str(is_test_only=True)} (non-bounceable)" in out
    assert "value   1 TON" in out and f"init    code {artifact('registry')['code_hash']}" in out
    assert "ESTIMATE" in out
    assert not (d.tmp / "deployments").exists() and not d.state.exists()

    # the estimate is what the same deploy costs on a fresh embedded chain with mainnet prices
    from pytoniq import WalletV4R2
    from pytoniq_core import Cell
    import base64

    chain = EmbeddedChain()
    p = EmbeddedProvider(chain)

    async def deploy():
        w = await WalletV4R2.from_private_key(p, mnemonic_to_private_key(words)[1], version="v4r2")
        chain.mint(w.address, 100 * TON)
        await w.update()
        await w.send_init_external()
        await w.update()
        code = lambda n: Cell.one_from_boc(base64.b64decode(artifact(n)["code_boc"]))
        params = example_params(owner, governance_delay=3600, unbonding=86400)
        si = R.state_init(code("registry"), R.initial_data(owner, params, R.ChildCodes(
            code("stake"), code("escrow"), code("reputation"))))
        await w.raw_transfer([WalletV4R2.create_wallet_internal_message(addr, value=TON, state_init=si,
                                                                          bounce=False)])
        return list(p.last_sent)

    txs = asyncio.run(deploy())
    assert chain.state(addr)[0] == "active"
    assert total(out, "total fees") == sum(t.total_fees + t.in_fwd_fee for t in txs)


# ---------------------------------------------------------------------------------- verification
def test_a_changed_file_is_a_named_mismatch_fixed_only_through_governance(d):
    d(d.config())
    addr = expected_address(d.owner, example_params(d.owner))
    changed = d.config(name="changed.toml", governance_delay="120")

    # the record leads to the deployed registry: it is verified, not deployed a second time
    out = d(changed, code=3)
    assert d.executed == 0
    assert addr.to_str() in out and "MISMATCH params.governance_delay: expected 120, on chain 60" in out
    assert re.search(r"^Error: .*differs from the file in params\.governance_delay;.*--propose", out, re.M)
    assert "action  set_params" in out   # the proposal that would fix it is printed
    assert d.record(addr)["verification"]["failed"] == ["params.governance_delay"]

    # --propose sends exactly that proposal; the parameters stay until governance executes it
    out = d(changed, "--propose", code=3)
    assert d.executed > 0 and "proposal #0" in out and "proposals that fix this are open" in out
    rd = lambda: R.RegistryReader(d.chain().get_method, addr)
    [prop], _ = rd().proposals()
    assert R.NetworkParams.from_cell(prop.action.begin_parse().skip_bits(8).load_ref()).governance_delay == 120
    assert rd().params().governance_delay == 60
    tx = d.record(addr)["transactions"][-1]
    assert tx["action"] == "propose" and tx["proposal_id"] == 0 and tx["fixes"] == ["params.governance_delay"]

    # the same proposal is never sent twice
    out = d(changed, "--propose", code=3)
    assert d.executed == 0 and "already proposed as #0" in out

    # after the delay anyone executes it; then the registry matches the changed file
    r = CliRunner().invoke(main, ["registry", "advance-time", "61", "--state-file", str(d.state)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["registry", "execute", "0", "--state-file", str(d.state), "--key-file", str(d.key)])
    assert r.exit_code == 0, r.output
    out = d(changed)
    assert d.executed == 0 and "ok          registry" in out
    assert d.record(addr)["verification"]["ok"]

    # --new deploys a second registry for the changed file instead
    d(changed, "--new")
    assert d.chain().state(expected_address(d.owner, example_params(d.owner, governance_delay=120)))[0] == "active"


def test_check_names_code_hash_mismatches_against_the_artifacts(d):
    d(d.config())
    addr = expected_address(d.owner, example_params(d.owner))
    # the same parameters with the other language's build: its code hashes are not the deployed ones
    out = d(d.config(name="func.toml", language='"func"'), "--check", code=3)
    assert d.executed == 0
    failed = d.record(addr)["verification"]["failed"]
    assert failed == ["registry.code_hash", "children.stake.code_hash", "children.escrow.code_hash",
                      "children.reputation.code_hash"]
    assert f"expected {artifact('registry', 'func')['code_hash']}, on chain {artifact('registry')['code_hash']}" in out
    assert "registry.code_hash" in [line for line in out.splitlines() if line.startswith("Error:")][0]
    rec = d.record(addr)   # what was deployed is still what the record says
    assert rec["language"] == "tolk" and rec["code_hashes"]["registry"]["code_hash"] == artifact("registry")["code_hash"]
    assert rec["config"].endswith("func.toml") and len(rec["transactions"]) == 1
    # and with the right file, --check passes and sends nothing
    out = d(d.config(), "--check")
    assert d.executed == 0 and "23 of 23 checks pass" in out


def test_a_pinned_registry_is_the_one_verified_and_only_its_owner_proposes(d, tmp_path):
    d(d.config())
    addr = expected_address(d.owner, example_params(d.owner))
    pinned = d.config(name="pinned.toml", governance_delay="120",
                      children=f'["stake", "escrow", "reputation"]\naddress = "{addr.to_str()}"')
    # no records to lead there: the pinned address alone says which registry this file manages
    out = d(pinned, "--record-dir", tmp_path / "elsewhere", records=False, code=3)
    assert d.executed == 0 and "pinned by [registry] address" in out
    assert "params.governance_delay" in [line for line in out.splitlines() if line.startswith("Error:")][0]

    # another wallet's key: the owner check fails and nothing is proposed
    (tmp_path / "other.key").write_text(hashlib.sha256(b"someone else").hexdigest())
    other = pinned.read_text().replace(str(d.key), str(tmp_path / "other.key"))
    (tmp_path / "other.toml").write_text(other)
    out = d(tmp_path / "other.toml", code=3)
    assert d.executed == 0 and "MISMATCH owner" in out and "only the owner can propose" in out
    out = d(tmp_path / "other.toml", "--propose", code=3)
    assert d.executed == 0 and f"is owned by {d.owner.to_str()}" in out

    # a pinned address with nothing deployed there is an error, not a deployment
    empty = Address((0, b"\x01" * 32))
    nothing = pinned.read_text().replace(addr.to_str(), empty.to_str())
    (tmp_path / "nothing.toml").write_text(nothing)
    out = d(tmp_path / "nothing.toml", code=1)
    assert d.executed == 0 and "no registry there on embedded (account nonexist)" in out and "remove `address`" in out


def test_check_of_nothing_deployed_is_an_error(d):
    out = d(d.config(), "--check", code=1)
    assert "no registry is deployed" in out and "run without --check" in out
    assert d.executed == 0


# ---------------------------------------------------------------------------- the testnet path
def test_testnet_path_through_the_lite_client_interface(d, monkeypatch):
    """The code path of testnet and mainnet (no embedded chain object: waits on seqno and account
    state, transaction hashes from the accounts), with the embedded provider standing in for the
    lite servers."""
    from pytoniq import LiteBalancer

    chain = EmbeddedChain()
    monkeypatch.setattr(LiteBalancer, "from_testnet_config",
                        classmethod(lambda cls, **kw: EmbeddedProvider(chain)))
    chain.mint(d.owner, 5 * TON)   # a funded, not yet deployed wallet, as a new testnet wallet is
    cfg = d.config("testnet")
    addr = expected_address(d.owner, example_params(d.owner, governance_delay=3600, unbonding=86400))

    out = d(cfg)
    assert "connecting to testnet" in out and "ok          registry" in out
    assert chain.state(addr)[0] == "active"
    [tx] = d.record(addr, "testnet")["transactions"]
    assert tx["registry_tx"] == chain.shard_account(addr).last_trans_hash.hex()
    assert tx["wallet_tx"] == chain.shard_account(d.owner).last_trans_hash.hex()
    deploy_txs = [t for t in chain.transactions if t.external or t.account == addr][-2:]
    assert not tx["fees_exact"] and tx["fees"] == sum(t.total_fees + t.in_fwd_fee for t in deploy_txs)

    n = len(chain.transactions)
    out = d(cfg)
    assert len(chain.transactions) == n and "nothing to send" in out


# ------------------------------------------------------------------------------------ bad files
BAD = [
    ({"network": '"devnet"'}, "network: 'devnet' is not one of embedded, local, testnet, mainnet"),
    ({"language": '"solidity"'}, "language: 'solidity' is not one of func, tolk"),
    ({"governance_delay": '"a day"'}, "[params] governance_delay: must be an integer"),
    ({"max_proxies": "70000"}, "[params] max_proxies: 70000 is out of range (0 to 65535)"),
    ({"min_escrow_deposit": '"0.0000000001"'}, "[params.economics] min_escrow_deposit: '0.0000000001' TON is not "
                                               "a whole number of nanoTON"),
    ({"worker_fee_per_token": "21"}, "the worker fee per token cannot exceed the price per token"),
    ({"slash_bps": "10001"}, "shares are basis points and must be at most 10000"),
    ({"treasury": '"nowhere"'}, "[params.staking] treasury: 'nowhere' is not a TON address"),
    ({"children": '["stake", "oracle"]'}, "[registry] children: a list of child codes from stake, escrow, "
                                          "reputation"),
    ({"deploy_value": '"0.001"'}, "[registry] deploy_value: at least 0.01 TON"),
    ({"models": '["abc"]'}, "[trust] models: 'abc' is not a 64-hex-digit hash"),
    ({"wallet": '"v3r2"'}, "[owner] wallet: 'v3r2' is not one of v4r2, v5r1"),
    ({"network": '"mainnet"'}, "[params] test_network: true on mainnet would let simulated TEEs serve"),
]


@pytest.mark.parametrize("values,message", BAD, ids=[next(iter(v)) for v, _ in BAD])
def test_a_bad_value_is_one_line_naming_the_key(d, values, message):
    out = d(d.config(**values), code=1)
    assert out.count("\n") == 1 and message in out, out
    assert d.executed == 0 and not d.state.exists()


def test_bad_files_are_one_clear_line(d, monkeypatch):
    cfg = d.config()
    text = cfg.read_text()
    cases = {
        "missing.toml": None,
        "toml.toml": text + "\n[params\n",
        "unknown.toml": text.replace("max_proxies = 64", "max_proxies = 64\nmax_proxys = 64"),
        "nokey.toml": text.replace("close_delay = 3600", ""),
        "notable.toml": text.replace("[trust]", "[trusted]"),
        "words.toml": text.replace(f'key_file = "{d.key}"', 'mnemonic = "abandon abandon ability"'),
        "twokeys.toml": text.replace(f'key_file = "{d.key}"', f'key_file = "{d.key}"\nmnemonic_env = "X"'),
        "envwords.toml": text.replace(f'key_file = "{d.key}"', 'mnemonic_env = "abandon ability able"'),
        "unset.toml": text.replace(f'key_file = "{d.key}"', 'mnemonic_env = "COCOON_TEST_UNSET_VARIABLE"'),
        "nofile.toml": text.replace(f'key_file = "{d.key}"', 'key_file = "no-such.key"'),
    }
    wanted = {
        "missing.toml": "no such deployment file",
        "toml.toml": "not valid TOML",
        "unknown.toml": "[params] max_proxys: unknown key",
        "nokey.toml": "[params.economics] close_delay: missing",
        "notable.toml": "top level trusted: unknown key",
        "words.toml": "[owner] mnemonic: a deployment file never holds the key itself",
        "twokeys.toml": "[owner]: name exactly one of mnemonic_file, mnemonic_env, key_file",
        "envwords.toml": "must be the NAME of an environment variable",
        "unset.toml": "COCOON_TEST_UNSET_VARIABLE (named by [owner] mnemonic_env) is not set",
        "nofile.toml": "key_file",
    }
    monkeypatch.delenv("COCOON_TEST_UNSET_VARIABLE", raising=False)
    for name, body in cases.items():
        p = d.tmp / name
        if body is not None:
            p.write_text(body)
        out = d(p, code=1)
        assert out.count("\n") == 1 and wanted[name] in out, (name, out)
        assert "abandon" not in out   # words in a file are never echoed back
    assert not d.state.exists()


# ------------------------------------------------------------------------------ pieces on their own
def test_measuring_a_plan_leaves_the_embedded_chain_as_it_was(d):
    """The dry run's measurement runs the real messages on a snapshot and restores it, so the same
    process can go on with the chain untouched."""
    from nacl.bindings import crypto_sign_seed_keypair
    from node.chain import Keys, open_network
    from node.deploy import Report, cost
    from node.deploy.config import load_config
    from node.deploy.plan import deploy_message, expect, load_artifacts

    cfg = load_config(d.config())
    pub, priv = crypto_sign_seed_keypair(bytes.fromhex(d.key.read_text()))
    exp = expect(cfg, load_artifacts("tolk", cfg.children), d.owner)

    async def go():
        net = await open_network("embedded", d.state)
        chain = net.chain
        before = (dict(chain.accounts), chain.now, chain.lt, chain.minted, len(chain.transactions))
        [sent] = await cost.measure(net, Keys(pub, priv), "v4r2", [deploy_message(exp, cfg.deploy_value)],
                                    exp.address, "embedded", Report())
        assert sent.ok and sent.fees > 0 and sent.registry_tx
        assert (dict(chain.accounts), chain.now, chain.lt, chain.minted, len(chain.transactions)) == before
        assert chain.state(exp.address)[0] == "nonexist" and chain.money_leak() == 0
        await net.close(save=False)

    asyncio.run(go())
    assert not d.state.exists()


def test_a_v5r1_owner_wallet(d):
    """The owner is the wallet the file names; with v5r1 that is another address than v4r2's."""
    from nacl.bindings import crypto_sign_seed_keypair
    from pytoniq import WalletV5R1

    priv = crypto_sign_seed_keypair(bytes.fromhex(d.key.read_text()))[1]
    owner = asyncio.run(WalletV5R1.from_private_key(EmbeddedProvider(EmbeddedChain()), priv,
                                                    network_global_id=-239)).address
    assert owner != d.owner
    out = d(d.config(wallet='"v5r1"'))
    addr = expected_address(owner, example_params(owner))
    assert "ok          registry" in out
    assert R.RegistryReader(d.chain().get_method, addr).owner()[0] == owner

"""`cocoon registry` end to end on the embedded chain: the owner's commands, refusals reported in one
line with the contract's error, bad input refused before anything is sent, keys never printed."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pytoniq_core.crypto.keys import mnemonic_new

from node.cli.context import ChainContext, load_keys, open_wallet
from node.cli import main
from wrappers import registry as R
from wrappers.chain.emulated import EmbeddedChain

H = "ab" * 32


@pytest.fixture
def cli(tmp_path: Path):
    words = mnemonic_new(24)
    (tmp_path / "owner.words").write_text(" ".join(words))
    (tmp_path / "heir.words").write_text(" ".join(mnemonic_new(24)))
    state = tmp_path / "chain.json"
    runner = CliRunner()

    def run(*args, who="owner", ok=True):
        argv = list(args) + ["--state-file", str(state)]
        if who:
            argv += ["--mnemonic-file", str(tmp_path / f"{who}.words")]
        r = runner.invoke(main, argv, catch_exceptions=False)
        assert (r.exit_code == 0) == ok, r.output
        # words of the mnemonic can be ordinary English; any two in a row would be a leak
        assert not any(f"{a} {b}" in r.output for a, b in zip(words, words[1:])), "the mnemonic was printed"
        assert "Traceback" not in r.output
        return r.output

    run.state = state
    return run


@pytest.mark.parametrize("lang", ["func", "tolk"])
def test_owner_commands(cli, lang):
    out = cli("registry", "deploy", "--lang", lang, "--governance-delay", "60", "--test-network")
    addr = out.strip().splitlines()[-1].split()[-1]
    out = cli("registry", "add", "worker-image", H)
    assert "proposal #0" in out
    out = cli("registry", "execute", "0", ok=False)
    assert "203 (proposal_not_ready)" in out
    cli("registry", "advance-time", "60", who=None)
    cli("registry", "execute", "0")
    out = cli("registry", "show", who=None)
    assert H in out and "version       1" in out and "test network  yes" in out
    chain = EmbeddedChain.load(cli.state)
    assert R.RegistryReader(chain.get_method, R.Address(addr)).is_allowed("worker_image", H)
    cli("registry", "remove", "worker-image", H)
    out = cli("registry", "remove", "worker-image", H, ok=False)
    assert "201 (hash_unknown)" in out
    out = cli("registry", "set-params", "--slash-bps", "20000", ok=False)
    assert "at most 10000" in out
    assert "new parameters" in cli("registry", "set-params", "--price-per-token", "30", "--worker-fee-per-token", "20")
    assert "proposals     1 open" in cli("registry", "show", who=None)


def test_bad_input_is_refused_before_sending(cli):
    cli("registry", "deploy", "--governance-delay", "60")
    before = EmbeddedChain.load(cli.state).lt
    out = cli("registry", "add", "model", "zz", ok=False)
    assert "64 hex digits" in out
    out = cli("registry", "transfer-ownership", "not-an-address", ok=False)
    assert "is not a TON address" in out
    out = cli("registry", "add", "model", H, who=None, ok=False)
    assert "no key" in out
    assert EmbeddedChain.load(cli.state).lt == before  # nothing was sent


def test_two_step_ownership(cli):
    cli("registry", "deploy", "--governance-delay", "60")
    out = cli("registry", "accept-ownership", who="heir", ok=False)
    assert "205 (not_pending_owner)" in out
    # the heir's wallet: the one the CLI opened (and funded) for its key
    keys = load_keys(str(Path(cli.state).parent / "heir.words"), None)
    with ChainContext("embedded", cli.state) as ctx:
        heir_addr = ctx.call(open_wallet(ctx.provider, keys, "v4r2", "embedded")).address
    cli("registry", "transfer-ownership", heir_addr.to_str())
    cli("registry", "accept-ownership", who="heir")
    assert heir_addr.to_str() in cli("registry", "show", who=None).splitlines()[1]
    out = cli("registry", "remove", "model", H, ok=False)  # the old owner lost its power
    assert "101 (not_owner)" in out

"""Bad input to `cocoon` is refused in one line before it costs anything or changes anything: clock
steps the embedded chain could not survive, broken state files, malformed endpoints, owner commands
the registry would refuse, amounts that are not numbers; and the warnings a user needs. Every command
runs end to end on the embedded chain, in both builds where a contract is involved."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytoniq_core import Address

from node.cli import main
from wrappers.chain.emulated import EmbeddedChain

REPO = Path(__file__).resolve().parents[1]
H = "cd" * 32
INTERNAL = ("Traceback", "OverflowError", "RuntimeError", "stoull", "InvalidOperation", "UnicodeDecodeError",
            "BrokenPipeError", "COCOON_DEBUG")


class Cli:
    def __init__(self, tmp_path: Path):
        self.dir, self.runner = tmp_path, CliRunner()
        self.state = tmp_path / "chain.json"
        self.keys = {}
        for name in ("owner", "heir", "provider", "proxy", "client", "operator"):
            p = tmp_path / f"{name}.key"
            p.write_text(hashlib.sha256(b"cli-input:" + name.encode()).hexdigest())
            self.keys[name] = str(p)

    def run(self, *args, key: str | None = "owner", ok: bool = True, code: int | None = None) -> str:
        argv = [str(a) for a in args]
        if "--" in argv:  # options go before the end-of-options marker
            i = argv.index("--")
            argv[i:i] = self._opts(key)
        else:
            argv += self._opts(key)
        r = self.runner.invoke(main, argv)
        out = r.output
        assert not any(s in out for s in INTERNAL), out
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        assert (r.exit_code == 0) == ok, f"{argv}: exit {r.exit_code}\n{out}"
        if code is not None:
            assert r.exit_code == code, out
        if not ok:
            errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
            assert len(errors) == 1, out  # one clear line
        return out

    def _opts(self, key):
        return ["--state-file", str(self.state)] + (["--key-file", self.keys[key]] if key else [])

    def chain(self) -> EmbeddedChain:
        return EmbeddedChain.load(self.state)

    def fingerprint(self) -> tuple:
        """What a refused command must leave as it was: the chain's time, logical time and accounts."""
        c = self.chain()
        return c.now, c.lt, {k: v.to_boc() for k, v in c.accounts.items()}


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path)


# ------------------------------------------------------------------------------ the embedded chain's clock
def test_advance_time_is_bounded_and_the_chain_stays_usable(cli):
    cli.run("registry", "deploy", "--governance-delay", "60")
    before = cli.fingerprint()
    for seconds, needle in (("3000000000", "ten years"), ("99999999999999999999", "ten years"),
                            ("315360001", "ten years")):
        out = cli.run("registry", "advance-time", seconds, key=None, ok=False)
        assert needle in out and "32-bit" in out
    out = cli.run("registry", "advance-time", "--", "-1", key=None, ok=False)
    assert "only moves forward" in out
    assert cli.fingerprint() == before
    # eight steps of ten years reach 2106 on a 32-bit clock; the limit stops them before
    for _ in range(7):
        cli.run("registry", "advance-time", str(10 * 365 * 86400), key=None)
    out = cli.run("registry", "advance-time", str(10 * 365 * 86400), key=None, ok=False)
    assert "past 2100-01-01" in out
    # the chain still loads and answers after the longest journey allowed
    assert "registry " in cli.run("registry", "show", key=None)
    assert cli.chain().now == 1_767_225_600 + 70 * 365 * 86400


def test_a_message_that_is_not_sent_is_never_silent(cli):
    """Past this computer's clock the wallet's signature has expired on the embedded chain: the
    command says so in one line instead of printing a proposal that does not exist."""
    cli.run("registry", "deploy", "--governance-delay", "60")
    cli.run("registry", "advance-time", str(400 * 86400), key=None)
    r = cli.runner.invoke(main, ["registry", "add", "model", H, *cli._opts("owner")])
    if r.exit_code == 0:
        assert "ok: proposal" in r.output and "proposal #0" in r.output
    else:
        assert "did not reach the registry" in r.output and "clock" in r.output and "proposal #" not in r.output


@pytest.mark.parametrize("content", [b"\x00\xffnot json at all", b'{"format": 1, "now": 5000000000, "lt": 1, '
                                     b'"minted": 0, "accounts": {}}', b'{"format": 1, "now": 1767225600, "lt": 1, '
                                     b'"minted": 0, "accounts": {"0:00": "not a boc"}}', b"[1, 2]", b""])
def test_a_broken_state_file_is_named_and_left_alone(cli, content):
    cli.state.write_bytes(content)
    for args in (("registry", "show", "--registry", "EQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAM9c"),
                 ("registry", "advance-time", "60"), ("stake", "status", "--address",
                                                      "EQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAM9c")):
        out = cli.run(*args, key=None, ok=False)
        assert str(cli.state) in out and "fresh chain" in out
    assert cli.state.read_bytes() == content


# ------------------------------------------------------------------------------ registry owner commands
def test_owner_commands_are_checked_before_sending(cli, lang):
    cli.run("registry", "deploy", "--lang", lang, "--governance-delay", "600")
    out = cli.run("registry", "add", "worker-image", H)
    assert "proposal #0: executable after 2026-01-01 00:10:00 UTC" in out
    before = cli.fingerprint()
    for args in (("registry", "add", "model", H), ("registry", "remove", "worker-image", H),
                 ("registry", "set-params", "--close-delay", "7200"), ("registry", "cancel", "0"),
                 ("registry", "transfer-ownership", "none")):
        out = cli.run(*args, key="heir", ok=False)
        assert "101 (not_owner)" in out and "nothing was sent" in out
    checks = [(("registry", "execute", "0"), "203 (proposal_not_ready)", "advance-time 600"),
              (("registry", "execute", "7"), "202 (proposal_unknown)", "does not exist"),
              (("registry", "cancel", "7"), "202 (proposal_unknown)", "does not exist"),
              (("registry", "remove", "model", H), "201 (hash_unknown)", "nothing to revoke"),
              (("registry", "remove-proxy", cli.chain().treasury("x").address.to_str()), "206 (proxy_unknown)", ""),
              (("registry", "accept-ownership"), "205 (not_pending_owner)", "")]
    for args, code, hint in checks:
        out = cli.run(*args, ok=False)
        assert code in out and hint in out and "nothing was sent" in out
    assert cli.fingerprint() == before   # not a fee, not a message, not a faucet top-up
    out = cli.run("registry", "deploy", "--lang", lang, "--governance-delay", "600", ok=False)
    assert "already deployed at" in out
    assert cli.fingerprint() == before
    cli.run("registry", "advance-time", "600", key=None)
    cli.run("registry", "execute", "0", key="heir")  # anyone executes once the delay has passed
    out = cli.run("registry", "execute", "0", ok=False)
    assert "was executed or cancelled" in out
    out = cli.run("registry", "add", "worker-image", H, ok=False)
    assert "200 (hash_exists)" in out


# ------------------------------------------------------------------------------ numbers that are not amounts
@pytest.mark.parametrize("args, needle", [
    (("stake", "deposit", "NaN"), "not a number of TON"),
    (("stake", "deposit", "inf"), "not a number of TON"),
    (("stake", "deposit", "--", "-Infinity"), "not a number of TON"),
    (("stake", "deposit", "1e30"), "more than all TON"),
    (("stake", "deposit", "--", "-5"), "more than 0 TON"),
    (("stake", "unbond", "nan"), "not a number of TON"),
    (("escrow", "top-up", "EQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAM9c", "inf"), "not a number of TON"),
    (("registry", "execute", "--", "-1"), "-1 is not in the range"),
    (("registry", "cancel", "99999999999999999999"), "is not in the range"),
    (("registry", "set-params", "--close-delay", "-5"), "-5 is not in the range"),
    (("registry", "set-params", "--max-proxies", "0"), "is not in the range"),
    (("registry", "set-params", "--price-per-token", "-3"), "is not between 0 and"),
    (("registry", "set-params", "--worker-fee-per-token", "1.5"), "not a whole number of nanoTON"),
    (("registry", "set-params", "--min-worker-stake", "nan"), "not a number of TON"),
    (("registry", "set-params", "--min-escrow-deposit", "1e30"), "more than all TON"),
    (("registry", "deploy", "--value", "inf"), "not a number of TON"),
    (("registry", "deploy", "--governance-delay", "-1"), "is not in the range"),
    (("reputation", "submit", "EQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAM9c", "--proxy",
      "EQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAM9c", "--operator-key-file", "{operator}", "--value", "NaN"),
     "not a number of TON"),
])
def test_amounts_and_numbers_are_refused_in_one_line(cli, args, needle):
    cli.run("registry", "deploy")
    before = cli.fingerprint()
    args = [a.replace("{operator}", cli.keys["operator"]) for a in args]
    out = cli.run(*args, ok=False)
    assert needle in out
    assert cli.fingerprint() == before


# ------------------------------------------------------------------------------ a proxy, its endpoint, its clients
def test_proxy_endpoint_warnings_and_listing(cli, lang):
    cli.run("registry", "deploy", "--lang", lang, "--governance-delay", "60")
    out = cli.run("stake", "deposit", "5", key="provider")
    assert "warning: the stake will hold 5 TON, below the registry's minimum of 10 TON for a worker" in out
    cli.run("stake", "deposit", "60", "--role", "proxy", key="proxy")
    op_seed = bytes.fromhex(Path(cli.keys["operator"]).read_text())
    from wrappers.keys import public_key_int as operator_public_key
    cli.run("stake", "set-operator", f"{operator_public_key(op_seed):064x}", "--role", "proxy", key="proxy")
    out = cli.run("stake", "register-proxy", "10.0.0.1:8443", key="proxy")
    assert "registered: proxy 10.0.0.1:8443 10.0.0.1:8443" in out
    before = cli.fingerprint()
    for endpoint, needle in (("", "empty"), ("nohost", "not HOST:PORT"), (":", "not HOST:PORT"),
                             ("10.0.0.1:99999", "not between 1 and 65535"), ("a:1 b:2 c:3", "two addresses"),
                             ("x" * 130 + ":1", "at most")):
        out = cli.run("stake", "register-proxy", endpoint, key="proxy", ok=False)
        assert needle in out
    assert cli.fingerprint() == before
    out = cli.run("stake", "register-proxy", "clients.example:443 [::1]:9443", key="proxy")
    assert "registered: proxy clients.example:443 [::1]:9443" in out

    # `registry show` names the proxy by an address `escrow open` takes
    show = cli.run("registry", "show", key=None)
    line = next(ln for ln in show.splitlines() if "clients.example:443" in ln)
    proxy_addr = line.split()[0]
    assert Address(proxy_addr).hash_part and len(proxy_addr) == 48
    out = cli.run("escrow", "open", proxy_addr, "2", key="client")
    channel = next(ln for ln in out.splitlines() if ln.startswith("channel:")).split()[1]
    out = cli.run("escrow", "voucher", channel, "3", key="client")
    assert "warning: the channel covers 2 TON in total" in out and '"amount"' in out
    out = cli.run("escrow", "voucher", channel, "1.5", key="client")
    assert "warning" not in out
    before = cli.fingerprint()
    out = cli.run("escrow", "withdraw", channel, "1", key="heir", ok=False)   # a stranger, never funded
    assert "only the channel's payer" in out
    out = cli.run("stake", "unbond", "1", key="heir", ok=False)
    assert "no worker stake" in out
    assert cli.fingerprint() == before   # not even a faucet top-up of the stranger's wallet
    junk = cli.dir / "junk.json"
    junk.write_text('{"channel": 1}')
    out = cli.run("escrow", "claim", channel, str(junk), key="proxy", ok=False)
    assert f"{junk}: not a voucher" in out

    # reports name staked workers only
    key_file = cli.keys["operator"]
    stranger = cli.chain().treasury("stranger").address.to_str()
    before = cli.fingerprint()
    out = cli.run("reputation", "submit", stranger, "--proxy", line.split()[0], "--operator-key-file", key_file,
                  "--succeeded", "1", ok=False)
    assert "has no worker stake" in out
    assert cli.fingerprint() == before

    # an unbond that deactivates the proxy's stake, and with it the registered proxy, says so
    out = cli.run("stake", "unbond", "20", "--role", "proxy", key="proxy")
    assert "warning: this leaves 40 TON active, below the minimum of 50 TON" in out
    assert "registered proxy clients.example:443 [::1]:9443 turns inactive" in out
    out = cli.run("stake", "unbond", "1", "--role", "proxy", key="proxy")
    assert "warning" not in out  # already inactive: nothing new to warn about


# ------------------------------------------------------------------------------ output into a closed pipe
def test_a_closed_pipe_ends_quietly(cli):
    cli.run("registry", "deploy")
    for args in (["registry", "show"], ["--help"], ["attest", "verify", "--help"]):
        r, w = os.pipe()
        os.close(r)  # the reader (`head`) is gone before the command writes
        try:
            p = subprocess.run([str(Path(sys.executable).parent / "cocoon"), *args, "--state-file", str(cli.state)]
                               if args[0] == "registry" else [str(Path(sys.executable).parent / "cocoon"), *args],
                               stdout=w, stderr=subprocess.PIPE, timeout=120, cwd=cli.dir)
        finally:
            os.close(w)
        assert p.stderr == b"", p.stderr.decode()
        assert p.returncode != 0


# ------------------------------------------------------------------------------ the README's command list
@pytest.mark.parametrize("group", ["stake", "escrow", "reputation", "attest"])
def test_readme_lists_every_command(group):
    text = (REPO / "README.md").read_text()
    block = text.split("## The `cocoon` command", 1)[1].split("```")[1]
    lines = " ".join(ln for ln in block.splitlines() if ln.startswith(f"cocoon {group} "))
    missing = [name for name in main.commands[group].commands if name not in lines]
    assert not missing, f"README's `cocoon {group}` line lacks {missing}"


def test_every_option_and_command_says_what_it_is_for():
    """`--help` explains each option of every `cocoon` command, and each command has a docstring."""
    import click

    missing = []

    def walk(cmd, path):
        if not (cmd.help or "").strip():
            missing.append(" ".join(path) or "cocoon")
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
            return
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and "--help" not in p.opts and not (p.help or "").strip():
                missing.append(f"{' '.join(path)} {p.opts[0]}")

    walk(main, [])
    assert len(main.commands) >= 15 and missing == []

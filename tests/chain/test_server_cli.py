"""Every `cocoon` command behaves the same on the chain server as on the in-process embedded chain:
the escrow's whole lifecycle (registry deploy, open, top-up, vouchers, claims, refusals, a
withdrawal after the notice, close, a cooperative close), a stake's (deposit, operator key,
unbonding, withdrawal after the period) and the wallet commands run once with
`--state-file` and once with `--network URL` against a `cocoon chain serve` process; every command
gives the same exit code and the same output."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from click.testing import CliRunner

from node.cli import main
from wrappers import keys as K


def _keys(tmp: Path) -> dict:
    keys = {}
    for name in ("owner", "payer", "payee", "stranger", "voucher2", "provider"):
        seed = hashlib.sha256(b"chain-server-cli-test:" + name.encode()).digest()
        p = tmp / f"{name}.key"
        p.write_text(seed.hex())
        keys[name] = (str(p), seed)
    return keys


def _run_story(where: list[str], keys: dict, tmp: Path) -> list[tuple[int, str]]:
    runner = CliRunner()
    env: dict = {}
    log: list[tuple[int, str]] = []

    def cli(*args: str, key: str | None = None) -> str:
        argv = list(args) + where + (["--key-file", keys[key][0]] if key else [])
        r = runner.invoke(main, argv, env=env)
        assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
        # the faucet's and the clock's notices name the chain; everything else must be identical
        out = re.sub(r"\((embedded|local) chain\) funded", "(dev chain) funded", r.output)
        out = re.sub(r"^(embedded|local) chain time", "dev chain time", out, flags=re.M).replace(str(tmp), "DIR")
        log.append((r.exit_code, out))
        return out

    pub = {n: f"{K.public_key_int(keys[n][1]):064x}" for n in keys}
    out = cli("registry", "deploy", "--lang", "tolk", "--test-network", key="owner")
    env["COCOON_REGISTRY"] = out.strip().splitlines()[-1].split()[-1]
    cli("wallet", "show", key="payee")
    payee = next(l.split()[1] for l in cli("wallet", "show", key="payee").splitlines() if l.startswith("address"))
    cli("escrow", "open", payee, "0.5", "--payee-key", pub["payee"], key="payer")      # refused: below the minimum
    out = cli("escrow", "open", payee, "5", "--payee-key", pub["payee"], key="payer")
    channel = next(l.split()[1] for l in out.splitlines() if l.startswith("channel:"))
    cli("escrow", "status", channel)
    cli("escrow", "top-up", channel, "1.5", key="stranger")
    vfile = str(tmp / "v.json")
    cli("escrow", "voucher", channel, "2", "-o", vfile, key="payer")
    cli("escrow", "claim", channel, vfile, key="payee")
    cli("escrow", "claim", channel, vfile, key="payee")                                  # refused: already claimed
    cli("escrow", "withdraw", channel, "1", key="payer")
    cli("escrow", "finish", channel, key="stranger")                                     # refused: the notice runs
    cli("registry", "advance-time", "3600")
    cli("escrow", "finish", channel, key="stranger")
    cli("escrow", "close", channel, key="payer")
    cli("escrow", "voucher", channel, "3", "-o", vfile, key="payer")
    cli("escrow", "claim", channel, vfile, key="stranger")
    cli("registry", "advance-time", "3600")
    cli("escrow", "finish", channel, key="payee")
    cli("escrow", "status", channel)
    out = cli("escrow", "open", payee, "2", "--payee-key", pub["payee"], "--voucher-key-file", keys["voucher2"][0],
              key="payer")
    channel2 = next(l.split()[1] for l in out.splitlines() if l.startswith("channel:"))
    sig = cli("escrow", "sign-close", channel2, "0.5", key="payee").strip().splitlines()[-1]
    cli("escrow", "close", channel2, "--cooperative", "0.5", "--payee-signature", sig,
        "--voucher-key-file", keys["voucher2"][0], key="payer")
    cli("escrow", "status", channel2)
    # a provider's stake: deposit, operator key, unbonding, withdrawal after the period
    from wrappers import stake as S

    cli("stake", "status", key="provider")
    cli("stake", "deposit", "20", key="provider")
    cli("stake", "set-operator", f"{K.public_key_int(S.derive_operator_key('server-cli')):064x}", key="provider")
    cli("stake", "unbond", "5", key="provider")
    cli("stake", "unbond", "1000", key="provider")                                       # refused
    cli("stake", "withdraw", key="provider")                                             # refused: not unlocked
    cli("registry", "advance-time", str(7 * 86400))
    cli("stake", "withdraw", key="provider")
    cli("stake", "status", key="provider")
    cli("wallet", "fund", "3", key="stranger")
    cli("wallet", "show", key="stranger")
    cli("registry", "show")
    return log


def test_escrow_lifecycle_same_on_the_server_as_in_process(chain_server, tmp_path):
    keys = _keys(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    embedded = _run_story(["--state-file", str(tmp_path / "a" / "chain.json")], keys, tmp_path / "a")
    served = _run_story(["--network", chain_server.url], keys, tmp_path / "b")
    assert [c for c, _ in embedded].count(0) == len(embedded) - 5  # the five refusals
    for i, (e, s) in enumerate(zip(embedded, served)):
        assert e == s, f"command {i} differs:\nembedded:\n{e[1]}\nserver:\n{s[1]}"
    assert len(embedded) == len(served)

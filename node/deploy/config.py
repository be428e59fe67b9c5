"""The deployment file: one TOML document naming the network, the build, the owner's wallet, the
deploy value, every network parameter (with its unit), the initial trust lists and the child codes.

Every key is required unless marked optional, and unknown keys are errors, so a typo never deploys
a default. Amounts in TON are decimals (``"1.5"`` or ``1.5`` or ``2``) and become nanoTON exactly;
durations are seconds; shares are basis points (10000 = 100%); multipliers are 10000 = 1.0. The
owner's key is named, never written: a mnemonic file, the name of an environment variable that
holds the words, or a 32-byte seed file. Relative paths are relative to the file's directory.

Errors are :class:`ConfigError`: one line naming the file, the key and what is expected.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Optional

from pytoniq_core import Address

from node.chain import NETWORKS, CocoonError
from wrappers import registry as R
from wrappers import TON as NANO  # nanoTON in one TON

LANGUAGES = ("func", "tolk")
CHILDREN = ("stake", "escrow", "reputation")
WALLETS = ("v4r2", "v5r1")
TRUST_KINDS = ("worker_images", "proxy_images", "models")
MAX_COINS = 2**120 - 1  # VarUInteger 16

# (key, kind, unit) for every NetworkParams field, by table. Kinds: ton (decimal TON -> nanoTON),
# nano (integer nanoTON), uintN, bool, address.
PARAMS = {
    "params": [("test_network", "bool", "true: simulated TEEs are accepted (flags bit 0)"),
               ("governance_delay", "uint32", "seconds a proposal waits before it can execute"),
               ("max_proxies", "uint16", "registered proxies at most")],
    "params.economics": [("price_per_token", "nano", "nanoTON per token at coefficient 1.0"),
                         ("worker_fee_per_token", "nano", "nanoTON per token at coefficient 1.0"),
                         ("prompt_mult", "uint32", "10000 = 1.0"), ("cached_mult", "uint32", "10000 = 1.0"),
                         ("completion_mult", "uint32", "10000 = 1.0"),
                         ("reasoning_mult", "uint32", "10000 = 1.0"),
                         ("min_escrow_deposit", "ton", "TON"), ("close_delay", "uint32", "seconds")],
    "params.staking": [("min_worker_stake", "ton", "TON"), ("min_proxy_stake", "ton", "TON"),
                       ("unbonding_period", "uint32", "seconds"), ("slash_bps", "uint16", "basis points"),
                       ("reporter_bps", "uint16", "basis points of the slash"),
                       ("treasury", "address", "address, or \"owner\" for the owner's wallet")],
}


class ConfigError(CocoonError):
    """A deployment file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class OwnerConfig:
    """Where the owner's key is (exactly one source) and which wallet contract holds it."""
    wallet: str = "v4r2"
    mnemonic_file: Optional[Path] = None
    mnemonic_env: Optional[str] = None
    key_file: Optional[Path] = None

    def source(self) -> str:
        """Where the key comes from, for messages (never the key itself)."""
        if self.mnemonic_file:
            return f"mnemonic file {self.mnemonic_file}"
        if self.mnemonic_env:
            return f"mnemonic in ${self.mnemonic_env}"
        return f"key file {self.key_file}"


@dataclass(frozen=True)
class DeployConfig:
    path: Path
    network: str
    language: str
    owner: OwnerConfig
    deploy_value: int                       # nanoTON
    children: tuple[str, ...]
    economics: R.Economics
    test_network: bool
    governance_delay: int
    max_proxies: int
    staking: dict                           # Staking fields except treasury
    treasury: Optional[Address]             # None: the owner's wallet
    trust: dict[str, tuple[int, ...]] = field(default_factory=dict)
    trust_since: int = 0
    address: Optional[Address] = None       # the registry this file manages, when pinned
    record_dir: Optional[Path] = None

    def params(self, owner: Address) -> R.NetworkParams:
        """The NetworkParams this file asks for (the treasury resolved against the owner)."""
        return R.NetworkParams(staking=R.Staking(treasury=self.treasury or owner, **self.staking),
                               economics=self.economics, is_test=self.test_network,
                               governance_delay=self.governance_delay, max_proxies=self.max_proxies)

    def trust_dicts(self) -> dict[str, dict[int, int]]:
        """The initial trust lists as initial_data takes them (hash -> allowed-since time)."""
        return {k: {h: self.trust_since for h in self.trust.get(k, ())} for k in TRUST_KINDS}


# ------------------------------------------------------------------------------------------ reading
def _toml(text: str):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise CocoonError("reading a deployment file needs Python 3.11+ (tomllib) or "
                            "`pip install tomli`") from None
    return tomllib.loads(text)


def load_config(path: str | Path) -> DeployConfig:
    """Read and check a deployment file. Raises :class:`ConfigError` naming the key at fault."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such deployment file; start from scripts/deploy/examples/") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None
    try:
        doc = _toml(text)
    except CocoonError:
        raise
    except Exception as e:  # tomllib.TOMLDecodeError, with line and column
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return _Reader(path).read(doc)


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        self.base = path.resolve().parent

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def table(self, doc: dict, name: str, allowed: set[str], required: bool = True) -> dict:
        t = doc.get(name)
        if t is None:
            if required:
                raise self.fail(f"[{name}]", "missing table (see scripts/deploy/examples/)")
            return {}
        if not isinstance(t, dict):
            raise self.fail(name, "must be a table")
        self.no_unknown(t, name, allowed)
        return t

    def no_unknown(self, t: dict, name: str, allowed: set[str]) -> None:
        for k in t:
            if k not in allowed:
                if name == "owner" and k in ("mnemonic", "words", "seed", "private_key"):
                    raise self.fail(f"[owner] {k}", "a deployment file never holds the key itself; name "
                                    "mnemonic_file, mnemonic_env (a variable name) or key_file instead")
                where = f"[{name}]" if name else "top level"
                raise self.fail(f"{where} {k}", f"unknown key; expected one of {', '.join(sorted(allowed))}")

    def need(self, t: dict, key: str, where: str) -> Any:
        if key not in t:
            raise self.fail(f"{where} {key}", "missing")
        return t[key]

    def choice(self, t: dict, key: str, where: str, choices: tuple[str, ...], default: Optional[str] = None) -> str:
        v = t.get(key, default) if default is not None else self.need(t, key, where)
        if v not in choices:
            raise self.fail(f"{where} {key}", f"{v!r} is not one of {', '.join(choices)}")
        return v

    def uint(self, v: Any, key: str, bits: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, f"must be an integer, got {v!r}")
        if not 0 <= v < 2**bits:
            raise self.fail(key, f"{v} is out of range (0 to {2**bits - 1})")
        return v

    def ton(self, v: Any, key: str) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise self.fail(key, f"an amount in TON, e.g. \"1.5\", got {v!r}")
        try:
            d = Decimal(repr(v) if isinstance(v, float) else str(v).strip())
        except InvalidOperation:
            raise self.fail(key, f"an amount in TON, e.g. \"1.5\", got {v!r}") from None
        nano = d * NANO
        if not d.is_finite() or nano != nano.to_integral_value():
            raise self.fail(key, f"{v!r} TON is not a whole number of nanoTON")
        if not 0 <= nano <= MAX_COINS:
            raise self.fail(key, f"{v!r} TON is out of range")
        return int(nano)

    def address(self, v: Any, key: str) -> Address:
        try:
            a = Address(v)
        except Exception:
            raise self.fail(key, f"{v!r} is not a TON address") from None
        if a.wc != 0:
            raise self.fail(key, "must be an address in workchain 0")
        return a

    def file(self, v: Any, key: str) -> Path:
        if not isinstance(v, str) or not v:
            raise self.fail(key, "must be a file path (a string)")
        p = Path(v).expanduser()
        return p if p.is_absolute() else self.base / p

    def hash256(self, v: Any, key: str) -> int:
        s = v.lower().removeprefix("0x") if isinstance(v, str) else ""
        if len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
            raise self.fail(key, f"{v!r} is not a 64-hex-digit hash")
        return int(s, 16)

    # -------------------------------------------------------------------------------- the document
    def read(self, doc: dict) -> DeployConfig:
        self.no_unknown(doc, "", {"network", "language", "record_dir", "owner", "registry", "params", "trust"})
        network = doc.get("network")
        if not (isinstance(network, str) and network.startswith(("http://", "https://"))):
            network = self.choice(doc, "network", "top level", NETWORKS)   # or a chain server's URL
        language = self.choice(doc, "language", "top level", LANGUAGES)
        record_dir = self.file(doc["record_dir"], "record_dir") if "record_dir" in doc else None

        o = self.table(doc, "owner", {"wallet", "mnemonic_file", "mnemonic_env", "key_file"})
        sources = [k for k in ("mnemonic_file", "mnemonic_env", "key_file") if k in o]
        if len(sources) != 1:
            raise self.fail("[owner]", "name exactly one of mnemonic_file, mnemonic_env, key_file "
                            f"(found {', '.join(sources) or 'none'})")
        env = o.get("mnemonic_env")
        if env is not None and (not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env)):
            raise self.fail("[owner] mnemonic_env", "must be the NAME of an environment variable that holds "
                            "the words (e.g. \"COCOON_MNEMONIC\"), not the words")
        owner = OwnerConfig(
            wallet=self.choice(o, "wallet", "[owner]", WALLETS, default="v4r2"),
            mnemonic_file=self.file(o["mnemonic_file"], "[owner] mnemonic_file") if "mnemonic_file" in o else None,
            mnemonic_env=env,
            key_file=self.file(o["key_file"], "[owner] key_file") if "key_file" in o else None)

        r = self.table(doc, "registry", {"deploy_value", "children", "address"})
        deploy_value = self.ton(self.need(r, "deploy_value", "[registry]"), "[registry] deploy_value")
        if deploy_value < R.MIN_OP_VALUE:
            raise self.fail("[registry] deploy_value", "at least 0.01 TON: it becomes the registry's storage reserve")
        children = self.need(r, "children", "[registry]")
        if not isinstance(children, list) or any(c not in CHILDREN for c in children):
            raise self.fail("[registry] children", f"a list of child codes from {', '.join(CHILDREN)}, "
                            f"got {children!r}")
        if len(set(children)) != len(children):
            raise self.fail("[registry] children", "lists a child code twice")
        pinned = self.address(r["address"], "[registry] address") if "address" in r else None

        p = self.table(doc, "params", {k for k, _, _ in PARAMS["params"]} | {"economics", "staking"})
        e = p.get("economics")
        s = p.get("staking")
        for name, t in (("params.economics", e), ("params.staking", s)):
            if t is None:
                raise self.fail(f"[{name}]", "missing table (see scripts/deploy/examples/)")
            if not isinstance(t, dict):
                raise self.fail(name, "must be a table")
            self.no_unknown(t, name, {k for k, _, _ in PARAMS[name]})
        vals: dict[str, Any] = {}
        for name, t in (("params", p), ("params.economics", e), ("params.staking", s)):
            for key, kind, _unit in PARAMS[name]:
                where = f"[{name}] {key}"
                v = self.need(t, key, f"[{name}]")
                if kind == "bool":
                    if not isinstance(v, bool):
                        raise self.fail(where, f"must be true or false, got {v!r}")
                elif kind == "ton":
                    v = self.ton(v, where)
                elif kind == "nano":
                    v = self.uint(v, where, 120)
                elif kind == "address":
                    v = None if v == "owner" else self.address(v, where)
                else:
                    v = self.uint(v, where, int(kind[4:]))
                vals[key] = v
        econ = R.Economics(**{k: vals[k] for k, _, _ in PARAMS["params.economics"]})
        staking = {k: vals[k] for k, _, _ in PARAMS["params.staking"] if k != "treasury"}

        t = self.table(doc, "trust", set(TRUST_KINDS) | {"since"})
        trust = {}
        for kind in TRUST_KINDS:
            lst = self.need(t, kind, "[trust]")
            if not isinstance(lst, list):
                raise self.fail(f"[trust] {kind}", "must be a list of 64-hex-digit hashes (may be empty)")
            hashes = tuple(self.hash256(h, f"[trust] {kind}") for h in lst)
            if len(set(hashes)) != len(hashes):
                raise self.fail(f"[trust] {kind}", "lists a hash twice")
            trust[kind] = hashes
        since = self.uint(t.get("since", 0), "[trust] since", 32)

        cfg = DeployConfig(path=self.path, network=network, language=language, owner=owner,
                           deploy_value=deploy_value, children=tuple(children), economics=econ,
                           test_network=vals["test_network"], governance_delay=vals["governance_delay"],
                           max_proxies=vals["max_proxies"], staking=staking, treasury=vals["treasury"],
                           trust=trust, trust_since=since, address=pinned, record_dir=record_dir)
        if network == "mainnet" and cfg.test_network:
            raise self.fail("[params] test_network", "true on mainnet would let simulated TEEs serve real "
                            "users; set it to false")
        problems = cfg.params(Address("0:" + "00" * 32)).problems()
        if problems:
            raise self.fail("[params]", "; ".join(problems))
        return cfg

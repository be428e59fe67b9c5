"""What users type on the command line, in one place: the parsers of TON amounts, addresses, 256-bit
hex values, proxy endpoints, times and the integer ranges of the contracts' fields, and the options
the command groups share (network and wallet, registry, services' config files, state folders, logs).

Every parser refuses bad input with one line (a :class:`~node.cli.context.UserError`, or a click usage
error for option types) before anything is sent, so a typo never costs a fee or changes a contract.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import click
from pytoniq_core import Address

from node.chain import NETWORKS, CocoonError, check_network

from .context import DEFAULT_STATE, UserError

UINT16, UINT32 = 2**16 - 1, 2**32 - 1
# TON keeps times as 32-bit unix seconds and contracts add delays to them: the embedded chain's clock
# stays below 2100-01-01 so that "now + a delay" still fits, and moves at most ten years per step.
from node.chain.network import MAX_ADVANCE, MAX_NOW as CLOCK_LIMIT  # noqa: E402  (the chain server's bounds too)
# The registry keeps a proxy's endpoint in one cell (wrappers.registry.endpoint_cell).
MAX_ENDPOINT_BYTES = 127


# More TON than exists (the supply is about 5·10^9 TON): an amount above it is a typo.
MAX_TON = 10**10


def parse_ton(value: str, what: str = "amount", allow_zero: bool = False) -> int:
    """'12.5' -> nanoTON, exactly (no float rounding); positive (or 0 with ``allow_zero``), finite,
    at most :data:`MAX_TON`, at most 9 decimals."""
    from decimal import Decimal, InvalidOperation

    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise UserError(f"{what} {value!r} is not a number of TON (e.g. 12.5)") from None
    if not d.is_finite():
        raise UserError(f"{what} {value!r} is not a number of TON (e.g. 12.5)")
    if d < 0 or (d == 0 and not allow_zero):
        raise UserError(f"{what} cannot be negative" if allow_zero else f"{what} must be more than 0 TON")
    if d > MAX_TON:
        raise UserError(f"{what} {value} TON is more than all TON in existence; check the number")
    nano = d * 10**9
    if nano != nano.to_integral_value():
        raise UserError(f"{what} {value!r} has more than 9 decimals (1 nanoTON is the smallest unit)")
    return int(nano)


def parse_address(value: str, what: str) -> Address:
    try:
        return Address(value)
    except Exception:
        raise UserError(f"{what} {value!r} is not a TON address") from None


def parse_hex256(text: str, what: str) -> int:
    """A 256-bit value (a hash or an Ed25519 public key) as 64 hex digits, 0x allowed."""
    v = text.lower().removeprefix("0x")
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise UserError(f"{what} is 64 hex digits, got {text!r}")
    return int(v, 16)


def not_sent(ctx, where: str) -> str:
    """Why a message from the wallet did not reach ``where`` on the embedded chain, in one line."""
    import time

    text = f"the message did not reach {where}; nothing changed"
    now = ctx.call(ctx.net.now())  # the wall clock on a real network: never ahead
    if now > time.time() + 60:
        text += (f" (the wallet signs messages valid until this computer's clock + 60 s, and the local chain's "
                 f"clock, {utc(now)}, is past that)")
    return text


def utc(unix: int) -> str:
    """A unix time as the CLI prints times: ``2026-01-01 00:00:00 UTC``."""
    return dt.datetime.fromtimestamp(unix, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class TonAmount(click.ParamType):
    """A click option type for TON amounts: exact nanoTON, refused with a usage error when bad."""

    name = "TON"

    def __init__(self, allow_zero: bool = False):
        self.allow_zero = allow_zero

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_ton(value, "the amount", self.allow_zero)
        except UserError as e:
            self.fail(e.message, param, ctx)


class Nanotons(click.ParamType):
    """A click option type for a whole number of nanoTON (prices per token), 0 up to :data:`MAX_TON`."""

    name = "NANOTON"

    def convert(self, value, param, ctx):
        try:
            v = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number of nanoTON", param, ctx)
        if not 0 <= v <= MAX_TON * 10**9:
            self.fail(f"{v} is not between 0 and {MAX_TON * 10**9} nanoTON", param, ctx)
        return v


def uint(bits: int, minimum: int = 0) -> click.IntRange:
    """A click type for an unsigned field of ``bits`` bits (out-of-range values are usage errors)."""
    return click.IntRange(minimum, 2**bits - 1)


def owner_address(owner_hash: int) -> Address:
    """The basechain address of an owner the registry keys by its hash (proxies, workers)."""
    return Address((0, owner_hash.to_bytes(32, "big")))


def parse_endpoint(text: str) -> str:
    """A proxy endpoint as docs/PROTOCOL.md §2 registers it: ``"CLIENTS_HOST:PORT WORKERS_HOST:PORT"``.

    A single ``HOST:PORT`` means one listener for both and is registered as ``"HOST:PORT HOST:PORT"``.
    Returns the text to register; refuses anything else with one line.
    """
    from node.link.endpoint import EndpointError, parse

    form = "HOST:PORT or 'CLIENTS_HOST:PORT WORKERS_HOST:PORT', e.g. proxy.example.com:8443"
    t = text.strip()
    if not t:
        raise UserError(f"the endpoint is empty; give {form}")
    parts = t.split()
    if len(parts) == 1:
        parts = parts * 2
    try:
        ep = parse(" ".join(parts))
    except EndpointError as e:
        raise UserError(f"{e}; give {form}") from None
    out = ep.format()
    if len(out.encode()) > MAX_ENDPOINT_BYTES:
        raise UserError(f"the endpoint is {len(out.encode())} bytes; the registry keeps at most {MAX_ENDPOINT_BYTES}")
    return out


def check_advance(now: int, seconds: int) -> None:
    """Refuse a clock step the embedded chain could not survive, saying why."""
    if seconds < 0:
        raise UserError("time only moves forward: give a positive number of seconds")
    if seconds > MAX_ADVANCE:
        raise UserError(f"{seconds} s is more than ten years ({MAX_ADVANCE} s), the most one step moves the clock; "
                        "TON keeps times as 32-bit unix seconds, so a chain moved that far would break")
    if now + seconds > CLOCK_LIMIT:
        raise UserError(f"that would move the embedded chain's clock past {utc(CLOCK_LIMIT)}: TON keeps times as "
                        "32-bit unix seconds and contracts add delays to them; start a fresh chain (a new "
                        "--state-file) for longer journeys")


# ------------------------------------------------------------------------ which registry
from node.deploy.record import registry_file  # noqa: E402  (the deployment writes it too)

registry_option = click.option("--registry", envvar="COCOON_REGISTRY", help="Registry contract address "
                               "(env COCOON_REGISTRY; on the embedded chain defaults to the last deployed).")


def registry_address(registry: Optional[str], state_file: Path, network: str) -> Address:
    """The registry of ``--registry``, else (embedded chain) the one :func:`registry_file` remembers."""
    if registry:
        return parse_address(registry, "--registry")
    f = registry_file(state_file)
    if network == "embedded" and f.exists():
        try:
            return Address(f.read_text().strip())
        except Exception:
            raise UserError(f"{f} does not hold a registry address; pass --registry ADDRESS or deploy again") from None
    raise UserError("which registry? pass --registry ADDRESS (or set COCOON_REGISTRY); on the embedded chain "
                    "`cocoon registry deploy` remembers the last one")


# ------------------------------------------------------------------------ services' state
def client_store(state_dir: Path):
    """The client gateway's SQLite store in ``state_dir``; one line if there is none yet."""
    from node.client.store import Store

    db = Path(state_dir) / "client.sqlite"
    if not db.exists():
        raise UserError(f"no gateway state in {state_dir}; run `cocoon client run --state {state_dir}` first "
                        "(or pass --state)")
    return Store(db)


# ------------------------------------------------------------------------ the options commands share
def stack(*options):
    """One decorator from several click options, shown in ``--help`` in the order given."""
    def apply(f):
        for o in reversed(options):
            f = o(f)
        return f
    return apply


class NetworkType(click.ParamType):
    """A network name or an http(s) URL of a toncenter-v2 API."""

    name = "network"

    def convert(self, value, param, ctx):
        try:
            return check_network(value)
        except CocoonError as e:
            self.fail(str(e), param, ctx)

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(NETWORKS) + "|URL]"


NETWORK_HELP = ("Which chain: embedded (in this process, kept in --state-file), local (the chain server of "
                "`cocoon chain serve` at 127.0.0.1:8081), an http(s):// URL of a toncenter-v2 API (API key from "
                "COCOON_API_KEY), testnet or mainnet.")


def network_option(help: str = NETWORK_HELP):
    """--network for a command, the embedded chain by default (env COCOON_NETWORK)."""
    return click.option("--network", type=NetworkType(), default="embedded", show_default=True,
                        envvar="COCOON_NETWORK", help=help)


def state_file_option(help: str = "Embedded chain only: where the local chain is kept between commands "
                                  "(env COCOON_CHAIN_STATE)."):
    """--state-file: the embedded chain's state file."""
    return click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_STATE,
                        show_default=True, help=help)


def wallet_version_option(help: str = "Wallet contract version of your key."):
    """--wallet: v4r2 (the default) or v5r1, stored as ``wallet_version``."""
    return click.option("--wallet", "wallet_version", type=click.Choice(["v4r2", "v5r1"]), default="v4r2",
                        show_default=True, help=help)


def wallet_options(mnemonic: str = "File with your 24-word wallet mnemonic (or set COCOON_MNEMONIC). Never printed.",
                   key: str = "File with a 32-byte Ed25519 seed (hex or raw). Never printed.",
                   version: str = "Wallet contract version of your key."):
    """--mnemonic-file, --key-file and --wallet: the key that signs, and its wallet contract."""
    return stack(click.option("--mnemonic-file", type=click.Path(dir_okay=False), help=mnemonic),
                 click.option("--key-file", type=click.Path(exists=True, dir_okay=False), help=key),
                 wallet_version_option(version))


network_options = stack(network_option(), state_file_option(), wallet_options())
network_options.__doc__ = ("--network, --state-file, --mnemonic-file, --key-file and --wallet, for commands that "
                           "touch a chain with your wallet.")


def service_chain_options(wallet: str, key: str):
    """--registry, --network, --chain-api-key, --mnemonic-file, --key-file and --wallet of a long-running
    service (client gateway, proxy): it runs on the chain server or a real network, never the embedded
    chain. ``wallet`` and ``key`` say what the service's wallet is for."""
    return stack(
        click.option("--registry", required=True, envvar="COCOON_REGISTRY",
                     help="The registry contract's address (env COCOON_REGISTRY)."),
        click.option("--network", default="local", show_default=True, envvar="COCOON_NETWORK",
                     help="Which chain: local (the chain server of `cocoon chain serve` at 127.0.0.1:8081), an "
                          "http(s):// URL of a toncenter-v2 API, testnet or mainnet (env COCOON_NETWORK)."),
        click.option("--chain-api-key", envvar="COCOON_API_KEY",
                     help="API key of the toncenter endpoint (env COCOON_API_KEY)."),
        wallet_options(mnemonic=wallet, key=key, version="Wallet contract version of that key."))


def load_config(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """--config FILE: a TOML file whose keys are the options' names (dashes or underscores); flags win."""
    if not value:
        return value
    import tomllib

    try:
        data = tomllib.loads(Path(value).read_text())
    except OSError as e:
        raise click.BadParameter(f"cannot read {value}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise click.BadParameter(f"{value} is not TOML: {e}") from None
    names = {p.name for p in ctx.command.params if p.name}
    defaults = {}
    for k, v in data.items():
        key = k.replace("-", "_")
        if key not in names or key == "config":
            raise click.BadParameter(f"{value}: unknown setting {k!r}")
        defaults[key] = v
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def config_option(example: str):
    """--config FILE: a TOML file giving any of the command's options (:func:`load_config`)."""
    return click.option("--config", type=click.Path(dir_okay=False, exists=True), callback=load_config,
                        is_eager=True, expose_value=False,
                        help=f"TOML file with any of these options (e.g. {example}); flags override it.")


def state_dir_option(default: Path, envvar: str, holds: str):
    """--state DIR, stored as ``state_dir``: a service's state folder; ``holds`` says what is in it."""
    return click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=default,
                        show_default=True, envvar=envvar, help=f"The {holds} (env {envvar}).")


def json_option(help: str = "Print one JSON object."):
    """--json, stored as ``as_json``: print machine-readable output instead of text."""
    return click.option("--json", "as_json", is_flag=True, help=help)

log_level_option = click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info",
                                show_default=True, help="How much the service logs (to stderr).")

pccs_url_option = click.option("--pccs-url", help="PCCS (or Intel PCS) base URL for the collateral of real TDX "
                                                  "quotes.")


def hostport(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets) -> (host, port); ``what`` names the option in the error."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--{what} is HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def lang_option(help: str):
    """--lang func|tolk: which build of the contracts (Tolk by default; both follow the same schema)."""
    return click.option("--lang", type=click.Choice(["func", "tolk"]), default="tolk", show_default=True, help=help)


def tee_trust_options(allow_simulated: str):
    """--allow-simulated TRUST_JSON (stored as ``dev_trust``), --pccs-url and --accept-tcb: what an
    attestation check accepts."""
    return stack(
        click.option("--allow-simulated", "dev_trust", type=click.Path(dir_okay=False, exists=True),
                     metavar="TRUST_JSON", help=allow_simulated),
        pccs_url_option,
        click.option("--accept-tcb", multiple=True, metavar="STATUS",
                     help="A TCB status to accept; repeatable (default: UpToDate only)."))

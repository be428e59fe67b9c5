"""Parsing what users type on the command line: TON amounts, addresses, 256-bit hex values, proxy
endpoints, times, and the integer ranges of the contracts' fields.

Every parser refuses bad input with one line (a :class:`~node.cli.context.UserError`, or a click usage
error for option types) before anything is sent, so a typo never costs a fee or changes a contract.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import click
from pytoniq_core import Address

# The three basic parsers live with the CLI's error type in node/cli/context.py; this module re-exports them.
from .context import MAX_TON, UserError, parse_address, parse_hex256, parse_ton  # noqa: F401

UINT16, UINT32 = 2**16 - 1, 2**32 - 1
# TON keeps times as 32-bit unix seconds and contracts add delays to them: the embedded chain's clock
# stays below 2100-01-01 so that "now + a delay" still fits, and moves at most ten years per step.
from node.chain.network import MAX_ADVANCE, MAX_NOW as CLOCK_LIMIT  # noqa: E402  (the chain server's bounds too)
# The registry keeps a proxy's endpoint in one cell (wrappers.registry.endpoint_cell).
MAX_ENDPOINT_BYTES = 127


def not_sent(ctx, where: str) -> str:
    """Why a message from the wallet did not reach ``where`` on the embedded chain, in one line."""
    import time

    text = f"the message did not reach {where}; nothing changed"
    if ctx.chain is not None and ctx.chain.now > time.time() + 60:
        text += (f" (the wallet signs messages valid until this computer's clock + 60 s, and the embedded chain's "
                 f"clock, {utc(ctx.chain.now)}, is past that)")
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

"""Where the devnet's money is, read from the chain: wallets, stakes, channels, and the supply.

The books close when nothing is in flight: every nanoTON the faucet minted is in some account or
went to fees (``minted == balances + fees``, from the chain server's ``/dev/supply``). Channels are
found without asking the services: the client's from its gateway's state, the proxy's to each
worker from their addresses (payer = the proxy's wallet, payee = the worker's owner, payer key =
the proxy's operator key).
"""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pytoniq_core import Address

from .state import DevnetState
from wrappers import TON


@dataclass
class ChannelBook:
    name: str            # "client → proxy", "proxy → worker-1"
    address: str
    state: str
    deposited: int
    claimed: int
    withdrawn: int
    owed: int
    balance: int         # the escrow account's balance (held + reserve and gas)

    @property
    def held(self) -> int:
        return self.deposited - self.claimed - self.withdrawn


@dataclass
class Books:
    wallets: dict[str, int] = field(default_factory=dict)        # label -> balance
    stakes: dict[str, dict] = field(default_factory=dict)        # label -> {"active", "unbonding", "balance"}
    channels: list[ChannelBook] = field(default_factory=list)
    registry_balance: int = 0
    others: int = 0       # every other account (reputation records...)
    minted: int = 0
    balances: int = 0
    fees: int = 0

    @property
    def adds_up(self) -> bool:
        return self.minted == self.balances + self.fees

    def to_json(self) -> dict:
        return {"wallets": self.wallets, "stakes": self.stakes,
                "channels": [vars(c) | {"held": c.held} for c in self.channels],
                "registry": self.registry_balance, "others": self.others, "minted": self.minted,
                "balances": self.balances, "fees": self.fees, "adds_up": self.adds_up}


def supply(chain_url: str) -> tuple[int, int, int]:
    """(minted, balances, fees) from the chain server."""
    with urllib.request.urlopen(f"{chain_url}/dev/supply", timeout=10) as r:
        doc = json.loads(r.read())["result"]
    return int(doc["minted"]), int(doc["balances"]), int(doc["fees"])


def client_channels(state: DevnetState) -> list[tuple[str, str]]:
    """(gateway name, channel address) of every client gateway, from their SQLite state."""
    from node.client.store import Store

    out = []
    for label in sorted(state.parties):
        db = Path(state.dir) / label / "client.sqlite"
        if not db.exists():
            continue
        store = Store(db)
        try:
            out += [(label, c.address) for c in store.channels()]
        finally:
            close = getattr(store, "close", None)
            if close:
                close()
    return out


async def read_books(state: DevnetState) -> Books:
    from node.chain import load_keys, open_network
    from wrappers import escrow as E
    from wrappers import keys as K
    from wrappers import registry as R
    from wrappers import stake as S

    b = Books()
    net = await open_network(state.chain_url)
    try:
        registry = Address(state.registry)
        b.registry_balance = await net.balance(registry)
        codes = await net.contract(R.Registry, registry).get_child_codes()
        for label, p in state.parties.items():
            if not p.get("address"):
                continue
            b.wallets[label] = await net.balance(Address(p["address"]))
            if p.get("stake"):
                addr = Address(p["stake"])
                st = await net.contract(S.Stake, addr).get_state() if await net.status(addr) == "active" else None
                b.stakes[label] = {"active": st.active if st else 0, "unbonding": st.unbonding if st else 0,
                                   "balance": await net.balance(addr)}

        async def channel(name: str, addr: Address) -> None:
            if await net.status(addr) != "active":
                return
            ch = await net.contract(E.Escrow, addr).get_channel()
            b.channels.append(ChannelBook(name, addr.to_str(is_user_friendly=False), ch.state_name, ch.deposited,
                                          ch.claimed, ch.withdrawn, ch.owed, await net.balance(addr)))

        for label, a in client_channels(state):
            await channel(f"{label} → proxy", Address(a))
        proxy = state.parties.get("proxy", {})
        if proxy.get("address") and proxy.get("operator_key"):
            seed = load_keys(key_file=proxy["operator_key"]).private[:32]
            op = K.public_key_int(K.signing_key(seed))
            for label, p in sorted(state.parties.items()):
                if label.startswith("worker-") and p.get("address"):
                    addr = E.escrow_address(codes.escrow, registry, Address(proxy["address"]), Address(p["address"]), op)
                    await channel(f"proxy → {label}", addr)
        b.minted, b.balances, b.fees = supply(state.chain_url)
        known = (sum(b.wallets.values()) + sum(s["balance"] for s in b.stakes.values())
                 + sum(c.balance for c in b.channels) + b.registry_balance)
        b.others = b.balances - known
    finally:
        await net.close(save=False)
    return b


def ton(n: int, sign: bool = False) -> str:
    s = f"{n / TON:+,.9f}" if sign else f"{n / TON:,.9f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def table(b: Books) -> list[str]:
    """The money table: wallets, stakes locked, channels (held, claimed), other contracts, fees."""
    rows: list[tuple[str, str, int]] = []
    for label, v in b.wallets.items():
        rows.append(("wallet", label, v))
    for label, s in b.stakes.items():
        rows.append(("stake locked", f"{label} (active {ton(s['active'])}, unbonding {ton(s['unbonding'])})",
                     s["balance"]))
    for c in b.channels:
        rows.append(("channel", f"{c.name} {c.state}: deposited {ton(c.deposited)}, claimed {ton(c.claimed)}, "
                                f"held {ton(c.held)}", c.balance))
    rows.append(("registry", "the registry's balance", b.registry_balance))
    rows.append(("other", "reputation records and other contracts", b.others))
    rows.append(("fees", "every transaction's fees so far", b.fees))
    w = max(len(r[0]) for r in rows)
    out = [f"  {kind:<{w}}  {ton(v):>22}  {what}" for kind, what, v in rows]
    total = b.balances + b.fees
    out.append(f"  {'':<{w}}  {'-' * 22}")
    out.append(f"  {'total':<{w}}  {ton(total):>22}  balances + fees")
    out.append(f"  {'minted':<{w}}  {ton(b.minted):>22}  by the faucet: "
               + ("they add up" if b.adds_up else f"DIFFERENCE {ton(b.minted - total, True)}"))
    return out


def channel_of(books: Books, name: str) -> Optional[ChannelBook]:
    return next((c for c in books.channels if c.name == name), None)

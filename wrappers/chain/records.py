"""What a transaction did, in the terms tests, fee tables and the demo talk about.

A :class:`TxRecord` is built once per emulated transaction from the parsed ``Transaction``; the
matcher :func:`has_transaction` and the renderers :func:`fee_table` and :func:`tx_tree` read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from pytoniq_core import Address, Cell
from pytoniq_core.tlb.transaction import MessageAny, Transaction

from .cells import to_pytoniq


@dataclass
class TxRecord:
    account: Address
    lt: int
    now: int
    src: Optional[Address] = None
    value: int = 0
    op: Optional[int] = None
    external: bool = False
    bounced: bool = False  # the in message is a bounce
    aborted: bool = True
    compute_skipped: Optional[str] = None
    exit_code: Optional[int] = None
    gas_used: int = 0
    gas_fees: int = 0
    action_result: Optional[int] = None
    fwd_fees: int = 0  # forward fees of outgoing messages, paid by this account
    action_fees: int = 0
    storage_fees: int = 0
    total_fees: int = 0
    in_fwd_fee: int = 0  # forward fee the in message carried, collected on delivery
    deploy: bool = False
    end_status: str = ""
    rejected: bool = False  # an external message the account did not accept (never on chain)
    parent: Optional["TxRecord"] = field(default=None, repr=False)
    children: list["TxRecord"] = field(default_factory=list, repr=False)
    # the emulator's cells; pytoniq objects are built from them only on demand
    _in_cell: Any = field(default=None, repr=False)
    _out_cells: list = field(default_factory=list, repr=False)
    _tx_cell: Any = field(default=None, repr=False)

    @property
    def in_msg(self) -> Optional[MessageAny]:
        if self._in_cell is None:
            return None
        return MessageAny.deserialize(to_pytoniq(self._in_cell).begin_parse())

    @property
    def out_msgs(self) -> list[MessageAny]:
        return [MessageAny.deserialize(to_pytoniq(c).begin_parse()) for c in self._out_cells]

    @property
    def out_cells(self) -> list[Cell]:
        return [to_pytoniq(c) for c in self._out_cells]

    @property
    def hash(self) -> bytes:
        return bytes.fromhex(self._tx_cell.get_hash()) if self._tx_cell is not None else b""

    @property
    def transaction(self) -> Optional[Transaction]:
        """The full parsed transaction (pytoniq), for tests that need a field not lifted here."""
        if self._tx_cell is None:
            return None
        return Transaction.deserialize(to_pytoniq(self._tx_cell).begin_parse())

    @property
    def success(self) -> bool:
        return (not self.rejected and not self.aborted and self.exit_code in (0, 1)
                and self.action_result in (None, 0))

    @property
    def dest(self) -> Address:
        return self.account

    @classmethod
    def make_rejected(cls, msg_t, dest: Address, now: int, lt: int) -> "TxRecord":
        return cls(account=dest, lt=lt, now=now, external=True, rejected=True, _in_cell=msg_t)

    def describe(self) -> str:
        op = f"op=0x{self.op:08x}" if self.op is not None else "op=-"
        who = "ext" if self.external else _short(self.src)
        status = "ok" if self.success else (
            "rejected" if self.rejected else
            f"exit={self.exit_code}" + (f" action={self.action_result}" if self.action_result else ""))
        extra = " deploy" if self.deploy else ""
        extra += " bounced" if self.bounced else ""
        return (f"{who} -> {_short(self.account)} {op} value={fmt_ton(self.value)} {status}{extra} "
                f"gas={self.gas_used} fees={fmt_ton(self.total_fees + self.fwd_fees)}")


def _short(a: Optional[Address]) -> str:
    if a is None:
        return "-"
    return f"{a.wc}:{a.hash_part.hex()[:8]}"


def fmt_ton(nano: int) -> str:
    """nanoTON as TON with no trailing zeros: 1500000000 -> '1.5'."""
    sign, nano = ("-" if nano < 0 else ""), abs(nano)
    whole, frac = divmod(nano, 10**9)
    return f"{sign}{whole}" + (f".{frac:09d}".rstrip("0") if frac else "")


def _op(body: Optional[Cell]) -> Optional[int]:
    if body is None:
        return None
    s = body.begin_parse()
    if s.remaining_bits >= 32:
        return s.preload_uint(32)
    return None


def _addr(a: Optional[tuple[int, bytes]]) -> Optional[Address]:
    return None if a is None else Address(a)


def record_from_facts(f, head, account: Address, in_t, tx_t) -> TxRecord:
    """Build a record from the hot-path facts (wrappers.chain.fastparse)."""
    return TxRecord(
        account=account, lt=f.lt, now=f.now, src=_addr(head.src) if head.internal else None,
        value=head.value, op=head.op if head.internal else None, external=not head.internal,
        bounced=head.bounced, aborted=f.aborted, compute_skipped=f.compute_skipped, exit_code=f.exit_code,
        gas_used=f.gas_used, gas_fees=f.gas_fees, action_result=f.action_result, fwd_fees=f.fwd_fees,
        action_fees=f.action_fees, storage_fees=f.storage_fees, total_fees=f.total_fees,
        in_fwd_fee=head.fwd_fee if head.internal else 0,
        deploy=f.orig_status != "active" and f.end_status == "active", end_status=f.end_status,
        _in_cell=in_t, _out_cells=f.out_msgs, _tx_cell=tx_t)


def _match_addr(want: Any, got: Optional[Address]) -> bool:
    if want is None:
        return got is None
    if hasattr(want, "address"):  # wrapper objects that carry an address
        want = want.address
    if isinstance(want, str):
        want = Address(want)
    return got is not None and want.wc == got.wc and want.hash_part == got.hash_part


def matches(rec: TxRecord, **kw) -> bool:
    """True when ``rec`` satisfies every given criterion. Criteria: ``from_``, ``to``, ``op``,
    ``success``, ``exit_code``, ``deploy``, ``value``, ``bounced``, ``aborted``, ``action_result``,
    ``external``; a callable criterion is called with the field's value."""
    fields = {"from_": rec.src, "to": rec.account, "op": rec.op, "success": rec.success,
              "exit_code": rec.exit_code, "deploy": rec.deploy, "value": rec.value,
              "bounced": rec.bounced, "aborted": rec.aborted, "action_result": rec.action_result,
              "external": rec.external}
    for k, want in kw.items():
        if k not in fields:
            raise TypeError(f"unknown transaction criterion {k!r}; known: {', '.join(fields)}")
        got = fields[k]
        if callable(want) and not isinstance(want, type):
            if not want(got):
                return False
        elif k in ("from_", "to"):
            if not _match_addr(want, got):
                return False
        elif got != want:
            return False
    return True


CRITERIA = ("from_", "to", "op", "success", "exit_code", "deploy", "value", "bounced", "aborted",
            "action_result", "external")


def _check(kw: dict) -> None:
    bad = [k for k in kw if k not in CRITERIA]
    if bad:
        raise TypeError(f"unknown transaction criterion {bad[0]!r}; known: {', '.join(CRITERIA)}")


def find_transactions(txs: Iterable[TxRecord], **kw) -> list[TxRecord]:
    _check(kw)
    return [t for t in txs if matches(t, **kw)]


def has_transaction(txs: Iterable[TxRecord], **kw) -> bool:
    """Whether any transaction in ``txs`` matches all criteria (see :func:`matches`)."""
    _check(kw)
    return any(matches(t, **kw) for t in txs)


def fee_table(txs: Iterable[TxRecord], names: dict[str, str] | None = None) -> str:
    """A per-transaction fee table: compute gas and fee, storage, forward and total fees, exit codes."""
    names = names or {}

    def name(a: Optional[Address]) -> str:
        if a is None:
            return "ext"
        return names.get(f"{a.wc}:{a.hash_part.hex()}", _short(a))

    rows = [("#", "from", "to", "op", "exit", "action", "gas", "gas fee", "storage", "fwd fees", "total fees")]
    for i, t in enumerate(txs):
        rows.append((str(i), name(t.src) if not t.external else "ext", name(t.account),
                     f"0x{t.op:08x}" if t.op is not None else "-",
                     "rej" if t.rejected else (t.compute_skipped or str(t.exit_code)),
                     "-" if t.action_result is None else str(t.action_result),
                     str(t.gas_used), fmt_ton(t.gas_fees), fmt_ton(t.storage_fees), fmt_ton(t.fwd_fees),
                     fmt_ton(t.total_fees)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def tx_tree(roots: Iterable[TxRecord], names: dict[str, str] | None = None) -> str:
    """The transactions as a tree: each message's transaction under the one that sent it."""
    names = names or {}
    lines: list[str] = []

    def label(t: TxRecord) -> str:
        s = t.describe()
        for k, v in names.items():
            wc, h = k.split(":")
            s = s.replace(f"{wc}:{h[:8]}", v)
        return s

    def walk(t: TxRecord, prefix: str, last: bool, top: bool) -> None:
        lines.append((prefix + ("" if top else ("└─ " if last else "├─ "))) + label(t))
        kids = t.children
        for i, c in enumerate(kids):
            walk(c, prefix + ("" if top else ("   " if last else "│  ")), i == len(kids) - 1, False)

    for r in roots:
        if r.parent is None:
            walk(r, "", True, True)
    return "\n".join(lines)

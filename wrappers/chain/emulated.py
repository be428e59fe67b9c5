"""The embedded chain: a local TON basechain run by tonpy's C++ transaction emulator.

Every transaction is executed by the same emulator code validators use (storage, credit, compute,
action and bounce phases, real fees from :mod:`wrappers.chain.config`). This module only keeps the
accounts and the message queue:

* accounts and queued messages are kept as the emulator's own cells, so a transaction costs no
  cell conversion; its result is read in place (:mod:`wrappers.chain.fastparse`) to route the
  outgoing messages and build the :class:`~wrappers.chain.records.TxRecord` tests and fee tables
  read, and pytoniq objects are built only when asked for;
* messages are processed in logical-time order (a heap on ``created_lt``), so a chain of messages
  runs the way it would on one shard;
* ``now`` is a number you move (:meth:`EmbeddedChain.advance`), snapshots copy the dictionaries of
  immutable cells, so they are cheap.
"""
from __future__ import annotations

import heapq
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pytoniq_core import Address, Cell, begin_cell
from pytoniq_core.tlb.account import ShardAccount, StateInit
from pytoniq_core.tlb.block import CurrencyCollection
from pytoniq_core.tlb.transaction import ExternalMsgInfo, InternalMsgInfo, MessageAny
from tonpy.libs.python_ton import PyEmulator
from tonpy.types import Cell as TCell

from .cells import to_pytoniq, to_tonpy
from .config import config_cell
from .fastparse import account_balance, message_head, transaction_facts
from .getmethod import GetMethodError, run_get_method
from .records import TxRecord, record_from_facts

if TYPE_CHECKING:
    from .treasury import Treasury

GENESIS_TIME = 1_767_225_600  # 2026-01-01 00:00:00 UTC: a fixed, reproducible start of time
# Mints value into the chain (treasury funding). On mainnet this role belongs to nobody: the faucet
# address is the zero masterchain account, which no key controls.
FAUCET = Address("-1:" + "00" * 32)


def addr_key(address: Address | str) -> str:
    if isinstance(address, str):
        address = Address(address)
    return f"{address.wc}:{address.hash_part.hex()}"


class ChainError(Exception):
    """A message the chain cannot even attempt (no account to pay for it, malformed cell...)."""


@dataclass
class _Queued:
    lt: int
    seq: int
    msg: TCell  # the emulator's own cell: no conversion between transactions
    parent: Optional[TxRecord]

    def __lt__(self, other: "_Queued") -> bool:
        return (self.lt, self.seq) < (other.lt, other.seq)


@dataclass
class Snapshot:
    accounts: dict
    now: int
    lt: int
    seq: int
    tx_count: int
    minted: int = 0
    transactions: tuple = ()  # the records themselves: a count alone cannot tell two histories apart
    fees_before: int = 0


class EmbeddedChain:
    """A local chain. Synchronous core; :class:`~wrappers.chain.provider.EmbeddedProvider` wraps it for
    pytoniq's async contracts and wallets."""

    def __init__(self, now: int = GENESIS_TIME, config: Cell | None = None, verbosity: int = 0):
        self.config = config or config_cell()
        self._config_t = to_tonpy(self.config)
        self._emu = PyEmulator(self._config_t.cell)
        self._emu.set_rand_seed("00" * 32)
        self.now = now
        self.lt = 1_000_000
        self._seq = itertools.count()
        self.accounts: dict[str, TCell] = {}  # addr -> ShardAccount cell (tonpy)
        self.transactions: list[TxRecord] = []
        self._queue: list[_Queued] = []
        self._treasuries: dict[str, "Treasury"] = {}
        self.minted = 0  # total value created by the faucet: the money supply of this chain
        self.fees_before = 0  # fees of transactions not in self.transactions (a chain loaded from a file)
        self._getter_cache: dict[str, tuple] = {}  # addr -> (account cell, code, data, balance)

    # ----------------------------------------------------------------- time and snapshots
    def advance(self, seconds: int) -> int:
        """Move ``now`` forward (time travel). Returns the new time."""
        if seconds < 0:
            raise ValueError("time only moves forward; use a snapshot to go back")
        self.now += seconds
        return self.now

    def snapshot(self) -> Snapshot:
        return Snapshot(dict(self.accounts), self.now, self.lt, next(self._seq), len(self.transactions), self.minted,
                        tuple(self.transactions), self.fees_before)

    def restore(self, snap: Snapshot) -> None:
        self.accounts = dict(snap.accounts)
        self.now, self.lt, self.minted = snap.now, snap.lt, snap.minted
        self._seq = itertools.count(snap.seq + 1)
        self.transactions = list(snap.transactions)
        self.fees_before = snap.fees_before
        self._queue.clear()
        for t in self._treasuries.values():
            t.resync()

    # ----------------------------------------------------------------- accounts
    def shard_account(self, address: Address | str) -> Optional[ShardAccount]:
        raw = self.accounts.get(addr_key(address))
        if raw is None:
            return None
        return ShardAccount.deserialize(to_pytoniq(raw).begin_parse())

    def account_cell(self, address: Address | str) -> Optional[Cell]:
        raw = self.accounts.get(addr_key(address))
        return None if raw is None else to_pytoniq(raw)

    def balance(self, address: Address | str) -> int:
        raw = self.accounts.get(addr_key(address))
        return 0 if raw is None else account_balance(raw)

    def state(self, address: Address | str) -> tuple[str, Optional[Cell], Optional[Cell]]:
        """(status, code, data): status is 'nonexist', 'uninit', 'active' or 'frozen'."""
        sa = self.shard_account(address)
        if sa is None or sa.account is None:
            return "nonexist", None, None
        st = sa.account.storage.state
        if st.type_ == "account_active":
            return "active", st.state_init.code, st.state_init.data
        if st.type_ == "account_frozen":
            return "frozen", None, None
        return "uninit", None, None

    # ----------------------------------------------------------------- messages
    def send(self, message: Cell | MessageAny, *, run: bool = True) -> list[TxRecord]:
        """Queue a message (internal or external-in) and, by default, run until the queue is empty.
        Returns every transaction the message caused, in execution order."""
        if isinstance(message, MessageAny):
            message = message.serialize()
        start = len(self.transactions)
        heapq.heappush(self._queue, _Queued(self.lt, next(self._seq), to_tonpy(message), None))
        if run:
            self.run()
        return self.transactions[start:]

    def send_boc(self, boc: bytes) -> list[TxRecord]:
        return self.send(Cell.one_from_boc(boc))

    def internal(self, src: Address, dest: Address, value: int, body: Cell | None = None,
                 state_init: StateInit | None = None, bounce: bool = True) -> Cell:
        """Build an internal message as another contract would send it (used by the faucet)."""
        info = InternalMsgInfo(True, bounce, False, src, dest, CurrencyCollection(grams=value, other=None),
                               0, 0, self.lt, self.now)
        return MessageAny(info=info, init=state_init, body=body or Cell.empty()).serialize()

    def external(self, dest: Address, body: Cell, state_init: StateInit | None = None) -> Cell:
        info = ExternalMsgInfo(None, dest, 0)
        return MessageAny(info=info, init=state_init, body=body).serialize()

    def mint(self, dest: Address, value: int, state_init: StateInit | None = None,
             body: Cell | None = None) -> list[TxRecord]:
        """Create ``value`` out of nothing and send it to ``dest`` (funding accounts at genesis)."""
        self.minted += value
        return self.send(self.internal(FAUCET, dest, value, body, state_init, bounce=False))

    def forge(self, src: Address, dest: Address, value: int, body: Cell | None = None,
              state_init: StateInit | None = None, bounce: bool = True) -> list[TxRecord]:
        """Deliver a message as if ``src`` had sent it, with ``value`` created for it (counted as
        minted). Tests use it to act as a contract that is not deployed, to check that the receiver
        authenticates senders by address; nothing else can forge a sender on a real chain."""
        self.minted += value
        return self.send(self.internal(src, dest, value, body, state_init, bounce))

    def run(self, max_transactions: int = 100_000) -> None:
        """Process queued messages in logical-time order until none is left."""
        done = 0
        while self._queue:
            q = heapq.heappop(self._queue)
            self._execute(q)
            done += 1
            if done > max_transactions:
                raise ChainError(f"more than {max_transactions} transactions from one message: a loop?")

    def _execute(self, q: _Queued) -> None:
        head = message_head(q.msg)
        if head.dest is None:
            raise ChainError("a message without a destination address cannot be delivered")
        key = f"{head.dest[0]}:{head.dest[1].hex()}"
        dest = Address(head.dest)
        acc = self.accounts.get(key)
        if acc is None:
            acc = _EMPTY_ACCOUNT
        lt = max(self.lt, q.lt + 1)
        ok = self._emu.emulate_transaction(acc.cell, q.msg.cell, str(self.now), str(lt), 1, False)
        if not ok:
            # The emulator refuses messages no validator would include (an external message the
            # account did not accept). Nothing happens on chain; record it for the caller.
            rec = TxRecord.make_rejected(q.msg, dest, self.now, lt)
        else:
            tx_t = TCell(self._emu.transaction_cell)
            self.accounts[key] = TCell(self._emu.account_cell)
            facts = transaction_facts(tx_t)
            rec = record_from_facts(facts, head, dest, q.msg, tx_t)
            self.lt = facts.lt + len(facts.out_msgs) + 2
            for mc in facts.out_msgs:
                h = message_head(mc)
                if h.internal:
                    heapq.heappush(self._queue, _Queued(h.created_lt, next(self._seq), mc, rec))
        rec.parent = q.parent
        if q.parent is not None:
            q.parent.children.append(rec)
        self.transactions.append(rec)

    # ----------------------------------------------------------------- money
    def total_balance(self) -> int:
        """Sum of every account's balance."""
        return sum(self.balance(Address(k)) for k in self.accounts)

    def fees_collected(self) -> int:
        """Every nanoTON the network took: transaction fees plus the forward fees messages carried."""
        return self.fees_before + sum(t.total_fees + t.in_fwd_fee for t in self.transactions)

    def money_leak(self) -> int:
        """minted - balances - fees: zero whenever no message is in flight. Anything else means value
        appeared or vanished, which no contract can make happen on a real chain either."""
        return self.minted - self.total_balance() - self.fees_collected()

    # ----------------------------------------------------------------- get-methods
    def get_method(self, address: Address | str, method: str | int, stack: list | None = None) -> list:
        """Run a get-method of an active account at the chain's current time and state."""
        if isinstance(address, str):
            address = Address(address)
        key = addr_key(address)
        raw = self.accounts.get(key)
        hit = self._getter_cache.get(key)
        if hit is None or hit[0] is not raw:  # parse an account once per state, not once per getter
            status, code, data = self.state(address)
            if status != "active":
                raise GetMethodError(address, method, -256)
            hit = (raw, to_tonpy(code), to_tonpy(data), self.balance(address))
            self._getter_cache[key] = hit
        return run_get_method(hit[1], hit[2], address, method, list(stack or []), balance=hit[3],
                              now=self.now, config=self._config_t)

    # ----------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write the chain (accounts, time, logical time, money supply, fees) to ``path`` atomically,
        so a crash mid-write never leaves a half-written chain behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format": 1, "now": self.now, "lt": self.lt, "minted": self.minted, "fees": self.fees_collected(),
               "accounts": {k: v.to_boc() for k, v in self.accounts.items()}}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "EmbeddedChain":
        """Read a chain :meth:`save` wrote; any other content is a :class:`ChainError` naming the file."""
        fresh = "move it away to start a fresh chain"
        try:
            doc = json.loads(Path(path).read_text())
            if not isinstance(doc, dict) or doc.get("format") != 1:
                raise ChainError(f"{path}: not an embedded chain state file; {fresh}")
            if not 0 < doc["now"] < 2**32:
                raise ChainError(f"{path}: the chain's clock ({doc['now']}) is beyond TON's 32-bit time; {fresh}")
            chain = cls(now=doc["now"])
            chain.lt, chain.minted, chain.fees_before = doc["lt"], doc["minted"], doc.get("fees", 0)
            chain.accounts = {k: TCell(v) for k, v in doc["accounts"].items()}
        except ChainError:
            raise
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ChainError(f"{path}: not an embedded chain state file (not JSON); {fresh}") from None
        except OSError as e:
            raise ChainError(f"{path}: cannot read it ({e.strerror or e})") from None
        except Exception:  # truncated, fields missing, or cells that do not parse
            raise ChainError(f"{path}: a broken embedded chain state file; {fresh}") from None
        return chain

    # ----------------------------------------------------------------- treasuries
    def treasury(self, name: str, balance: int = 1_000_000 * 10**9) -> "Treasury":
        """A funded standard wallet (v4r2) whose key is derived from ``name``: the same name gives the
        same wallet in every run, so tests and the demo are reproducible."""
        from .treasury import Treasury

        if name not in self._treasuries:
            self._treasuries[name] = Treasury(self, name, balance)
        return self._treasuries[name]


def _empty_shard_account() -> TCell:
    # account_descr$_ account:^Account(account_none$0) last_trans_hash:bits256 last_trans_lt:uint64
    c = begin_cell().store_ref(begin_cell().store_bit(0).end_cell()).store_uint(0, 256).store_uint(0, 64).end_cell()
    return to_tonpy(c)


_EMPTY_ACCOUNT = _empty_shard_account()

"""The chain server's serving logic: one embedded chain, inputs applied in arrival order, each
acknowledged only once it is durable.

Every input (an external message, a faucet payment, a time step) is applied to the in-process
:class:`~wrappers.chain.emulated.EmbeddedChain` at once, on the event loop, so inputs from many
clients are processed one after another, each message and everything it causes in logical-time
order as on one shard. The caller then waits for its group commit: a background task writes every
input applied since the last commit, with its transactions, in one SQLite transaction (one fsync
for many inputs) and only then releases the callers. Every few seconds the commit also carries a
checkpoint of the accounts that changed. See :mod:`node.chain.store` for the recovery.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from pathlib import Path
from typing import Optional

from pytoniq_core import Address
from tonpy.types import Cell as TCell

from wrappers.chain.emulated import ChainError, EmbeddedChain, addr_key
from wrappers.chain.fastparse import message_head
from wrappers.chain.records import TxRecord

from .network import MAX_ADVANCE, MAX_NOW
from .store import ChainStore, Checkpoint, Entry, TxRow

log = logging.getLogger("cocoon.chain")

MAX_FUND = 10**9 * 10**9  # one billion TON per faucet payment


class Refused(Exception):
    """An input the chain does not take (toncenter answers it with an error); nothing changed."""


class _Boc:
    """A message as its BoC, for ``EmbeddedChain.send``, which needs only ``to_boc()``."""

    def __init__(self, boc: bytes):
        self.boc = boc

    def to_boc(self) -> bytes:
        return self.boc


def _printable(err: Exception) -> str:
    try:
        text = str(err)
    except Exception:
        return ""
    return "".join(c for c in text if c.isprintable()).strip()


def _boc(t: TCell) -> bytes:
    return base64.b64decode(t.to_boc())


class ChainService:
    def __init__(self, folder: Path, checkpoint_interval: float = 2.0):
        self.store = ChainStore(folder)
        self.checkpoint_interval = checkpoint_interval
        self.chain: EmbeddedChain = EmbeddedChain()
        self.seq = 0  # the last applied log entry; the masterchain seqno is seq + 1
        self._pending: list[Entry] = []
        self._rows: list[TxRow] = []
        self._waiters: list[asyncio.Future] = []
        self._wake: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._ck_accounts: dict = {}
        self._ck_time = 0.0
        self.stats = {"messages": 0, "rejected": 0, "transactions": 0, "commits": 0}

    # ------------------------------------------------------------------ start, stop, recovery
    def load(self) -> int:
        """Load the last checkpoint and re-apply the log after it; returns how many entries were replayed."""
        ck = self.store.checkpoint()
        chain = EmbeddedChain()
        if ck is not None:
            chain = EmbeddedChain(now=ck.now)
            chain.lt, chain.minted, chain.fees_before = ck.lt, ck.minted, ck.fees
            chain.accounts = {k: TCell(base64.b64encode(v).decode()) for k, v in ck.accounts.items()}
            self.seq = ck.seq
        self.chain = chain
        self._ck_accounts = dict(chain.accounts)
        replayed: list[Entry] = []
        for e in self.store.entries_after(self.seq):
            self._apply(e)
            replayed.append(e)
        if replayed:
            rows, self._rows = self._rows, []
            # the log rows exist already: write the transactions they gave again (ignored if present)
            self.store.commit([], rows, self._checkpoint_now(dict(self.chain.accounts)))
        self._ck_time = time.monotonic()
        return len(replayed)

    async def start(self) -> None:
        n = await asyncio.to_thread(self.load)
        log.info("chain loaded: block %d, time %d, %d log entries replayed", self.seq + 1, self.chain.now, n)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._committer())

    async def stop(self) -> None:
        if self._task is not None:
            await self._flush()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self.store.commit, [], [], self._checkpoint_now(dict(self.chain.accounts)))
        self.store.close()

    # ------------------------------------------------------------------ inputs
    async def send_message(self, boc: bytes) -> list[TxRecord]:
        """Apply an external message (its BoC); returns once it is durable. Refused if it is not an
        external inbound message or the account does not accept it (nothing happens on chain then,
        as on a real network)."""
        trace = bytes.fromhex(self._parse(boc).get_hash())
        txs = self._input(Entry(0, "msg", boc), trace)
        await self._durable()
        return txs

    @staticmethod
    def _parse(boc: bytes) -> TCell:
        if boc[:4] not in (b"\xb5\xee\x9c\x72", b"\x68\xff\x65\xf3", b"\xac\xc3\xa7\x28"):
            raise Refused("boc is not a bag of cells (no BoC magic)")
        try:
            cell = TCell(base64.b64encode(boc).decode())
        except Exception:  # tonpy raises RuntimeError, or UnicodeDecodeError on its own message
            raise Refused("boc is not a valid bag of cells") from None
        s = cell.begin_parse()
        if s.bits < 2 or s.preload_uint(2) != 0b10:
            raise Refused("only external inbound messages can be sent (ext_in_msg_info$10)")
        return cell

    async def fund(self, address: Address, amount: int) -> list[TxRecord]:
        if not 0 < amount <= MAX_FUND:
            raise Refused(f"amount must be between 1 and {MAX_FUND} nanoTON")
        txs = self._input(Entry(0, "fund", addr_key(address).encode(), amount))
        await self._durable()
        return txs

    async def advance(self, seconds: int) -> int:
        if not 0 <= seconds <= MAX_ADVANCE:
            raise Refused(f"seconds must be between 0 and {MAX_ADVANCE} (ten years): contracts add delays to "
                          "the time and must stay within 32 bits")
        if self.chain.now + seconds > MAX_NOW:
            raise Refused(f"the chain's time would pass {MAX_NOW}; contracts add delays to it and must stay "
                          "within 32 bits")
        self._input(Entry(0, "advance", None, seconds))
        await self._durable()
        return self.chain.now

    def _input(self, e: Entry, trace: Optional[bytes] = None) -> list[TxRecord]:
        e.seq = self.seq + 1
        txs = self._apply(e, trace)  # raises Refused before anything changed
        self._pending.append(e)
        return txs

    def _apply(self, e: Entry, trace: Optional[bytes] = None) -> list[TxRecord]:
        chain = self.chain
        snap = chain.snapshot()  # cheap (the accounts dict); a refused input leaves no trace
        try:
            if e.kind == "msg":
                # the emulator's own cell straight from the BoC: no pytoniq parse on the hot path
                txs = chain.send(_Boc(e.data))
                trace = trace or bytes.fromhex(self._parse(e.data).get_hash())
            elif e.kind == "fund":
                txs = chain.mint(Address(e.data.decode()), e.amount)
                trace = None
            elif e.kind == "advance":
                chain.advance(e.amount)
                txs, trace = [], None
            else:
                raise Refused(f"unknown log entry kind {e.kind!r}")
            if txs and txs[0].rejected:
                raise Refused("cannot apply external message to current state: External message was not accepted")
        except Exception as err:
            chain.restore(snap)
            self._trim()
            if isinstance(err, Refused):
                self.stats["rejected"] += 1
                raise
            if isinstance(err, ChainError):
                raise Refused(str(err)) from None
            # the emulator refuses some externals with an error instead of a rejection (an account
            # that cannot pay for the message, a state init that does not match the address)
            log.info("message refused by the emulator: %s", _printable(err))
            self.stats["rejected"] += 1
            raise Refused("cannot apply external message to current state: "
                          f"{_printable(err)[-300:] or 'the emulator refused it'}") from None
        self.seq = e.seq
        block = self.seq + 1
        for t in txs:
            in_src = in_lt = None
            if not t.external:
                in_src = addr_key(t.src) if t.src is not None else None
                in_lt = message_head(t._in_cell).created_lt
            self._rows.append(TxRow(t.hash, addr_key(t.account), t.lt, t.now, _boc(t._tx_cell), trace, in_src, in_lt,
                                    t.parent.hash if t.parent is not None else None, block))
        kind = {"msg": "messages", "fund": "faucet_payments", "advance": "time_steps"}[e.kind]
        self.stats[kind] = self.stats.get(kind, 0) + 1
        self.stats["transactions"] += len(txs)
        self._trim()
        return txs

    def _trim(self) -> None:
        """Forget transaction records once written down (the store keeps them); keep the fee total."""
        chain = self.chain
        chain.fees_before += sum(t.total_fees + t.in_fwd_fee for t in chain.transactions)
        chain.transactions.clear()

    # ------------------------------------------------------------------ group commit
    async def _durable(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wake.set()
        await fut

    async def _flush(self) -> None:
        if self._pending or self._rows:
            await self._durable()

    def _checkpoint_now(self, accounts: dict) -> Checkpoint:
        """A checkpoint of the state after ``self.seq`` (only accounts changed since the last one)."""
        changed = {k: _boc(v) for k, v in accounts.items() if self._ck_accounts.get(k) is not v}
        self._ck_accounts = accounts
        c = self.chain
        return Checkpoint(self.seq, c.now, c.lt, c.minted, c.fees_collected(), changed)

    async def _committer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiters:
                entries, rows, waiters = self._pending, self._rows, self._waiters
                self._pending, self._rows, self._waiters = [], [], []
                ck = None
                if time.monotonic() - self._ck_time >= self.checkpoint_interval:
                    accounts = dict(self.chain.accounts)
                    meta = (self.seq, self.chain.now, self.chain.lt, self.chain.minted, self.chain.fees_collected())
                    prev = self._ck_accounts
                    self._ck_accounts = accounts
                    self._ck_time = time.monotonic()
                    ck = (meta, accounts, prev)
                try:
                    await asyncio.to_thread(self._write, entries, rows, ck)
                except BaseException as e:  # the disk failed: what is in memory is no longer what is durable
                    log.critical("cannot write the chain state (%s); stopping so a restart recovers", e)
                    for w in waiters:
                        if not w.done():
                            w.set_exception(Refused("the chain server cannot write its state"))
                    os._exit(70)
                self.stats["commits"] += 1
                for w in waiters:
                    if not w.done():
                        w.set_result(None)

    def _write(self, entries, rows, ck) -> None:
        checkpoint = None
        if ck is not None:
            (seq, now, lt, minted, fees), accounts, prev = ck
            changed = {k: _boc(v) for k, v in accounts.items() if prev.get(k) is not v}
            checkpoint = Checkpoint(seq, now, lt, minted, fees, changed)
        self.store.commit(entries, rows, checkpoint)

    # ------------------------------------------------------------------ reading
    @property
    def block(self) -> int:
        return self.seq + 1

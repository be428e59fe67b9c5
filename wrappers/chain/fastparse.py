"""Reading a transaction and its messages on the emulator's own cells (tonpy, C++), without a BoC
round trip into pytoniq. This is the embedded chain's hot path: per transaction it extracts the
fields records, matchers and fee tables use, and the outgoing message cells, which go straight back
into the emulator. The full pytoniq objects are built only when a test asks for them.

Layouts (block.tlb):
  transaction$0111 account_addr:bits256 lt:uint64 prev_trans_hash:bits256 prev_trans_lt:uint64
    now:uint32 outmsg_cnt:uint15 orig_status:AccountStatus end_status:AccountStatus
    ^[ in_msg:(Maybe ^(Message Any)) out_msgs:(HashmapE 15 ^(Message Any)) ]
    total_fees:CurrencyCollection state_update:^(HASH_UPDATE Account) description:^TransactionDescr
  trans_ord$0000 credit_first:Bool storage_ph:(Maybe TrStoragePhase) credit_ph:(Maybe TrCreditPhase)
    compute_ph:TrComputePhase action:(Maybe ^TrActionPhase) aborted:Bool bounce:(Maybe TrBouncePhase)
    destroyed:Bool
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tonpy.types import Cell as TCell, CellSlice as TSlice

STATUS = {0: "uninit", 1: "frozen", 2: "active", 3: "nonexist"}


def _grams(s: TSlice) -> int:
    n = s.load_uint(4)
    return s.load_uint(8 * n) if n else 0


def _cc(s: TSlice) -> int:
    """CurrencyCollection: grams, then a dictionary of extra currencies (skipped)."""
    g = _grams(s)
    if s.load_uint(1):
        s.skip_refs(1)
    return g


def _varuint(s: TSlice, len_bits: int) -> int:
    n = s.load_uint(len_bits)
    return s.load_uint(8 * n) if n else 0


def load_addr(s: TSlice) -> Optional[tuple[int, bytes]]:
    """MsgAddress -> (workchain, hash) for addr_std; None for addr_none, external and addr_var."""
    tag = s.load_uint(2)
    if tag == 0:
        return None
    if tag == 1:  # addr_extern$01 len:(## 9) external_address:(bits len)
        n = s.load_uint(9)
        s.skip_bits(n)
        return None
    if s.load_uint(1):  # anycast (not used by our contracts, parsed for completeness)
        depth = s.load_uint(5)
        s.skip_bits(depth)
    if tag == 2:
        wc = s.load_int(8)
        return wc, s.load_uint(256).to_bytes(32, "big")
    n = s.load_uint(9)  # addr_var$11: not a standard address, never used by this network
    s.skip_bits(32)  # workchain_id
    s.skip_bits(n)
    return None


@dataclass
class MsgHead:
    internal: bool
    src: Optional[tuple[int, bytes]]
    dest: Optional[tuple[int, bytes]]
    value: int = 0
    bounce: bool = False
    bounced: bool = False
    created_lt: int = 0
    op: Optional[int] = None
    fwd_fee: int = 0  # the forward fee still to be collected when the message is delivered


def message_head(cell: TCell) -> MsgHead:
    """The routing and matching fields of a Message Any."""
    s = cell.begin_parse()
    if s.load_uint(1) == 0:  # int_msg_info$0
        s.skip_bits(1)  # ihr_disabled
        bounce, bounced = bool(s.load_uint(1)), bool(s.load_uint(1))
        src, dest = load_addr(s), load_addr(s)
        value = _cc(s)
        _grams(s)  # ihr_fee (extra_flags in newer versions: same layout)
        fwd_fee = _grams(s)
        created_lt = s.load_uint(64)
        s.skip_bits(32)  # created_at
        head = MsgHead(True, src, dest, value, bounce, bounced, created_lt, fwd_fee=fwd_fee)
    elif s.load_uint(1) == 0:  # ext_in_msg_info$10 src dest import_fee
        src, dest = load_addr(s), load_addr(s)
        _grams(s)
        return MsgHead(False, src, dest)
    else:  # ext_out_msg_info$11
        src, dest = load_addr(s), load_addr(s)
        return MsgHead(False, src, dest, created_lt=s.load_uint(64))
    # init:(Maybe (Either StateInit ^StateInit))
    if s.load_uint(1):
        if s.load_uint(1):
            s.skip_refs(1)
        else:
            _skip_state_init(s)
    body = s.load_ref(as_cs=True) if s.load_uint(1) else s
    if body.bits >= 32:
        op = body.load_uint(32)
        if head.bounced and op == 0xFFFFFFFF and body.bits >= 32:
            op = body.load_uint(32)
        head.op = op
    return head


def _skip_state_init(s: TSlice) -> None:
    if s.load_uint(1):
        s.skip_bits(5)  # split_depth
    if s.load_uint(1):
        s.skip_bits(2)  # special tick/tock
    for _ in range(3):  # code, data, library
        if s.load_uint(1):
            s.skip_refs(1)


@dataclass
class TxFacts:
    lt: int
    now: int
    orig_status: str
    end_status: str
    total_fees: int
    in_msg: Optional[TCell]
    out_msgs: list[TCell] = field(default_factory=list)
    aborted: bool = True
    compute_skipped: Optional[str] = None
    exit_code: Optional[int] = None
    gas_used: int = 0
    gas_fees: int = 0
    action_result: Optional[int] = None
    fwd_fees: int = 0
    action_fees: int = 0
    storage_fees: int = 0


def transaction_facts(tx: TCell) -> TxFacts:
    s = tx.begin_parse()
    s.skip_bits(4 + 256)  # tag, account_addr
    lt = s.load_uint(64)
    s.skip_bits(256 + 64)
    now = s.load_uint(32)
    outmsg_cnt = s.load_uint(15)
    orig, end = STATUS[s.load_uint(2)], STATUS[s.load_uint(2)]
    msgs = s.load_ref(as_cs=True)
    in_msg = msgs.load_ref() if msgs.load_uint(1) else None
    out: list[TCell] = []
    if outmsg_cnt and msgs.load_uint(1):
        _collect_hashmap(msgs.load_ref(), 15, out)
    total = _cc(s)
    s.skip_refs(1)  # state_update
    f = TxFacts(lt, now, orig, end, total, in_msg, out)
    d = s.load_ref(as_cs=True)
    if d.load_uint(4) != 0:  # only ordinary transactions occur on this chain
        return f
    d.skip_bits(1)  # credit_first
    if d.load_uint(1):  # storage phase
        f.storage_fees = _grams(d)
        if d.load_uint(1):
            _grams(d)
        if d.load_uint(1):  # AccStatusChange: unchanged$0 | frozen$10 | deleted$11
            d.skip_bits(1)
    if d.load_uint(1):  # credit phase
        if d.load_uint(1):
            _grams(d)
        _cc(d)
    if d.load_uint(1) == 0:  # tr_phase_compute_skipped$0 reason
        r = d.load_uint(2)
        f.compute_skipped = {0: "no_state", 1: "bad_state", 2: "no_gas"}.get(r, "suspended")
        if r == 3:
            d.skip_bits(1)
    else:
        d.skip_bits(3)  # success, msg_state_used, account_activated
        f.gas_fees = _grams(d)
        c = d.load_ref(as_cs=True)
        f.gas_used = _varuint(c, 3)
        _varuint(c, 3)  # gas_limit
        if c.load_uint(1):
            _varuint(c, 2)  # gas_credit
        c.skip_bits(8)  # mode
        f.exit_code = c.load_int(32)
    if d.load_uint(1):
        a = d.load_ref(as_cs=True)
        a.skip_bits(3)  # success, valid, no_funds
        if a.load_uint(1):  # status_change
            a.skip_bits(1)
        if a.load_uint(1):
            f.fwd_fees = _grams(a)
        if a.load_uint(1):
            f.action_fees = _grams(a)
        f.action_result = a.load_int(32)
    f.aborted = bool(d.load_uint(1))
    return f


def _collect_hashmap(root: TCell, n: int, out: list) -> None:
    """Values (^Message) of a HashmapE 15 in key order; few entries, so a direct walk is cheapest."""
    def walk(cell: TCell, bits: int) -> None:
        s = cell.begin_parse()
        # hml_short$0 | hml_long$10 | hml_same$11
        if s.load_uint(1) == 0:
            ln = 0
            while s.load_uint(1):
                ln += 1
            s.skip_bits(ln)
        elif s.load_uint(1) == 0:
            ln = s.load_uint(max(1, bits.bit_length()))
            s.skip_bits(ln)
        else:
            s.skip_bits(1)
            ln = s.load_uint(max(1, bits.bit_length()))
        rest = bits - ln
        if rest == 0:
            out.append(s.load_ref())
        else:
            left, right = s.load_ref(), s.load_ref()
            walk(left, rest - 1)
            walk(right, rest - 1)

    walk(root, n)


def account_balance(shard_account: TCell) -> int:
    """Balance of a ShardAccount, read in place. Layout (current block.tlb, as the emulator writes):
    account$1 addr:MsgAddressInt storage_stat:StorageInfo(used:StorageUsed(cells, bits: VarUInteger 7)
    storage_extra:StorageExtraInfo(000 | 001 dict_hash) last_paid:uint32 due_payment:(Maybe Grams))
    storage:AccountStorage(last_trans_lt:uint64 balance:CurrencyCollection ...)."""
    s = shard_account.begin_parse().load_ref(as_cs=True)
    if s.load_uint(1) == 0:  # account_none
        return 0
    load_addr(s)
    _varuint(s, 3)
    _varuint(s, 3)
    if s.load_uint(3) == 1:
        s.skip_bits(256)
    s.skip_bits(32)
    if s.load_uint(1):
        _grams(s)
    s.skip_bits(64)
    return _grams(s)

"""The toncenter v2 API's JSON shapes, defined once for the chain server and the HTTP provider.

Get-method stacks travel in two forms: requests carry ``["num", "5"]``, ``["tvm.Cell", BOC]``,
``["tvm.Slice", BOC]``; answers carry ``["num", "0x5"]``, ``["cell", {"bytes": BOC}]``, ``["slice",
{"bytes": BOC}]``, ``["null", null]`` and ``["tuple", {"@type": "tvm.tuple", "elements": [...]}]``
whose elements are tonlib objects (``tvm.stackEntryNumber``...). BoCs are base64; hashes in answers
are base64, amounts decimal strings, as toncenter writes them.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any, Optional

from pytoniq_core import Address, Builder, Cell, Slice, begin_cell

ZERO_HASH = base64.b64encode(b"\0" * 32).decode()


class FormatError(ValueError):
    """A request value that does not have toncenter's form."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None,
                                validate=True)
    except (ValueError, TypeError):
        raise FormatError(f"{what} is not valid base64") from None


def boc_cell(text: Any, what: str) -> Cell:
    raw = unb64(text, what)
    try:
        return Cell.one_from_boc(raw)
    except Exception:
        raise FormatError(f"{what} is not a valid bag of cells") from None


def parse_hash(text: Any, what: str = "hash") -> bytes:
    """A 32-byte hash as toncenter accepts it: 64 hex digits or base64."""
    if isinstance(text, str) and len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    h = unb64(text, what)
    if len(h) != 32:
        raise FormatError(f"{what} must be 32 bytes (64 hex digits or base64)")
    return h


def parse_address(text: Any, what: str = "address") -> Address:
    if not isinstance(text, str) or not text:
        raise FormatError(f"{what} is required")
    try:
        return Address(text)
    except Exception:
        raise FormatError(f"{what} {text[:80]!r} is not a TON address") from None


def friendly(a: Optional[Address]) -> str:
    return "" if a is None else a.to_str()


# ---------------------------------------------------------------------------- get-method stacks
def _int_from(text: Any) -> int:
    if isinstance(text, bool):
        raise FormatError("a number entry must be an integer")
    if isinstance(text, int):
        return text
    if not isinstance(text, str):
        raise FormatError("a number entry must be an integer or a string")
    t = text.strip().lower()
    neg = t.startswith("-")
    t = t.lstrip("-")
    try:
        v = int(t, 16) if t.startswith("0x") else int(t, 10)
    except ValueError:
        raise FormatError(f"{text!r} is not a number") from None
    return -v if neg else v


def request_stack_from_json(entries: Any) -> list:
    """A request's stack (``[["num", "5"], ["tvm.Slice", BOC]...]``) as pytoniq values."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise FormatError("stack must be a list of [type, value] pairs")
    out: list = []
    for e in entries:
        if not isinstance(e, (list, tuple)) or len(e) != 2 or not isinstance(e[0], str):
            raise FormatError("each stack entry is a [type, value] pair")
        kind, value = e
        if kind in ("num", "number", "int"):
            out.append(_int_from(value))
        elif kind in ("tvm.Cell", "cell"):
            out.append(boc_cell(value if isinstance(value, str) else (value or {}).get("bytes"), "a cell entry"))
        elif kind in ("tvm.Slice", "slice"):
            v = value if isinstance(value, str) else (value or {}).get("bytes")
            out.append(boc_cell(v, "a slice entry").begin_parse())
        elif kind in ("tvm.Builder", "builder"):
            v = value if isinstance(value, str) else (value or {}).get("bytes")
            out.append(begin_cell().store_cell(boc_cell(v, "a builder entry")))
        elif kind == "null":
            out.append(None)
        else:
            raise FormatError(f"stack entry type {kind!r} is not supported (num, tvm.Cell, tvm.Slice, tvm.Builder)")
    return out


def request_stack_to_json(stack: list) -> list:
    """pytoniq values as a request's stack."""
    out = []
    for v in stack:
        if isinstance(v, bool):
            out.append(["num", str(-1 if v else 0)])
        elif isinstance(v, int):
            out.append(["num", str(v)])
        elif isinstance(v, Address):
            out.append(["tvm.Slice", b64(begin_cell().store_address(v).end_cell().to_boc())])
        elif isinstance(v, Cell):
            out.append(["tvm.Cell", b64(v.to_boc())])
        elif isinstance(v, Slice):
            out.append(["tvm.Slice", b64(begin_cell().store_slice(v).end_cell().to_boc())])
        elif isinstance(v, Builder):
            out.append(["tvm.Builder", b64(v.end_cell().to_boc())])
        elif v is None:
            out.append(["null", None])
        else:
            raise TypeError(f"cannot pass {type(v).__name__} to a get-method over HTTP")
    return out


def _num_hex(v: int) -> str:
    return ("-" if v < 0 else "") + hex(abs(v))


def _slice_cell(s: Slice) -> Cell:
    return begin_cell().store_slice(s).end_cell()


def _entry(v: Any) -> dict:
    """A value inside a tuple, as a tonlib object."""
    if isinstance(v, int):
        return {"@type": "tvm.stackEntryNumber", "number": {"@type": "tvm.numberDecimal", "number": str(v)}}
    if isinstance(v, Cell):
        return {"@type": "tvm.stackEntryCell", "cell": {"@type": "tvm.cell", "bytes": b64(v.to_boc())}}
    if isinstance(v, Slice):
        return {"@type": "tvm.stackEntrySlice", "slice": {"@type": "tvm.slice", "bytes": b64(_slice_cell(v).to_boc())}}
    if isinstance(v, list):
        return {"@type": "tvm.stackEntryTuple", "tuple": {"@type": "tvm.tuple", "elements": [_entry(x) for x in v]}}
    if v is None:
        return {"@type": "tvm.stackEntryNull"}
    raise TypeError(f"cannot render {type(v).__name__} on a stack")


def result_stack_to_json(stack: list) -> list:
    """A get-method's result stack (pytoniq values, bottom first) in toncenter's answer form."""
    out = []
    for v in stack:
        if isinstance(v, int):
            out.append(["num", _num_hex(v)])
        elif isinstance(v, Cell):
            out.append(["cell", {"bytes": b64(v.to_boc()), "object": {}}])
        elif isinstance(v, Slice):
            out.append(["slice", {"bytes": b64(_slice_cell(v).to_boc()), "object": {}}])
        elif isinstance(v, list):
            out.append(["tuple", {"@type": "tvm.tuple", "elements": [_entry(x) for x in v]}])
        elif v is None:
            out.append(["null", None])
        else:
            raise TypeError(f"cannot render {type(v).__name__} on a stack")
    return out


class StackCell(Cell):
    """A cell from a stack where toncenter does not tell a cell from a slice (it writes both as
    ``"cell"``): a :class:`Cell` that also reads like a :class:`Slice` (``load_address``...), so
    readers written for pytoniq's lite client work on either. The chain server sends ``"slice"``."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        s = self.__dict__.get("_as_slice")
        if s is None:
            s = self.__dict__["_as_slice"] = self.begin_parse()
        return getattr(s, name)


def _stack_cell(b64text: str, what: str) -> Cell:
    c = Cell.one_from_boc(unb64(b64text, what))
    c.__class__ = StackCell
    return c


def _from_entry(e: dict) -> Any:
    t = e.get("@type")
    if t in ("tvm.stackEntryNumber",):
        return _from_entry(e["number"])
    if t == "tvm.numberDecimal":
        return int(e["number"])
    if t == "tvm.stackEntryCell":
        return _from_entry(e["cell"])
    if t == "tvm.cell":
        return _stack_cell(e["bytes"], "a cell")
    if t == "tvm.stackEntrySlice":
        return _from_entry(e["slice"])
    if t == "tvm.slice":
        return Cell.one_from_boc(unb64(e["bytes"], "a slice")).begin_parse()
    if t in ("tvm.stackEntryTuple", "tvm.stackEntryList"):
        return _from_entry(e.get("tuple") or e.get("list"))
    if t in ("tvm.tuple", "tvm.list"):
        return [_from_entry(x) for x in e["elements"]]
    if t in ("tvm.stackEntryNull", "tvm.stackEntryUnsupported"):
        return None
    raise FormatError(f"unknown stack element {t!r}")


def result_stack_from_json(entries: list) -> list:
    """An answer's stack as pytoniq values (int, Cell, Slice, None, list), as pytoniq's clients give."""
    out: list = []
    for kind, value in entries:
        if kind == "num":
            out.append(_int_from(value))
        elif kind == "cell":
            out.append(_stack_cell(value["bytes"], "a cell"))
        elif kind == "slice":
            out.append(Cell.one_from_boc(unb64(value["bytes"], "a slice")).begin_parse())
        elif kind == "builder":
            out.append(begin_cell().store_cell(Cell.one_from_boc(unb64(value["bytes"], "a builder"))))
        elif kind in ("tuple", "list"):
            out.append([_from_entry(x) for x in value["elements"]])
        elif kind == "null":
            out.append(None)
        else:
            raise FormatError(f"unknown stack entry {kind!r}")
    return out


# ---------------------------------------------------------------------------- blocks, accounts, transactions
def block_id(seqno: int, workchain: int = -1, shard: int = -(2**63)) -> dict:
    """A block id whose hashes are derived from its number (the local chain has no real blocks)."""
    root = hashlib.sha256(f"cocoon-local-block:{workchain}:{seqno}".encode()).digest()
    file = hashlib.sha256(b"file:" + root).digest()
    return {"@type": "ton.blockIdExt", "workchain": workchain, "shard": str(shard), "seqno": seqno,
            "root_hash": b64(root), "file_hash": b64(file)}


def tx_id(lt: int, hash_: bytes) -> dict:
    return {"@type": "internal.transactionId", "lt": str(lt), "hash": b64(hash_)}


STATE_NAMES = {"active": "active", "uninit": "uninitialized", "nonexist": "uninitialized", "frozen": "frozen"}


def message_json(msg_cell: Optional[Cell]) -> Optional[dict]:
    """A message (pytoniq cell) as toncenter's ``raw.message``."""
    from pytoniq_core.tlb.transaction import MessageAny

    if msg_cell is None:
        return None
    m = MessageAny.deserialize(msg_cell.begin_parse())
    info = m.info
    src = getattr(info, "src", None)
    dest = getattr(info, "dest", None)
    value = getattr(info, "value", None)
    body = m.body if m.body is not None else Cell.empty()
    init = ""
    if m.init is not None:
        init = b64(m.init.serialize().to_boc())
    return {"@type": "raw.message", "hash": b64(msg_cell.hash),
            "source": friendly(src) if isinstance(src, Address) else "",
            "destination": friendly(dest) if isinstance(dest, Address) else "",
            "value": str(value.grams if value is not None else 0), "extra_currencies": [],
            "fwd_fee": str(getattr(info, "fwd_fee", 0) or 0), "ihr_fee": str(getattr(info, "ihr_fee", 0) or 0),
            "created_lt": str(getattr(info, "created_lt", 0) or 0), "body_hash": b64(body.hash),
            "msg_data": {"@type": "msg.dataRaw", "body": b64(body.to_boc()), "init_state": init},
            "message": ""}


def transaction_json(account: Address, boc: bytes) -> dict:
    """A transaction (its BoC) as toncenter's ``raw.transaction``."""
    from pytoniq_core.tlb.transaction import Transaction

    cell = Cell.one_from_boc(boc)
    tx = Transaction.deserialize(cell.begin_parse())
    fee = tx.total_fees.grams
    storage = 0
    ph = getattr(tx.description, "storage_ph", None)
    if ph is not None:
        storage = ph.storage_fees_collected or 0
    in_cell = tx.in_msg.serialize() if tx.in_msg is not None else None
    outs = [m.serialize() for m in (tx.out_msgs or [])]
    return {"@type": "raw.transaction", "address": {"@type": "accountAddress", "account_address": friendly(account)},
            "utime": tx.now, "data": b64(boc), "transaction_id": tx_id(tx.lt, cell.hash),
            "fee": str(fee), "storage_fee": str(storage), "other_fee": str(fee - storage),
            "in_msg": message_json(in_cell), "out_msgs": [message_json(c) for c in outs]}


def normalized_hash(ext: Cell) -> bytes:
    """The hash of an external message with ``src``, ``import_fee`` and ``init`` cleared and the body
    in a reference: what wallets and explorers use to find an external message's transaction."""
    from pytoniq_core.tlb.transaction import MessageAny

    m = MessageAny.deserialize(ext.begin_parse())
    body = m.body if m.body is not None else Cell.empty()
    c = (begin_cell().store_uint(0b10, 2).store_uint(0, 2).store_address(m.info.dest).store_coins(0)
         .store_bit(0).store_bit(1).store_ref(body).end_cell())
    return c.hash

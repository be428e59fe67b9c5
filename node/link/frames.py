"""The frames of the worker link (docs/PROTOCOL.md §3): the one definition, used by worker and proxy.

Each frame is a JSON text message ``{"type": T, ...}``. :func:`encode` turns a frame object into that
text and :func:`decode` reads it back with strict validation: an unknown type, a missing or unknown
field or a field of the wrong type raises :class:`FrameError`, after which the reader closes the link
with :data:`CLOSE_PROTOCOL_ERROR`. ``decode(text, sender="worker")`` also refuses a frame that only
the other side may send.

    text = encode(Job(job_id, "chat", body, stream=True, timeout=120))
    frame = decode(text, sender="proxy")      # -> Job
"""
from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

from pytoniq_core import Address

from node import fastjson
from node.payments.pricing import Usage, usage_from_openai, usage_to_openai
from node.payments.vouchers import Voucher


PROTOCOL = 1
CLOSE_PROTOCOL_ERROR = 4400     # WebSocket close code after a frame error
CLOSE_REFUSED = 4403            # the proxy refused the worker (after a ``refused`` frame)
CLOSE_REVOKED = 4410            # the registry revoked the peer's image or model
MAX_FRAME = 16 << 20            # bytes: a job body or an answer larger than this is refused
ENDPOINTS = ("chat", "completion")
_JOB_ID = re.compile(r"^[0-9a-f]{64}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class FrameError(ValueError):
    """A frame that breaks docs/PROTOCOL.md §3."""


# ---------------------------------------------------------------------------- field checks
def _int(v: Any, name: str, lo: int = 0, hi: Optional[int] = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise FrameError(f"{name} must be an integer")
    if v < lo or (hi is not None and v > hi):
        raise FrameError(f"{name} must be between {lo} and {hi}" if hi is not None else f"{name} must be at least {lo}")
    return v


def _str(v: Any, name: str, max_len: int = 1024) -> str:
    if not isinstance(v, str):
        raise FrameError(f"{name} must be a string")
    if len(v) > max_len:
        raise FrameError(f"{name} is longer than {max_len} characters")
    return v


def _job_id(v: Any) -> str:
    if not isinstance(v, str) or not _JOB_ID.match(v):
        raise FrameError("job_id must be 64 lowercase hex digits")
    return v


_RAW_ADDR = re.compile(r"^-?[0-9]{1,3}:[0-9a-fA-F]{64}$")
_FRIENDLY_ADDR = re.compile(r"^[A-Za-z0-9_+/-]{48}$")


def _address(v: Any, name: str) -> str:
    _str(v, name, 100)
    if not (_RAW_ADDR.match(v) or _FRIENDLY_ADDR.match(v)):
        raise FrameError(f"{name} is not a TON address")
    try:
        return Address(v).to_str(is_user_friendly=False)
    except Exception:
        raise FrameError(f"{name} is not a TON address") from None


def _obj(v: Any, name: str) -> dict:
    if not isinstance(v, dict):
        raise FrameError(f"{name} must be a JSON object")
    return v


def _voucher(v: Any, name: str = "voucher") -> Voucher:
    d = _obj(v, name)
    if set(d) != {"channel", "amount", "signature"}:
        raise FrameError(f"{name} has exactly the fields channel, amount and signature")
    _int(d["amount"], f"{name}.amount")
    try:
        return Voucher.from_dict({"channel": _address(d["channel"], f"{name}.channel"), "amount": d["amount"],
                                  "signature": _str(d["signature"], name, 128)})
    except ValueError as e:
        raise FrameError(str(e)) from None


def voucher_dict(v: Voucher) -> dict:
    return v.to_dict()


def _b64(v: Any, name: str) -> bytes:
    _str(v, name, MAX_FRAME)
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError(f"{name} is not base64") from None


def _usage(v: Any) -> Usage:
    try:
        return usage_from_openai(_obj(v, "usage"))
    except ValueError as e:
        raise FrameError(f"usage: {e}") from None


# ---------------------------------------------------------------------------- the field table
# A check takes (value, field name) and returns the value or raises FrameError; each frame lists its
# fields with their checks (CHECKS) and, for fields whose wire form differs from the value (bytes as
# base64, a usage or a voucher object), a (read, write) pair in WIRE.
def _ranged(lo: int = 0, hi: Optional[int] = None):
    return lambda v, name: _int(v, name, lo, hi)


def _text(max_len: int, required: bool = False):
    def check(v: Any, name: str) -> str:
        if not _str(v, name, max_len) and required:
            raise FrameError(f"{name} must not be empty")
        return v
    return check


def _hex64(v: Any, name: str) -> str:
    if not isinstance(v, str) or not _HASH.match(v):
        raise FrameError(f"{name} must be 64 lowercase hex digits")
    return v


def _blob(required: bool = False):
    def check(v: Any, name: str) -> bytes:
        if not isinstance(v, (bytes, bytearray)) or (required and not v):
            raise FrameError(f"{name} must be {'a BoC' if required else 'bytes'}")
        return v
    return check


def _flag(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise FrameError(f"{name} must be true or false")
    return v


def _seconds(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= 86400:
        raise FrameError(f"{name} must be a number of seconds above 0 and at most 86400")
    return v


def _endpoint(v: Any, name: str) -> str:
    if v not in ENDPOINTS:
        raise FrameError(f"{name} must be one of {', '.join(ENDPOINTS)}")
    return v


def _of(kind: type, what: str):
    def check(v: Any, name: str):
        if not isinstance(v, kind):
            raise FrameError(f"{name} must be {what}")
        return v
    return check


def _optional(check):
    return lambda v, name: None if v is None else check(v, name)


_ID = lambda v, name: _job_id(v)    # noqa: E731
_OBJ = _obj
_ADDR = _address
B64 = (_b64, lambda b: base64.b64encode(b).decode())
USAGE = (lambda v, name: _usage(v), usage_to_openai)
VOUCHER = (lambda v, name: _voucher(v, name), voucher_dict)
OPT_VOUCHER = (lambda v, name: None if v is None else _voucher(v, name),
               lambda v: None if v is None else voucher_dict(v))


# ---------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class Frame:
    TYPE: ClassVar[str] = ""
    SENDER: ClassVar[str] = ""      # "worker" or "proxy"
    CHECKS: ClassVar[dict] = {}      # field -> check(value, name)
    WIRE: ClassVar[dict] = {}        # field -> (read(wire value, name), write(value)) where they differ

    def to_dict(self) -> dict:
        d = {"type": self.TYPE}
        for name in self.CHECKS:
            v = getattr(self, name)
            conv = self.WIRE.get(name)
            d[name] = conv[1](v) if conv else v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Frame":
        wire = cls.WIRE
        return cls(**{n: (wire[n][0](d[n], n) if n in wire else d[n]) for n in cls.CHECKS})

    def validate(self) -> None:
        """Raise FrameError unless every field is well formed."""
        for name, check in self.CHECKS.items():
            check(getattr(self, name), name)
        self.check()

    def check(self) -> None:
        """Rules across fields, beyond the table."""


@dataclass(frozen=True)
class Hello(Frame):
    TYPE: ClassVar[str] = "hello"
    SENDER: ClassVar[str] = "worker"
    CHECKS: ClassVar[dict] = {"protocol": _ranged(), "owner": _ADDR, "model": _text(256, required=True),
                              "model_hash": _hex64, "coefficient": _ranged(1, 65535), "max_jobs": _ranged(1, 100_000),
                              "credit": _ranged()}
    protocol: int
    owner: str
    model: str
    model_hash: str
    coefficient: int
    max_jobs: int
    credit: int

    def check(self) -> None:
        if self.protocol != PROTOCOL:
            raise FrameError(f"protocol {self.protocol} is not supported (this side speaks {PROTOCOL})")


@dataclass(frozen=True)
class Welcome(Frame):
    TYPE: ClassVar[str] = "welcome"
    SENDER: ClassVar[str] = "proxy"
    CHECKS: ClassVar[dict] = {"proxy_owner": _ADDR, "channel": _ADDR, "paid": _ranged(),
                              "voucher": _optional(_of(Voucher, "a voucher"))}
    WIRE: ClassVar[dict] = {"proxy_owner": (_address, str), "channel": (_address, str), "voucher": OPT_VOUCHER}
    proxy_owner: str
    channel: str
    paid: int
    voucher: Optional[Voucher]

    def check(self) -> None:
        if self.voucher is not None:
            if self.voucher.amount != self.paid:
                raise FrameError("paid must equal the voucher's amount")
            if self.voucher.channel != Address(self.channel):
                raise FrameError("the voucher is for another channel")
        elif self.paid:
            raise FrameError("paid is 0 when there is no voucher")


@dataclass(frozen=True)
class Refused(Frame):
    TYPE: ClassVar[str] = "refused"
    SENDER: ClassVar[str] = "proxy"
    CHECKS: ClassVar[dict] = {"reason": _text(4096)}
    reason: str


@dataclass(frozen=True)
class Job(Frame):
    TYPE: ClassVar[str] = "job"
    SENDER: ClassVar[str] = "proxy"
    CHECKS: ClassVar[dict] = {"job_id": _ID, "endpoint": _endpoint, "body": _blob(), "stream": _flag,
                              "timeout": _seconds}
    WIRE: ClassVar[dict] = {"body": B64}
    job_id: str
    endpoint: str
    body: bytes
    stream: bool
    timeout: float

    @property
    def job_int(self) -> int:
        return int(self.job_id, 16)


@dataclass(frozen=True)
class Chunk(Frame):
    TYPE: ClassVar[str] = "chunk"
    SENDER: ClassVar[str] = "worker"
    CHECKS: ClassVar[dict] = {"job_id": _ID, "data": _OBJ}
    job_id: str
    data: dict


@dataclass(frozen=True)
class Result(Frame):
    TYPE: ClassVar[str] = "result"
    SENDER: ClassVar[str] = "worker"
    CHECKS: ClassVar[dict] = {"job_id": _ID, "status": _ranged(100, 599), "body": _OBJ}
    job_id: str
    status: int
    body: dict


@dataclass(frozen=True)
class ReceiptFrame(Frame):
    TYPE: ClassVar[str] = "receipt"
    SENDER: ClassVar[str] = "worker"
    CHECKS: ClassVar[dict] = {"job_id": _ID, "receipt": _blob(required=True), "usage": _of(Usage, "a usage object"),
                              "coefficient": _ranged(1, 65535)}
    WIRE: ClassVar[dict] = {"receipt": B64, "usage": USAGE}
    job_id: str
    receipt: bytes          # BoC of the signed stake statement
    usage: Usage
    coefficient: int


@dataclass(frozen=True)
class Cancel(Frame):
    TYPE: ClassVar[str] = "cancel"
    SENDER: ClassVar[str] = "proxy"
    CHECKS: ClassVar[dict] = {"job_id": _ID}
    job_id: str


@dataclass(frozen=True)
class Pay(Frame):
    TYPE: ClassVar[str] = "pay"
    SENDER: ClassVar[str] = "proxy"
    CHECKS: ClassVar[dict] = {"voucher": _of(Voucher, "a voucher")}
    WIRE: ClassVar[dict] = {"voucher": VOUCHER}
    voucher: Voucher


@dataclass(frozen=True)
class Load(Frame):
    TYPE: ClassVar[str] = "load"
    SENDER: ClassVar[str] = "worker"
    CHECKS: ClassVar[dict] = {"active": _ranged(), "queued": _ranged(), "max_jobs": _ranged(1)}
    active: int
    queued: int
    max_jobs: int


FrameType = Union[Hello, Welcome, Refused, Job, Chunk, Result, ReceiptFrame, Cancel, Pay, Load]
FRAMES: dict[str, type[Frame]] = {c.TYPE: c for c in (Hello, Welcome, Refused, Job, Chunk, Result, ReceiptFrame,
                                                      Cancel, Pay, Load)}


def encode(frame: Frame) -> str:
    """The frame as JSON text (validated first: a side never sends what the other must refuse)."""
    if type(frame) not in FRAMES.values():
        raise FrameError(f"not a link frame: {type(frame).__name__}")
    frame.validate()
    return fastjson.dumps_str(frame.to_dict())


def decode(text: Union[str, bytes], sender: Optional[str] = None) -> Frame:
    """Read one frame; ``sender`` ("worker" or "proxy"), when given, is who must have sent it.
    Raises FrameError for anything docs/PROTOCOL.md §3 does not allow."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_FRAME:
            raise FrameError("frame too large")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("a frame is UTF-8 JSON text") from None
    if not isinstance(text, str):
        raise FrameError("a frame is JSON text")
    if len(text) > MAX_FRAME:
        raise FrameError("frame too large")
    try:
        d = fastjson.loads(text)
    except ValueError:
        raise FrameError("a frame is a JSON object") from None
    if not isinstance(d, dict):
        raise FrameError("a frame is a JSON object")
    t = d.get("type")
    cls = FRAMES.get(t) if isinstance(t, str) else None
    if cls is None:
        raise FrameError(f"unknown frame type {t!r}")
    if sender is not None and cls.SENDER != sender:
        raise FrameError(f"a {t} frame comes from the {cls.SENDER}, not the {sender}")
    names = cls.CHECKS.keys()
    if len(d) != len(names) + 1 or not names <= d.keys():
        keys = set(d) - {"type"}
        if names - keys:
            raise FrameError(f"{t} frame lacks {', '.join(sorted(names - keys))}")
        raise FrameError(f"{t} frame has unknown fields {', '.join(sorted(keys - names))}")
    try:
        frame = cls.from_dict(d)
    except (TypeError, KeyError, ValueError) as e:
        if isinstance(e, FrameError):
            raise
        raise FrameError(f"{t} frame: {e}") from None
    frame.validate()
    return frame

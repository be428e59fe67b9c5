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
import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Optional, Union

from pytoniq_core import Address

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
        return Voucher.from_json(json.dumps({"channel": _address(d["channel"], f"{name}.channel"),
                                             "amount": d["amount"], "signature": _str(d["signature"], name, 128)}))
    except ValueError as e:
        raise FrameError(str(e)) from None


def voucher_dict(v: Voucher) -> dict:
    return json.loads(v.to_json())


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


# ---------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class Frame:
    TYPE: ClassVar[str] = ""
    SENDER: ClassVar[str] = ""      # "worker" or "proxy"

    def to_dict(self) -> dict:
        d = {"type": self.TYPE}
        d.update({f.name: getattr(self, f.name) for f in fields(self)})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Frame":
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def validate(self) -> None:
        """Raise FrameError unless every field is well formed."""


@dataclass(frozen=True)
class Hello(Frame):
    TYPE: ClassVar[str] = "hello"
    SENDER: ClassVar[str] = "worker"
    protocol: int
    owner: str
    model: str
    model_hash: str
    coefficient: int
    max_jobs: int
    credit: int

    def validate(self) -> None:
        if _int(self.protocol, "protocol") != PROTOCOL:
            raise FrameError(f"protocol {self.protocol} is not supported (this side speaks {PROTOCOL})")
        _address(self.owner, "owner")
        if not _str(self.model, "model", 256):
            raise FrameError("model must not be empty")
        if not isinstance(self.model_hash, str) or not _HASH.match(self.model_hash):
            raise FrameError("model_hash must be 64 lowercase hex digits")
        _int(self.coefficient, "coefficient", 1, 65535)
        _int(self.max_jobs, "max_jobs", 1, 100_000)
        _int(self.credit, "credit")


@dataclass(frozen=True)
class Welcome(Frame):
    TYPE: ClassVar[str] = "welcome"
    SENDER: ClassVar[str] = "proxy"
    proxy_owner: str
    channel: str
    paid: int
    voucher: Optional[Voucher]

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["voucher"] = voucher_dict(self.voucher) if self.voucher else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Welcome":
        v = d["voucher"]
        return cls(_address(d["proxy_owner"], "proxy_owner"), _address(d["channel"], "channel"), d["paid"],
                   None if v is None else _voucher(v))

    def validate(self) -> None:
        _address(self.proxy_owner, "proxy_owner")
        _address(self.channel, "channel")
        _int(self.paid, "paid")
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
    reason: str

    def validate(self) -> None:
        _str(self.reason, "reason", 4096)


@dataclass(frozen=True)
class Job(Frame):
    TYPE: ClassVar[str] = "job"
    SENDER: ClassVar[str] = "proxy"
    job_id: str
    endpoint: str
    body: bytes
    stream: bool
    timeout: float

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["body"] = base64.b64encode(self.body).decode()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        return cls(d["job_id"], d["endpoint"], _b64(d["body"], "body"), d["stream"], d["timeout"])

    def validate(self) -> None:
        _job_id(self.job_id)
        if self.endpoint not in ENDPOINTS:
            raise FrameError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
        if not isinstance(self.body, (bytes, bytearray)):
            raise FrameError("body must be bytes")
        if not isinstance(self.stream, bool):
            raise FrameError("stream must be true or false")
        t = self.timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t <= 86400:
            raise FrameError("timeout must be a number of seconds above 0 and at most 86400")

    @property
    def job_int(self) -> int:
        return int(self.job_id, 16)


@dataclass(frozen=True)
class Chunk(Frame):
    TYPE: ClassVar[str] = "chunk"
    SENDER: ClassVar[str] = "worker"
    job_id: str
    data: dict

    def validate(self) -> None:
        _job_id(self.job_id)
        _obj(self.data, "data")


@dataclass(frozen=True)
class Result(Frame):
    TYPE: ClassVar[str] = "result"
    SENDER: ClassVar[str] = "worker"
    job_id: str
    status: int
    body: dict

    def validate(self) -> None:
        _job_id(self.job_id)
        _int(self.status, "status", 100, 599)
        _obj(self.body, "body")


@dataclass(frozen=True)
class ReceiptFrame(Frame):
    TYPE: ClassVar[str] = "receipt"
    SENDER: ClassVar[str] = "worker"
    job_id: str
    receipt: bytes          # BoC of the signed stake statement
    usage: Usage
    coefficient: int

    def to_dict(self) -> dict:
        return {"type": self.TYPE, "job_id": self.job_id, "receipt": base64.b64encode(self.receipt).decode(),
                "usage": usage_to_openai(self.usage), "coefficient": self.coefficient}

    @classmethod
    def from_dict(cls, d: dict) -> "ReceiptFrame":
        return cls(d["job_id"], _b64(d["receipt"], "receipt"), _usage(d["usage"]), d["coefficient"])

    def validate(self) -> None:
        _job_id(self.job_id)
        if not isinstance(self.receipt, (bytes, bytearray)) or not self.receipt:
            raise FrameError("receipt must be a BoC")
        if not isinstance(self.usage, Usage):
            raise FrameError("usage must be a usage object")
        _int(self.coefficient, "coefficient", 1, 65535)


@dataclass(frozen=True)
class Cancel(Frame):
    TYPE: ClassVar[str] = "cancel"
    SENDER: ClassVar[str] = "proxy"
    job_id: str

    def validate(self) -> None:
        _job_id(self.job_id)


@dataclass(frozen=True)
class Pay(Frame):
    TYPE: ClassVar[str] = "pay"
    SENDER: ClassVar[str] = "proxy"
    voucher: Voucher

    def to_dict(self) -> dict:
        return {"type": self.TYPE, "voucher": voucher_dict(self.voucher)}

    @classmethod
    def from_dict(cls, d: dict) -> "Pay":
        return cls(_voucher(d["voucher"]))

    def validate(self) -> None:
        if not isinstance(self.voucher, Voucher):
            raise FrameError("voucher must be a voucher")


@dataclass(frozen=True)
class Load(Frame):
    TYPE: ClassVar[str] = "load"
    SENDER: ClassVar[str] = "worker"
    active: int
    queued: int
    max_jobs: int

    def validate(self) -> None:
        _int(self.active, "active")
        _int(self.queued, "queued")
        _int(self.max_jobs, "max_jobs", 1)


FrameType = Union[Hello, Welcome, Refused, Job, Chunk, Result, ReceiptFrame, Cancel, Pay, Load]
FRAMES: dict[str, type[Frame]] = {c.TYPE: c for c in (Hello, Welcome, Refused, Job, Chunk, Result, ReceiptFrame,
                                                      Cancel, Pay, Load)}


def encode(frame: Frame) -> str:
    """The frame as JSON text (validated first: a side never sends what the other must refuse)."""
    if type(frame) not in FRAMES.values():
        raise FrameError(f"not a link frame: {type(frame).__name__}")
    frame.validate()
    return json.dumps(frame.to_dict(), separators=(",", ":"), ensure_ascii=False)


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
        d = json.loads(text)
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
    names = {f.name for f in fields(cls)}
    keys = set(d) - {"type"}
    if names - keys:
        raise FrameError(f"{t} frame lacks {', '.join(sorted(names - keys))}")
    if keys - names:
        raise FrameError(f"{t} frame has unknown fields {', '.join(sorted(keys - names))}")
    try:
        frame = cls.from_dict(d)
    except (TypeError, KeyError, ValueError) as e:
        if isinstance(e, FrameError):
            raise
        raise FrameError(f"{t} frame: {e}") from None
    frame.validate()
    return frame

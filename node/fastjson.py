"""JSON on the services' hot paths: link frames, SSE events, request and answer bodies.

orjson (installed with tonpy) is 5-10 times faster than the standard library at both ends, and each
request crosses JSON a dozen times per hop. The results are those of the standard library:
:func:`dumps` writes the compact UTF-8 text of ``json.dumps(obj, separators=(",", ":"),
ensure_ascii=False)``, and :func:`loads` returns what ``json.loads`` returns and raises what it
raises. Where orjson declines (integers beyond 64 bits or non-string keys when writing; NaN,
lone surrogates or any malformed text when reading) the standard library does the work, so the
answer and the error are the standard ones. One difference remains: an integer literal beyond 64
bits reads as a float (no amount, count or id of the protocol comes near that size).

Definitions whose bytes are hashed or signed (the response hash of a receipt) keep their own
``json.dumps`` call: their form is written down once, where they are defined.
"""
from __future__ import annotations

import json
from typing import Any, Union

import orjson


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def dumps_str(obj: Any) -> str:
    """:func:`dumps` as text."""
    return dumps(obj).decode("utf-8")


def loads(data: Union[bytes, bytearray, memoryview, str]) -> Any:
    """``json.loads``, fast."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)

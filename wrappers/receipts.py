"""Worker receipts: what a worker signs for every job it serves.

A receipt is a stake statement (stake.tlb) of kind KIND_JOB_RECEIPT, so its signature format is the
one the stake contract checks: the worker's operator key signs (its stake address, kind, job id as
context, seqno, payload). A worker that signs two different receipts for the same job and seqno has
equivocated, and anyone holding both can have its stake slashed. The payload binds the request and
the response by hash and the usage the client is charged for:

    receipt_payload$_ request_hash:uint256 response_hash:uint256 prompt:uint32 cached:uint32
                      completion:uint32 reasoning:uint32 coefficient:uint16 = ReceiptPayload;
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable, Mapping, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq_core import Address, Cell, begin_cell

from . import stake as S
from .pricing import Usage


@dataclass(frozen=True)
class Receipt:
    worker_stake: Address
    job_id: int
    request_hash: bytes
    response_hash: bytes
    usage: Usage
    coefficient: int
    seqno: int = 1

    def payload(self) -> Cell:
        u = self.usage
        return (begin_cell().store_bytes(self.request_hash).store_bytes(self.response_hash)
                .store_uint(u.prompt_tokens, 32).store_uint(u.cached_tokens, 32).store_uint(u.completion_tokens, 32)
                .store_uint(u.reasoning_tokens, 32).store_uint(self.coefficient, 16).end_cell())

    def statement(self) -> S.Statement:
        return S.Statement(self.worker_stake, S.KIND_JOB_RECEIPT, self.job_id, self.seqno, self.payload())

    def sign(self, key: Ed25519PrivateKey) -> S.SignedStatement:
        return S.sign_statement(key, self.statement())

    @classmethod
    def from_statement(cls, st: S.Statement) -> "Receipt":
        if st.kind != S.KIND_JOB_RECEIPT:
            raise ValueError("not a job receipt")
        s = st.payload.begin_parse()
        req, resp = s.load_bytes(32), s.load_bytes(32)
        p, c, comp, r = (s.load_uint(32) for _ in range(4))
        coef = s.load_uint(16)
        return cls(st.stake, st.context, req, resp, Usage(p, comp, c, r), coef, st.seqno)


def content_hash(data: bytes | str) -> bytes:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).digest()


ToolCall = Union[Mapping[str, str], tuple]


def response_content(content: str, tool_calls: Iterable[ToolCall] = ()) -> bytes:
    """The exact bytes a response hash covers (docs/PROTOCOL.md §5): the canonical JSON (sorted keys,
    no spaces, UTF-8) of ``{"content": TEXT, "tool_calls": [{"name", "arguments"}, ...]}``. TEXT is
    every delivered ``delta.content`` / ``text`` concatenated; tool calls come in index order with
    their arguments as the delivered string. Each tool call is a mapping with ``name`` and
    ``arguments`` (an OpenAI ``function`` object) or a ``(name, arguments)`` pair."""
    if not isinstance(content, str):
        raise TypeError("the response content is text")
    calls = []
    for c in tool_calls:
        name, args = (c["name"], c["arguments"]) if isinstance(c, Mapping) else c
        if not isinstance(name, str) or not isinstance(args, str):
            raise TypeError("a tool call's name and arguments are strings")
        calls.append({"name": name, "arguments": args})
    return json.dumps({"content": content, "tool_calls": calls}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def response_hash(content: str, tool_calls: Iterable[ToolCall] = ()) -> bytes:
    """SHA-256 of :func:`response_content`: the receipt's response hash, the one implementation."""
    return hashlib.sha256(response_content(content, tool_calls)).digest()

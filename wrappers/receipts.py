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
from dataclasses import dataclass

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

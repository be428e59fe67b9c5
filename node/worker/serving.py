"""One job, from the request bytes the proxy forwarded to chunks or an answer, usage and a signed receipt.

The order is fixed by docs/PROTOCOL.md §3 and §6: output first, then the receipt, which is stored
before it is sent. Usage is what the engine really processed: the prompt's tokens and the completion
tokens of the text delivered (all of them for a finished job, those already sent for a cancelled or
timed-out one). The response hash covers exactly the delivered text and tool calls
(:func:`node.payments.receipts.response_hash`).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

from pytoniq_core import Address

from node.link import frames as F
from node.openai import errors
from node.openai import protocol as P
from node.payments.pricing import Usage, charge
from node.payments.receipts import Receipt, response_hash
from wrappers.registry import Economics

from .engines import Done, Piece
from .metrics import Metrics
from .store import Store

log = logging.getLogger(__name__)

Emit = Callable[[F.Frame], Awaitable[None]]
INLINE_PROMPT_BYTES = 8192


@dataclass
class Identity:
    """What a receipt names and who signs it."""
    stake: Address          # the worker's stake contract
    key: object             # Ed25519PrivateKey: the operator key
    coefficient: int


class Server:
    def __init__(self, engine, store: Store, ident: Identity, model_name: str, economics: Callable[[], Economics],
                 metrics: Metrics, failpoint: Optional[str] = None):
        self.engine, self.store, self.ident = engine, store, ident
        self.model_name = model_name
        self.economics = economics
        self.metrics = metrics
        self.failpoint = failpoint
        self.cancels: dict[str, threading.Event] = {}

    def cancel(self, job_id: str) -> bool:
        ev = self.cancels.get(job_id)
        if ev is None:
            return False
        ev.set()
        return True

    # ------------------------------------------------------------------ receipts
    def receipt_frame(self, job_id: str) -> Optional[F.ReceiptFrame]:
        r = self.store.receipt(job_id)
        if r is None:
            return None
        return F.ReceiptFrame(job_id, r.receipt, r.usage, r.coefficient)

    def _receipt_boc(self, job: F.Job, usage: Usage, content: str, calls: list) -> tuple[bytes, bytes, bytes]:
        """(request hash, response hash, the signed receipt's BoC)."""
        req_hash = hashlib.sha256(job.body).digest()
        resp_hash = response_hash(content, calls)
        rc = Receipt(self.ident.stake, job.job_int, req_hash, resp_hash, usage, self.ident.coefficient)
        return req_hash, resp_hash, rc.signed_boc(self.ident.key)

    async def _sign(self, job: F.Job, channel: str, usage: Usage, content: str, calls: list, status: int,
                    cancelled: bool, start_mark: "asyncio.Future") -> Optional[tuple[F.ReceiptFrame, tuple]]:
        """The job's receipt frame and what :meth:`Store.keep_receipt` writes after it, once the job's
        start mark is durable; None if the job id was started before (no second receipt, ever)."""
        req_hash, resp_hash, boc = self._receipt_boc(job, usage, content, calls)
        fee = charge(usage, self.ident.coefficient, self.economics()).worker_fee
        try:
            first = await start_mark
        except Exception as e:       # the disk failed: a receipt that could repeat is never sent
            log.error("job %s: its start could not be recorded (%s); no receipt is sent", job.job_id, e)
            return None
        if not first:
            log.warning("job %s was started here before; its answer carries no second receipt", job.job_id)
            return None
        if self.failpoint == "receipt-signed":   # crash tests: die between signing and sending
            import os
            import signal
            os.kill(os.getpid(), signal.SIGKILL)
        m = self.metrics
        m.tokens.labels("prompt").inc(usage.prompt_tokens - usage.cached_tokens)
        m.tokens.labels("cached").inc(usage.cached_tokens)
        m.tokens.labels("completion").inc(usage.completion_tokens - usage.reasoning_tokens)
        m.tokens.labels("reasoning").inc(usage.reasoning_tokens)
        return (F.ReceiptFrame(job.job_id, boc, usage, self.ident.coefficient),
                (job.job_id, channel, job.endpoint, req_hash, resp_hash, usage, self.ident.coefficient, fee, status,
                 cancelled, boc))

    # ------------------------------------------------------------------ a job
    async def serve(self, job: F.Job, channel: str, emit: Emit) -> None:
        """Run ``job`` to its end, emitting its frames; never raises for the job's own failures."""
        t0 = time.monotonic()
        again = self.receipt_frame(job.job_id)
        if again is not None:   # a job id is served once: the same receipt, never a second one
            await emit(F.Result(job.job_id, 409, errors.APIError(
                409, "This job id was already served; its receipt follows.", code="duplicate_job").to_dict()))
            await emit(again)
            self.store.mark_sent(job.job_id)
            return
        if job.job_id in self.cancels or self.store.started(job.job_id):
            await emit(F.Result(job.job_id, 409, errors.APIError(
                409, "This job id is being served or was started before a restart; it is not served again.",
                code="duplicate_job").to_dict()))
            return
        # the mark commits from here, while the request is parsed and the engine runs: begun later, the
        # receipt of a fast answer waited for it (a refusal below drops it again)
        start_mark = self.store.begin_job(job.job_id)
        cancel = threading.Event()
        self.cancels[job.job_id] = cancel        # a repeat of the id from now on is refused at once
        try:
            req = P.parse_request(job.endpoint, job.body, self.engine.max_output_tokens)
            if req.model != self.model_name:
                raise errors.APIError(404, f"The model {req.model!r} is not served here (this worker serves "
                                           f"{self.model_name!r}).", param="model", code="model_not_found")
            if len(job.body) < INLINE_PROMPT_BYTES:     # a short prompt tokenizes in under a millisecond
                prompt = self.engine.tokens_before_run(req, len(job.body))
            else:
                prompt = await asyncio.to_thread(self.engine.tokens_before_run, req, len(job.body))
            self.engine.slots.admit()
        except errors.APIError as e:
            self.cancels.pop(job.job_id, None)
            self.store.drop_start(job.job_id, start_mark)   # refused: the id may come again
            self.metrics.jobs.labels("refused").inc()
            await emit(F.Result(job.job_id, e.status, e.to_dict()))
            return
        try:
            await self._run(job, req, prompt, cancel, channel, emit, t0, start_mark)
        finally:
            self.cancels.pop(job.job_id, None)

    async def _run(self, job: F.Job, req, prompt: Optional[list[int]], cancel: threading.Event, channel: str, emit: Emit,
                   t0: float, start_mark: "asyncio.Future") -> None:
        slots = self.engine.slots
        endpoint = job.endpoint
        cid = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + job.job_id[:24]
        created = int(time.time())
        model = self.model_name
        texts: list[str] = []
        delivered: list[Piece] = []         # their tokens are counted only if the bill needs them
        done: Optional[Done] = None
        error: Optional[errors.APIError] = None
        link_lost = False
        first_at = None
        started = False

        async def send(frame: F.Frame) -> None:
            nonlocal link_lost
            if link_lost:
                return
            try:
                await emit(frame)
            except Exception:
                link_lost = True
                cancel.set()

        deadline = t0 + job.timeout
        try:
            try:
                if slots.free:      # taken at once, without the task a timeout around a wait costs
                    await slots.acquire()
                else:
                    await asyncio.wait_for(slots.acquire(), max(0.001, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise errors.timeout("The job waited longer than its timeout for a free slot.") from None
            started = True
            gen_start = time.monotonic()
            try:
                if req.stream and endpoint == "chat":
                    await send(F.Chunk(job.job_id, P.chat_chunk(cid, created, model, {"role": "assistant",
                                                                                      "content": ""})))
                agen = self.engine.run(req, cancel, prompt)
                try:
                    async with asyncio.timeout_at(deadline):   # one timer for the job, not one task per token
                        while True:
                            item = await agen.__anext__()
                            if isinstance(item, Done):
                                done = item
                                break
                            if cancel.is_set():
                                continue
                            assert isinstance(item, Piece)
                            if item.text and first_at is None:
                                first_at = time.monotonic()
                                self.metrics.ttft.observe(first_at - t0)
                            if req.stream and item.text:
                                data = (P.chat_chunk(cid, created, model, {"content": item.text})
                                        if endpoint == "chat" else P.completion_chunk(cid, created, model, item.text))
                                await send(F.Chunk(job.job_id, data))
                            if not cancel.is_set():
                                texts.append(item.text)
                                delivered.append(item)
                except StopAsyncIteration:
                    raise errors.internal("the engine ended without a result") from None
                except asyncio.TimeoutError:
                    cancel.set()
                    raise errors.timeout(f"The job took longer than its timeout of {job.timeout:g} s.") from None
                finally:
                    await agen.aclose()
            finally:
                slots.release()
                gen_time = time.monotonic() - gen_start
                made = (done.completion_tokens if done is not None and done.finish_reason != "cancelled"
                        else sum(p.token_count() for p in delivered))
                if made and gen_time > 0:
                    self.metrics.tokens_per_second.set(made / gen_time)
        except errors.APIError as e:
            error = e
        except Exception as e:
            log.exception("job %s failed", job.job_id)
            error = errors.internal(f"generation failed: {type(e).__name__}")

        cancelled = done is not None and done.finish_reason == "cancelled" or link_lost or (
            done is None and error is None)
        content = "".join(texts)
        calls = done.tool_calls if done is not None and not cancelled else []
        if done is not None and not cancelled:
            completion = done.completion_tokens
            prompt_n = done.prompt_tokens
        else:
            completion = sum(p.token_count() for p in delivered)
            prompt_n = (len(prompt) if prompt is not None else self.engine.prompt_count(req)) if started else 0
            if not req.stream:          # an answer that never went out delivered nothing
                completion, content = 0, ""
        usage = Usage(prompt_n, completion)

        outcome = "ok"
        status = 200
        if error is not None:
            outcome, status = ("timeout" if error.status == 504 else "error"), error.status
            if req.stream and (texts or endpoint == "chat"):
                await send(F.Chunk(job.job_id, error.to_dict()))
            else:
                await send(F.Result(job.job_id, error.status, error.to_dict()))
        elif cancelled:
            outcome, status = "cancelled", 499
        else:
            finish = done.finish_reason
            tool_calls = [{"id": f"call_{job.job_id[:8]}_{i}", "type": "function",
                           "function": {"name": c["name"], "arguments": c["arguments"]}}
                          for i, c in enumerate(calls)]
            if req.stream:
                if endpoint == "chat":
                    if tool_calls:
                        await send(F.Chunk(job.job_id, P.chat_chunk(cid, created, model, {"tool_calls": [
                            dict(tc, index=i) for i, tc in enumerate(tool_calls)]})))
                    await send(F.Chunk(job.job_id, P.chat_chunk(cid, created, model, {}, finish)))
                else:
                    await send(F.Chunk(job.job_id, P.completion_chunk(cid, created, model, "", finish)))
                if req.include_usage:
                    await send(F.Chunk(job.job_id, P.usage_chunk(cid, created, model, usage, endpoint)))
            else:
                body = (P.chat_response(cid, created, model, content if not tool_calls or content else None, finish,
                                        usage, tool_calls or None)
                        if endpoint == "chat" else P.completion_response(cid, created, model, content, finish, usage))
                await send(F.Result(job.job_id, 200, body))
        self.metrics.jobs.labels(outcome).inc()
        if not started and usage.prompt_tokens == 0 and usage.completion_tokens == 0:
            return                      # nothing was processed: no receipt (docs/PROTOCOL.md §3)
        signed = await self._sign(job, channel, usage, content, [(c["name"], c["arguments"]) for c in calls],
                                  status, cancelled, start_mark)
        if signed is None:
            return
        rf, row = signed
        await send(rf)
        written = self.store.keep_receipt(*row, sent=not link_lost)
        self.metrics.earned.set(self.store.earned())
        if written is not None:      # unsent: the link reopens only to find it durable and send it
            await written
        self.metrics.latency.observe(time.monotonic() - t0)

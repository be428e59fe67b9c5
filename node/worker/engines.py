"""Engines: where tokens come from.

:class:`LlamaEngine` runs a GGUF in this process with llama-cpp-python: the prompt is rendered with
the GGUF's own chat template and tokenized with its tokenizer, generation runs token by token in
worker threads (one per slot) so the event loop never blocks, and a cancelled job stops at the next
token. :class:`HttpEngine` forwards to an OpenAI-compatible engine on the same host (vLLM, SGLang,
llama.cpp's server) and counts tokens with the model's tokenizer where the engine reports no usage.

Both yield :class:`Piece` events (text as it is delivered, with the number of completion tokens
that produced it) and end with one :class:`Done` (finish reason, exact prompt and completion token
counts, tool calls). Admission (the bounded queue, capacity) is :class:`Slots`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable, Optional, Union

from node import fastjson
from node.openai import errors
from node.openai.protocol import ChatRequest, CompletionRequest, add_tool_call_delta, delivered
from node.payments.pricing import usage_from_openai
from node.openai.sse import SSEDecoder, parse_event, DONE

log = logging.getLogger(__name__)

Request = Union[ChatRequest, CompletionRequest]


@dataclass
class Piece:
    text: str
    tokens: Optional[int]   # completion tokens this text accounts for; None: ``count(text)``, when asked
    count: Optional[Callable[[str], int]] = None

    def token_count(self) -> int:
        """The tokens of this piece, counted once and only when asked (a cancelled job's bill)."""
        if self.tokens is None:
            self.tokens = self.count(self.text) if self.text and self.count else 0
        return self.tokens


@dataclass
class Done:
    finish_reason: str      # stop | length | tool_calls | cancelled
    prompt_tokens: int
    completion_tokens: int
    tool_calls: list = field(default_factory=list)    # [{"name", "arguments"}]


# ---------------------------------------------------------------------------- the native runtime
_warmed = False


def warm_up(model_path: Optional[str]) -> None:
    """Load a vocabulary once, before tonpy's native library enters the process: tonpy links its own
    C++ runtime statically, and once it is loaded llama.cpp's first vocabulary load fails with
    ``std::bad_cast``; after one load has succeeded, later loads work. Call it early (the CLI does)."""
    global _warmed
    if _warmed or not model_path:
        return
    import sys

    if "tonpy" in sys.modules:
        return
    try:
        from llama_cpp import Llama

        Llama(model_path=str(model_path), vocab_only=True, verbose=False)
        _warmed = True
    except Exception:  # the engine's own start reports a real problem with the file
        pass


# ---------------------------------------------------------------------------- admission
class Slots:
    """``parallel`` jobs generate at once and up to ``queue`` more wait; beyond that a job is
    refused with 429 at once (the capacity the worker reports is exactly this)."""

    def __init__(self, parallel: int, queue: int):
        self.parallel, self.queue = parallel, queue
        self._sem = asyncio.Semaphore(parallel)
        self.active = 0
        self.waiting = 0
        self.listeners: list = []

    @property
    def capacity(self) -> int:
        return self.parallel + self.queue

    def _changed(self) -> None:
        for fn in list(self.listeners):
            fn()

    def admit(self) -> None:
        if self.active + self.waiting >= self.capacity:
            raise errors.overloaded(1, "The worker is at capacity; retry shortly.")
        self.waiting += 1
        self._changed()

    @property
    def free(self) -> bool:
        """Whether :meth:`acquire` would take a slot without waiting."""
        return not self._sem.locked()

    async def acquire(self) -> None:
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        self._changed()

    def release(self) -> None:
        self.active -= 1
        self._sem.release()
        self._changed()


# ---------------------------------------------------------------------------- tools
TOOL_SYSTEM = ("You are a function calling AI model. You may call one or more functions to assist with the user "
               "query. The function signatures are within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n"
               "For each function call return a JSON object with the function name and arguments within "
               "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": "
               "<args-json-object>}}\n</tool_call>")
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def parse_tool_calls(text: str, tools: list) -> list:
    """Tool calls the model wrote as ``<tool_call>{"name", "arguments"}</tool_call>`` (Hermes
    format), kept only when they name a given tool; arguments as compact JSON text."""
    names = {t["function"]["name"] for t in tools}
    out = []
    for m in _TOOL_CALL.finditer(text):
        try:
            obj = json.loads(m.group(1))
        except ValueError:
            continue
        for c in obj if isinstance(obj, list) else [obj]:
            if isinstance(c, dict) and c.get("name") in names:
                args = c.get("arguments", c.get("parameters", {}))
                out.append({"name": c["name"], "arguments": args if isinstance(args, str) else json.dumps(args)})
    return out


def tool_mode(req: Request) -> Optional[str]:
    """None (no tools), 'auto', or the name of the one function the output must call."""
    if not isinstance(req, ChatRequest) or not req.tools or req.tool_choice == "none":
        return None
    tc = req.tool_choice
    if isinstance(tc, dict):
        return tc["function"]["name"]
    if tc == "required" and len(req.tools) == 1:
        return req.tools[0]["function"]["name"]
    return "auto"


# ---------------------------------------------------------------------------- tokenizer / template
class Tokenizer:
    """The model's tokenizer and chat template (from the GGUF's metadata)."""

    def __init__(self, llm):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = llm
        meta = llm.metadata
        self.template = meta.get("tokenizer.chat_template")
        eos, bos = llm.token_eos(), llm.token_bos()
        self.eos_text = llm._model.token_get_text(eos) if eos != -1 else ""
        self.bos_text = llm._model.token_get_text(bos) if bos != -1 else ""
        self.formatter = (Jinja2ChatFormatter(self.template, self.eos_text, self.bos_text)
                          if self.template else None)
        self.template_knows_tools = bool(self.template and "tools" in self.template)
        self._lock = threading.Lock()
        self._buf, self._buf_len = None, 8192

    def render(self, req: ChatRequest) -> str:
        if self.formatter is None:
            raise errors.bad_request("This model has no chat template; use /v1/completions.", "messages",
                                     "unsupported")
        msgs = [m.to_dict() for m in req.messages]
        for m in msgs:
            if m.get("tool_calls"):
                m["tool_calls"] = [dict(c, function=dict(c["function"])) for c in m["tool_calls"]]
        if tool_mode(req) and not self.template_knows_tools:
            spec = "\n".join(json.dumps(t["function"]) for t in req.tools)
            text = TOOL_SYSTEM.format(tools=spec)
            if msgs and msgs[0]["role"] == "system":
                msgs[0] = dict(msgs[0], content=(msgs[0]["content"] or "") + "\n\n" + text)
            else:
                msgs.insert(0, {"role": "system", "content": text})
        try:
            return self.formatter(messages=msgs, tools=req.tools, tool_choice=req.tool_choice).prompt
        except Exception as e:
            raise errors.bad_request(f"The chat template refused these messages: {e}", "messages",
                                     "invalid_messages") from None

    def _tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        """llama.cpp's tokenizer into one reused buffer (Llama.tokenize allocates one of the training
        context's size per call, which costs more than the work for a short piece)."""
        import llama_cpp

        with self._lock:
            if self._buf is None:
                self._buf = (llama_cpp.llama_token * self._buf_len)()
            n = llama_cpp.llama_tokenize(self.llm._model.vocab, text, len(text), self._buf, self._buf_len,
                                         add_bos, special)
            if n >= 0:
                return self._buf[:n]
        return self.llm.tokenize(text, add_bos=add_bos, special=special)    # longer than the buffer

    def prompt_tokens(self, req: Request) -> list[int]:
        if isinstance(req, ChatRequest):
            with self._lock:
                text = self.render(req)
            return self._tokenize(text.encode("utf-8"), False, True)
        return self._tokenize(req.prompt.encode("utf-8"), True, False)

    def count(self, text: str) -> int:
        return len(self._tokenize(text.encode("utf-8"), False, False)) if text else 0


def _utf8_complete(b: bytes) -> int:
    """How many leading bytes of ``b`` form complete UTF-8 characters."""
    i = len(b)
    for back in range(1, min(4, len(b)) + 1):
        c = b[-back]
        if c & 0xC0 == 0x80:
            continue
        need = 1 if c < 0x80 else 2 if c >> 5 == 6 else 3 if c >> 4 == 14 else 4 if c >> 3 == 30 else 1
        return len(b) if back >= need else len(b) - back
    return i


class StopMatcher:
    """Holds back text that could still become a stop string; tells when one appeared."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = [s for s in stops if s]
        self.buf = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to deliver now, whether a stop string was found)."""
        self.buf += text
        for s in self.stops:
            i = self.buf.find(s)
            if i >= 0:
                out, self.buf = self.buf[:i], ""
                return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), 0, -1):
                if self.buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.buf[:len(self.buf) - hold]
        self.buf = self.buf[len(self.buf) - hold:]
        return out, False

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


# ---------------------------------------------------------------------------- in-process llama.cpp
class _Slot:
    """One model instance and the thread that runs its generations, one at a time."""

    def __init__(self, llm):
        import queue

        self.llm = llm
        self._work: "queue.SimpleQueue" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="llama-slot", daemon=True)
        self._thread.start()

    def submit(self, fn, finished) -> None:
        self._work.put((fn, finished))

    def stop(self) -> None:
        self._work.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            fn, finished = item
            try:
                fn()
            finally:
                try:
                    finished()
                except RuntimeError:        # the event loop is gone (shutting down)
                    pass


class LlamaEngine:
    """A GGUF served in this process; ``parallel`` model instances generate at once."""

    kind = "llama"

    def __init__(self, model_path: str | Path, *, n_ctx: int = 2048, threads: Optional[int] = None,
                 parallel: int = 1, queue: int = 8, max_output_tokens: int = 1024):
        self.model_path = str(model_path)
        self.n_ctx, self.parallel = n_ctx, parallel
        self.threads = threads or max(1, (os.cpu_count() or 1) // parallel)
        self.max_output_tokens = max_output_tokens
        self.slots = Slots(parallel, queue)
        self._free: Optional[asyncio.Queue] = None
        self.tokenizer: Optional[Tokenizer] = None

    def _load(self):
        from llama_cpp import Llama

        return Llama(model_path=self.model_path, n_ctx=self.n_ctx, n_threads=self.threads,
                     n_threads_batch=self.threads, verbose=bool(os.environ.get("COCOON_LLAMA_VERBOSE")), logits_all=False)

    async def start(self) -> None:
        self._free = asyncio.Queue()
        models = []
        for _ in range(self.parallel):
            models.append(await asyncio.to_thread(self._load))
        for m in models:
            self._free.put_nowait(_Slot(m))
        self.tokenizer = Tokenizer(models[0])

    async def close(self) -> None:
        while self._free is not None and not self._free.empty():
            slot = self._free.get_nowait()
            slot.stop()
            if hasattr(slot.llm, "close"):
                slot.llm.close()

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def prompt_tokens(self, req: Request) -> list[int]:
        assert self.tokenizer is not None
        toks = self.tokenizer.prompt_tokens(req)
        room = self.n_ctx - len(toks)
        if room < 1:
            raise errors.context_length_exceeded(len(toks), self.n_ctx)
        return toks

    def tokens_before_run(self, req: Request, body_bytes: int) -> Optional[list[int]]:
        """The prompt's tokens, which this engine generates from."""
        return self.prompt_tokens(req)

    async def run(self, req: Request, cancel: threading.Event, prompt: Optional[list[int]] = None
                  ) -> AsyncIterator[Union[Piece, Done]]:
        """Generate for an admitted request (the caller holds a slot)."""
        assert self._free is not None
        prompt = prompt if prompt is not None else self.prompt_tokens(req)
        max_new = min(req.sampling.max_tokens or self.max_output_tokens, self.max_output_tokens,
                      self.n_ctx - len(prompt))
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        slot = await self._free.get()
        put = lambda item: loop.call_soon_threadsafe(out.put_nowait, item)
        free = self._free

        def finished() -> None:             # in the slot's thread: the model is free again
            loop.call_soon_threadsafe(free.put_nowait, slot)

        slot.submit(lambda: self._generate(slot.llm, req, prompt, max_new, cancel, put), finished)
        try:
            while True:
                item = await out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Done):
                    return
        finally:
            cancel.set()                        # a consumer that stops early stops the generation

    def _generate(self, llm, req: Request, prompt: list[int], max_new: int, cancel: threading.Event, put) -> None:
        try:
            self._generate_inner(llm, req, prompt, max_new, cancel, put)
        except BaseException as e:  # delivered to the event loop, never lost in the thread
            put(e)

    def _generate_inner(self, llm, req, prompt, max_new, cancel, put) -> None:
        import llama_cpp

        s = req.sampling
        mode = tool_mode(req)
        grammar = None
        if mode and mode != "auto":
            grammar = self._tool_grammar(req, mode)
        if s.seed is not None:
            llm.set_seed(s.seed & 0xFFFFFFFF)
        else:
            llm.set_seed(int.from_bytes(os.urandom(4), "little"))
        vocab = llm._model.vocab
        stop = StopMatcher(s.stop) if not grammar else StopMatcher(())
        pending = b""
        pending_tokens = 0
        generated = 0
        finish = "length"
        text_all: list[str] = []
        buffer_all = mode is not None      # tool output is parsed at the end, not streamed
        greedy = s.temperature == 0
        gen = llm.generate(prompt, top_k=1 if greedy else 0, top_p=s.top_p, min_p=0.0, temp=s.temperature,
                           repeat_penalty=1.0, frequency_penalty=s.frequency_penalty,
                           presence_penalty=s.presence_penalty, grammar=grammar, reset=True)
        try:
            for tok in gen:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, tok):
                    finish = "stop"
                    break
                generated += 1
                pending += llm.detokenize([tok], prev_tokens=None)
                pending_tokens += 1
                n = _utf8_complete(pending)
                if n:
                    text, pending = pending[:n].decode("utf-8", errors="replace"), pending[n:]
                    safe, hit = stop.feed(text)
                    if buffer_all:
                        text_all.append(safe)
                    elif safe or hit:
                        put(Piece(safe, pending_tokens))
                        pending_tokens = 0
                    if hit:
                        finish = "stop"
                        break
                if generated >= max_new:
                    break
        finally:
            gen.close()
        if finish != "cancelled":
            rest = stop.flush() + (pending.decode("utf-8", errors="replace") if finish == "length" else "")
            if buffer_all:
                text_all.append(rest)
            elif rest or pending_tokens:
                put(Piece(rest, pending_tokens))
        calls: list = []
        if buffer_all:
            full = "".join(text_all)
            if finish != "cancelled":
                calls = parse_tool_calls(f"<tool_call>{full}</tool_call>" if grammar is not None else full, req.tools)
            if calls:
                finish = "tool_calls"
                put(Piece("", generated))
            else:
                put(Piece(full, generated))
        put(Done(finish, len(prompt), generated, calls))

    def _tool_grammar(self, req: ChatRequest, name: str):
        from llama_cpp.llama_grammar import LlamaGrammar

        fn = next(t["function"] for t in req.tools if t["function"]["name"] == name)
        schema = {"type": "object", "properties": {"name": {"const": name},
                                                   "arguments": fn.get("parameters") or {"type": "object"}},
                  "required": ["name", "arguments"]}
        try:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as e:
            raise errors.bad_request(f"The parameters schema of {name} is not supported: {e}", "tools",
                                     "unsupported_schema") from None


# ---------------------------------------------------------------------------- an OpenAI-compatible HTTP engine
TEMPLATE_BYTES = 1024   # more than a chat template adds to the messages' own text (system prompt, markers)
CANCEL_POLL = 0.1       # seconds between looks at a cancel flag while a whole answer is awaited
JSON_HEADERS = {"Content-Type": "application/json"}


class HttpEngine:
    """Forwards to an OpenAI-compatible engine on this host; the model file is still read for its
    hash and its tokenizer (usage where the engine reports none)."""

    kind = "http"

    def __init__(self, url: str, model_path: str | Path, *, engine_model: Optional[str] = None,
                 parallel: int = 4, queue: int = 8, max_output_tokens: int = 1024, n_ctx: int = 2048,
                 timeout: float = 600):
        import aiohttp

        self.url = url.rstrip("/")
        self.model_path = str(model_path)
        self.engine_model = engine_model
        self.max_output_tokens, self.n_ctx = max_output_tokens, n_ctx
        self.slots = Slots(parallel, queue)
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        self.session = None
        self.tokenizer: Optional[Tokenizer] = None

    async def start(self) -> None:
        import aiohttp
        from llama_cpp import Llama

        llm = await asyncio.to_thread(lambda: Llama(model_path=self.model_path, vocab_only=True, verbose=False))
        self.tokenizer = Tokenizer(llm)
        self.session = aiohttp.ClientSession(timeout=self.timeout)
        if self.engine_model is None:
            try:
                async with self.session.get(f"{self.url}/v1/models") as r:
                    data = await r.json()
                self.engine_model = data["data"][0]["id"]
            except Exception as e:
                await self.session.close()
                raise RuntimeError(f"the engine at {self.url} does not answer /v1/models: {e}") from None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def prompt_tokens(self, req: Request) -> list[int]:
        assert self.tokenizer is not None
        toks = self.tokenizer.prompt_tokens(req)
        if len(toks) >= self.n_ctx:
            raise errors.context_length_exceeded(len(toks), self.n_ctx)
        return toks

    def tokens_before_run(self, req: Request, body_bytes: int) -> Optional[list[int]]:
        """The prompt's tokens when the context might not hold them (checked here for a clear error),
        else None: the engine tokenizes and reports usage itself, and llama.cpp's tokenizer costs
        more per request (about 0.7 ms for a short chat) than the rest of the worker's bookkeeping. A
        rendered prompt has at most one token per byte, and its bytes are the body's text plus what
        the chat template adds (under 400 bytes for SmolLM2's, tools included). Should a template add
        more than TEMPLATE_BYTES, the engine's own context check is the one that answers."""
        if body_bytes + TEMPLATE_BYTES < self.n_ctx:
            return None
        return self.prompt_tokens(req)

    def prompt_count(self, req: Request) -> int:
        """The prompt's length in tokens, counted here (for usage the engine did not report)."""
        assert self.tokenizer is not None
        return len(self.tokenizer.prompt_tokens(req))

    def _body(self, req: Request) -> dict:
        d = dict(req.raw)
        d["model"] = self.engine_model
        d["max_tokens"] = min(req.sampling.max_tokens or self.max_output_tokens, self.max_output_tokens)
        d.pop("max_completion_tokens", None)
        d["stream"] = req.stream
        d.pop("stream_options", None)
        d.pop("user", None)
        return d

    async def _whole(self, r, cancel: threading.Event) -> Optional[dict]:
        """A non-streaming answer's JSON object, or None when the job is cancelled before it arrives
        (leaving the response closes the connection, which stops the engine). An answer already
        received is read at once; else the cancel flag is looked at every CANCEL_POLL seconds."""
        if r.content.is_eof():
            data = await r.read()
        else:
            read = asyncio.ensure_future(r.read())
            try:
                while not read.done():
                    await asyncio.wait({read}, timeout=CANCEL_POLL)
                    if cancel.is_set() and not read.done():
                        return None
            finally:
                if not read.done():
                    read.cancel()
            data = read.result()
        answer = fastjson.loads(data)
        if not isinstance(answer, dict):
            raise ValueError("its answer is not a JSON object")
        return answer

    async def run(self, req: Request, cancel: threading.Event, prompt: Optional[list[int]] = None
                  ) -> AsyncIterator[Union[Piece, Done]]:
        """A streaming request is streamed from the engine; any other is asked for whole (one JSON
        answer to read instead of an event per token, and engines report usage in it)."""
        assert self.session is not None and self.tokenizer is not None
        path = "/v1/chat/completions" if isinstance(req, ChatRequest) else "/v1/completions"
        finish, usage, text = "stop", None, []
        calls: dict[int, list] = {}
        try:
            async with self.session.post(self.url + path, data=fastjson.dumps(self._body(req)),
                                         headers=JSON_HEADERS) as r:
                if r.status != 200:
                    try:
                        body = await r.json(content_type=None)
                    except Exception:
                        body = None
                    err = errors.APIError.from_dict(r.status, body)
                    if r.status >= 500:
                        raise errors.APIError(502, f"the engine failed: {err.message}", code="engine_error")
                    raise err
                if not req.stream:
                    answer = await self._whole(r, cancel)
                    if answer is None:
                        finish = "cancelled"
                    else:
                        if answer.get("usage"):
                            usage = usage_from_openai(answer["usage"])
                        piece, got = delivered("chat" if isinstance(req, ChatRequest) else "completion", answer)
                        calls = {i: list(c) for i, c in enumerate(got)}
                        first = (answer.get("choices") or [{}])[0]       # n is 1 (the protocol refuses more)
                        finish = (first.get("finish_reason") if isinstance(first, dict) else None) or finish
                        if piece:
                            text.append(piece)
                            yield Piece(piece, None, self.tokenizer.count)
                else:
                    dec = SSEDecoder()
                    async for data in r.content.iter_any():
                        for payload in dec.feed(data):
                            ev = parse_event(payload)
                            if ev == DONE:
                                break
                            if "error" in ev:
                                raise errors.APIError(502, f"the engine failed: {ev['error']}", code="engine_error")
                            if ev.get("usage"):
                                usage = usage_from_openai(ev["usage"])
                            for ch in ev.get("choices") or ():
                                if isinstance(req, ChatRequest):
                                    d = ch.get("delta") or {}
                                    piece = d.get("content") or ""
                                    for tc in d.get("tool_calls") or ():
                                        add_tool_call_delta(calls, tc)
                                else:
                                    piece = ch.get("text") or ""
                                if ch.get("finish_reason"):
                                    finish = ch["finish_reason"]
                                if piece:
                                    text.append(piece)
                                    yield Piece(piece, None, self.tokenizer.count)
                            if cancel.is_set():
                                finish = "cancelled"
                                break
                        if cancel.is_set():
                            finish = "cancelled"
                            break
        except errors.APIError:
            raise
        except Exception as e:
            raise errors.APIError(502, f"the engine at {self.url} failed: {e}", code="engine_error") from None
        if usage is not None and finish != "cancelled":
            completion = usage.completion_tokens
            prompt_n = usage.prompt_tokens
        else:
            joined = "".join(text) + "".join(a for _, a in calls.values())
            completion = (self.tokenizer.count(joined) if finish != "cancelled"
                          else sum(self.tokenizer.count(p) for p in text))
            prompt_n = len(prompt) if prompt is not None else self.prompt_count(req)
        yield Done(finish, prompt_n, completion, [{"name": n, "arguments": a} for _, (n, a) in sorted(calls.items())])

"""Requests and answers of ``/v1/chat/completions`` and ``/v1/completions``.

:func:`parse_chat` and :func:`parse_completion` read the raw body and validate it strictly: an unknown
field, ``n`` other than 1, a bad role, a wrong type or an out-of-range value raises a 400
:class:`~node.openai.errors.APIError` naming the parameter. What passes is a typed request object
whose fields an engine can use directly. The builders below make the answer, chunk and usage objects
exactly as OpenAI's API does, so any OpenAI client reads them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from node import fastjson
from node.payments.pricing import Usage, usage_to_openai

from .errors import APIError, bad_request, unknown_field

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP = 4
MAX_BODY = 8 << 20

_COMMON = {"model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed",
           "presence_penalty", "frequency_penalty", "user"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens", "tools", "tool_choice", "parallel_tool_calls"}
COMPLETION_FIELDS = _COMMON | {"prompt"}


@dataclass(frozen=True)
class Message:
    role: str
    content: Optional[str]
    name: Optional[str] = None
    tool_calls: Optional[list] = None       # assistant: [{"id", "type": "function", "function": {name, arguments}}]
    tool_call_id: Optional[str] = None      # tool

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            d["name"] = self.name
        if self.tool_calls is not None:
            d["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        return d


@dataclass(frozen=True)
class Sampling:
    max_tokens: Optional[int] = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: Optional[int] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    tools: Optional[list] = None
    tool_choice: Optional[Union[str, dict]] = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    endpoint = "chat"


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompt: str
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    endpoint = "completion"


# ---------------------------------------------------------------------------- field checks
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _number(d: dict, name: str, lo: float, hi: float, default: float) -> float:
    v = d.get(name)
    if v is None:
        return default
    if not _is_num(v) or not lo <= v <= hi:
        raise bad_request(f"'{name}' must be a number between {lo:g} and {hi:g}", name, "invalid_value")
    return float(v)


def _string(v: Any, name: str, allow_empty: bool = True) -> str:
    if not isinstance(v, str) or (not allow_empty and not v):
        raise bad_request(f"'{name}' must be a {'non-empty ' if not allow_empty else ''}string", name, "invalid_type")
    return v


def _load(body: Union[bytes, str, dict]) -> dict:
    if isinstance(body, dict):
        return body
    if isinstance(body, str):
        body = body.encode("utf-8")
    if len(body) > MAX_BODY:
        raise APIError(413, f"The request body is larger than {MAX_BODY} bytes.", code="request_too_large")
    try:
        d = fastjson.loads(body)
    except UnicodeDecodeError:
        raise bad_request("The request body is not UTF-8.", code="invalid_json") from None
    except ValueError as e:
        raise bad_request(f"The request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(d, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return d


def _common(d: dict, allowed: set, max_tokens_cap: Optional[int]) -> tuple[str, Sampling, bool, bool]:
    for k in d:
        if k not in allowed:
            raise unknown_field(k)
    model = _string(d.get("model"), "model", allow_empty=False) if "model" in d else None
    if model is None:
        raise bad_request("'model' is required", "model", "missing_required_parameter")
    n = d.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise bad_request("Only n=1 is supported", "n", "invalid_value")
    stream = d.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "stream", "invalid_type")
    include_usage = False
    so = d.get("stream_options")
    if so is not None:
        if not isinstance(so, dict) or set(so) - {"include_usage"}:
            raise bad_request("'stream_options' may only contain include_usage", "stream_options", "invalid_value")
        if not stream:
            raise bad_request("'stream_options' is only allowed with stream=true", "stream_options", "invalid_value")
        iu = so.get("include_usage", False)
        if not isinstance(iu, bool):
            raise bad_request("'stream_options.include_usage' must be a boolean", "stream_options", "invalid_type")
        include_usage = iu
    mt = d.get("max_tokens")
    mct = d.get("max_completion_tokens")
    if mt is not None and mct is not None:
        raise bad_request("Give max_tokens or max_completion_tokens, not both", "max_completion_tokens",
                          "invalid_value")
    name = "max_tokens" if mct is None else "max_completion_tokens"
    mt = mt if mct is None else mct
    if mt is not None:
        if not _is_int(mt) or mt < 1:
            raise bad_request(f"'{name}' must be a positive integer", name, "invalid_value")
        if max_tokens_cap is not None:
            mt = min(mt, max_tokens_cap)
    stop = d.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,) if stop else ()
    elif isinstance(stop, list) and len(stop) <= MAX_STOP and all(isinstance(s, str) and s for s in stop):
        stops = tuple(stop)
    else:
        raise bad_request(f"'stop' must be a string or a list of at most {MAX_STOP} non-empty strings", "stop",
                          "invalid_value")
    seed = d.get("seed")
    if seed is not None and (not _is_int(seed) or not -(2**63) <= seed < 2**64):
        raise bad_request("'seed' must be an integer", "seed", "invalid_type")
    user = d.get("user")
    if user is not None:
        _string(user, "user")
    sampling = Sampling(max_tokens=mt, temperature=_number(d, "temperature", 0, 2, 1.0),
                        top_p=_number(d, "top_p", 0, 1, 1.0), stop=stops, seed=seed,
                        presence_penalty=_number(d, "presence_penalty", -2, 2, 0.0),
                        frequency_penalty=_number(d, "frequency_penalty", -2, 2, 0.0))
    return model, sampling, bool(stream), include_usage


def _content(v: Any, where: str, role: str) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        parts = []
        for p in v:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str) \
                    or set(p) - {"type", "text"}:
                raise bad_request(f"'{where}' may only hold text parts ({{\"type\": \"text\", \"text\": ...}})",
                                  where, "invalid_content")
            parts.append(p["text"])
        return "".join(parts)
    raise bad_request(f"'{where}' must be a string or a list of text parts", where, "invalid_type")


def _tool_calls(v: Any, where: str) -> list:
    if not isinstance(v, list) or not v:
        raise bad_request(f"'{where}' must be a non-empty list", where, "invalid_type")
    out = []
    for i, c in enumerate(v):
        w = f"{where}[{i}]"
        if not isinstance(c, dict) or c.get("type", "function") != "function" or set(c) - {"id", "type", "function"}:
            raise bad_request(f"'{w}' must be a function tool call", w, "invalid_value")
        f = c.get("function")
        if not isinstance(f, dict) or set(f) - {"name", "arguments"} or not isinstance(f.get("name"), str) \
                or not isinstance(f.get("arguments"), str):
            raise bad_request(f"'{w}.function' needs a name and arguments (strings)", w, "invalid_value")
        if "id" in c and not isinstance(c["id"], str):
            raise bad_request(f"'{w}.id' must be a string", w, "invalid_type")
        out.append({"id": c.get("id", f"call_{i}"), "type": "function",
                    "function": {"name": f["name"], "arguments": f["arguments"]}})
    return out


def _messages(v: Any) -> tuple[Message, ...]:
    if not isinstance(v, list) or not v:
        raise bad_request("'messages' must be a non-empty list", "messages", "invalid_value")
    out = []
    for i, m in enumerate(v):
        w = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"'{w}' must be an object", w, "invalid_type")
        role = m.get("role")
        if role not in ROLES:
            raise bad_request(f"'{w}.role' must be one of {', '.join(ROLES)}", f"{w}.role", "invalid_value")
        allowed = {"role", "content", "name"} | ({"tool_calls"} if role == "assistant" else set()) \
            | ({"tool_call_id"} if role == "tool" else set())
        for k in m:
            if k not in allowed:
                raise unknown_field(f"{w}.{k}")
        if "content" not in m and not (role == "assistant" and "tool_calls" in m):
            raise bad_request(f"'{w}.content' is required", f"{w}.content", "missing_required_parameter")
        content = _content(m.get("content"), f"{w}.content", role)
        if content is None and not (role == "assistant" and m.get("tool_calls")):
            raise bad_request(f"'{w}.content' must not be null", f"{w}.content", "invalid_value")
        name = m.get("name")
        if name is not None:
            _string(name, f"{w}.name", allow_empty=False)
        calls = _tool_calls(m["tool_calls"], f"{w}.tool_calls") if m.get("tool_calls") is not None else None
        tcid = m.get("tool_call_id")
        if role == "tool":
            _string(tcid, f"{w}.tool_call_id", allow_empty=False)
        out.append(Message("system" if role == "developer" else role, content, name, calls, tcid))
    return tuple(out)


def _tools(v: Any) -> Optional[list]:
    if v is None:
        return None
    if not isinstance(v, list):
        raise bad_request("'tools' must be a list", "tools", "invalid_type")
    out = []
    for i, t in enumerate(v):
        w = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function" or set(t) - {"type", "function"}:
            raise bad_request(f"'{w}' must be {{\"type\": \"function\", \"function\": {{...}}}}", w, "invalid_value")
        f = t.get("function")
        if not isinstance(f, dict) or set(f) - {"name", "description", "parameters", "strict"}:
            raise bad_request(f"'{w}.function' has only name, description, parameters and strict", w, "invalid_value")
        _string(f.get("name"), f"{w}.function.name", allow_empty=False)
        if "description" in f and not isinstance(f["description"], str):
            raise bad_request(f"'{w}.function.description' must be a string", w, "invalid_type")
        if "parameters" in f and not isinstance(f["parameters"], dict):
            raise bad_request(f"'{w}.function.parameters' must be a JSON schema object", w, "invalid_type")
        if "strict" in f and not isinstance(f["strict"], bool):
            raise bad_request(f"'{w}.function.strict' must be a boolean", w, "invalid_type")
        out.append(t)
    return out


def _tool_choice(v: Any, tools: Optional[list]) -> Optional[Union[str, dict]]:
    if v is None:
        return None
    if v in ("none", "auto", "required"):
        if v == "required" and not tools:
            raise bad_request("tool_choice 'required' needs tools", "tool_choice", "invalid_value")
        return v
    if isinstance(v, dict) and v.get("type") == "function" and isinstance(v.get("function"), dict) \
            and isinstance(v["function"].get("name"), str) and set(v) == {"type", "function"}:
        names = {t["function"]["name"] for t in tools or ()}
        if v["function"]["name"] not in names:
            raise bad_request("tool_choice names a function that is not in tools", "tool_choice", "invalid_value")
        return v
    raise bad_request("'tool_choice' must be none, auto, required or a named function", "tool_choice", "invalid_value")


def parse_chat(body: Union[bytes, str, dict], max_tokens_cap: Optional[int] = None) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body; raises APIError(400). ``max_tokens`` above
    ``max_tokens_cap`` is lowered to it."""
    d = _load(body)
    model, sampling, stream, include_usage = _common(d, CHAT_FIELDS, max_tokens_cap)
    if "messages" not in d:
        raise bad_request("'messages' is required", "messages", "missing_required_parameter")
    messages = _messages(d["messages"])
    tools = _tools(d.get("tools"))
    ptc = d.get("parallel_tool_calls")
    if ptc is not None and not isinstance(ptc, bool):
        raise bad_request("'parallel_tool_calls' must be a boolean", "parallel_tool_calls", "invalid_type")
    return ChatRequest(model, messages, sampling, stream, include_usage, tools, _tool_choice(d.get("tool_choice"), tools),
                       raw=d)


def parse_completion(body: Union[bytes, str, dict], max_tokens_cap: Optional[int] = None) -> CompletionRequest:
    """Validate a ``/v1/completions`` body; raises APIError(400). The prompt is a string (or a list
    of exactly one string)."""
    d = _load(body)
    model, sampling, stream, include_usage = _common(d, COMPLETION_FIELDS, max_tokens_cap)
    if "prompt" not in d:
        raise bad_request("'prompt' is required", "prompt", "missing_required_parameter")
    p = d["prompt"]
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if not isinstance(p, str):
        raise bad_request("'prompt' must be a string (one prompt per request)", "prompt", "invalid_value")
    return CompletionRequest(model, p, sampling, stream, include_usage, raw=d)


def parse_request(endpoint: str, body: Union[bytes, str, dict], max_tokens_cap: Optional[int] = None):
    """``endpoint`` is ``chat`` or ``completion`` (the link's names)."""
    if endpoint == "chat":
        return parse_chat(body, max_tokens_cap)
    if endpoint == "completion":
        return parse_completion(body, max_tokens_cap)
    raise APIError(404, f"unknown endpoint {endpoint!r}", code="not_found")


ENDPOINT_PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}
PATH_ENDPOINTS = {v: k for k, v in ENDPOINT_PATHS.items()}


# ---------------------------------------------------------------------------- answers and chunks
def chat_response(id: str, created: int, model: str, content: Optional[str], finish_reason: str, usage: Usage,
                  tool_calls: Optional[list] = None) -> dict:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return {"id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage_to_openai(usage)}


def completion_response(id: str, created: int, model: str, text: str, finish_reason: str, usage: Usage) -> dict:
    return {"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage_to_openai(usage)}


def chat_chunk(id: str, created: int, model: str, delta: dict, finish_reason: Optional[str] = None) -> dict:
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def completion_chunk(id: str, created: int, model: str, text: str, finish_reason: Optional[str] = None) -> dict:
    return {"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}


def usage_chunk(id: str, created: int, model: str, usage: Usage, endpoint: str = "chat") -> dict:
    """The last chunk before ``[DONE]``: ``choices: []`` and the usage."""
    return {"id": id, "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
            "created": created, "model": model, "choices": [], "usage": usage_to_openai(usage)}


def add_tool_call_delta(calls: dict[int, list], tc: dict) -> None:
    """Add one streamed tool-call delta to ``calls`` (index -> [name, arguments]): a call's name and
    arguments arrive in pieces, each piece naming the call's index."""
    slot = calls.setdefault(tc.get("index", 0), ["", ""])
    f = tc.get("function") or {}
    slot[0] += f.get("name") or ""
    slot[1] += f.get("arguments") or ""


def delivered(endpoint: str, chunks_or_answer: Union[dict, list]) -> tuple[str, list]:
    """What a response delivered, as the receipt's response hash covers it (docs/PROTOCOL.md §5):
    (content text, [(name, arguments), ...] in index order), from a whole answer or a list of stream
    chunks."""
    text: list[str] = []
    calls: dict[int, list] = {}
    if isinstance(chunks_or_answer, dict):
        for ch in chunks_or_answer.get("choices") or ():
            if endpoint == "chat":
                m = ch.get("message") or {}
                text.append(m.get("content") or "")
                for i, tc in enumerate(m.get("tool_calls") or ()):
                    f = tc.get("function") or {}
                    calls[i] = [f.get("name") or "", f.get("arguments") or ""]
            else:
                text.append(ch.get("text") or "")
    else:
        for chunk in chunks_or_answer:
            for ch in chunk.get("choices") or ():
                if endpoint == "chat":
                    d = ch.get("delta") or {}
                    text.append(d.get("content") or "")
                    for tc in d.get("tool_calls") or ():
                        add_tool_call_delta(calls, tc)
                else:
                    text.append(ch.get("text") or "")
    return "".join(text), [tuple(calls[i]) for i in sorted(calls)]

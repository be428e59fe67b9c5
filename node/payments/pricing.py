"""What a request costs: token usage to adjusted tokens, client price, worker fee, proxy margin.

The formulas follow the network's economics (DESIGN.md §4, the same as COCOON's): each class of
tokens is scaled by the worker's coefficient and the class multiplier from the registry's
parameters, then priced per token. Integer arithmetic only, rounded down per class, so the client,
the proxy and the worker compute the same numbers.

    adjusted(n, coef, mult) = n * coef * mult // (COEF_ONE * MULT_ONE)
    prompt     = adjusted(prompt_tokens - cached_tokens, coef, prompt_mult)
    cached     = adjusted(cached_tokens, coef, cached_mult)
    completion = adjusted(completion_tokens - reasoning_tokens, coef, completion_mult)
    reasoning  = adjusted(reasoning_tokens, coef, reasoning_mult)
    client pays  (prompt + cached + completion + reasoning) * price_per_token
    worker earns (prompt + cached + completion + reasoning) * worker_fee_per_token

Coefficients use COEF_ONE = 1000 for 1.0 (a worker at 1500 charges 1.5x); multipliers use 10000.
A usage travels as an OpenAI ``usage`` object (:func:`usage_to_openai`, :func:`usage_from_openai`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node import fastjson
from wrappers.registry import Economics

COEF_ONE = 1000
MULT_ONE = 10_000


@dataclass(frozen=True)
class Usage:
    """Token counts as an OpenAI ``usage`` object reports them (cached within prompt, reasoning
    within completion)."""
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self):
        if min(self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.reasoning_tokens) < 0:
            raise ValueError("token counts cannot be negative")
        if self.cached_tokens > self.prompt_tokens or self.reasoning_tokens > self.completion_tokens:
            raise ValueError("cached tokens are part of the prompt and reasoning tokens part of the completion")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def usage_to_openai(u: Usage) -> dict:
    """An OpenAI ``usage`` object (cached within prompt, reasoning within completion)."""
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}


def usage_from_openai(d: Any) -> Usage:
    """Read an OpenAI usage object; raises ValueError when it is not one (or its total is wrong)."""
    if not isinstance(d, dict):
        raise ValueError("usage is an object")

    def count(v: Any, name: str) -> int:
        if not _is_int(v) or v < 0 or v >= 2**32:
            raise ValueError(f"{name} must be a non-negative 32-bit integer")
        return v

    p = count(d.get("prompt_tokens"), "prompt_tokens")
    c = count(d.get("completion_tokens"), "completion_tokens")
    if "total_tokens" in d and count(d["total_tokens"], "total_tokens") != p + c:
        raise ValueError("total_tokens must equal prompt_tokens + completion_tokens")
    ptd, ctd = d.get("prompt_tokens_details") or {}, d.get("completion_tokens_details") or {}
    if not isinstance(ptd, dict) or not isinstance(ctd, dict):
        raise ValueError("token details are objects")
    cached = count(ptd.get("cached_tokens") or 0, "cached_tokens")
    reasoning = count(ctd.get("reasoning_tokens") or 0, "reasoning_tokens")
    return Usage(p, c, cached, reasoning)


def adjusted(n: int, coef: int, mult: int) -> int:
    return n * coef * mult // (COEF_ONE * MULT_ONE)


@dataclass(frozen=True)
class Charge:
    adjusted_tokens: int
    client_cost: int   # nanoTON the client pays
    worker_fee: int    # nanoTON the worker earns

    @property
    def proxy_margin(self) -> int:
        return self.client_cost - self.worker_fee


def adjusted_tokens(u: Usage, coef: int, e: Economics) -> int:
    return (adjusted(u.prompt_tokens - u.cached_tokens, coef, e.prompt_mult)
            + adjusted(u.cached_tokens, coef, e.cached_mult)
            + adjusted(u.completion_tokens - u.reasoning_tokens, coef, e.completion_mult)
            + adjusted(u.reasoning_tokens, coef, e.reasoning_mult))


def charge(u: Usage, coef: int, e: Economics) -> Charge:
    t = adjusted_tokens(u, coef, e)
    return Charge(t, t * e.price_per_token, t * e.worker_fee_per_token)


def max_cost(prompt_tokens: int, max_tokens: int, max_coef: int, e: Economics) -> int:
    """The most a request can cost: what a client authorizes before it is served. No cached-token
    discount is assumed, and every completion token is priced at the dearer of completion and
    reasoning."""
    u_prompt = adjusted(prompt_tokens, max_coef, e.prompt_mult)
    u_out = adjusted(max_tokens, max_coef, max(e.completion_mult, e.reasoning_mult))
    return (u_prompt + u_out) * e.price_per_token


PROMPT_TOKENS_PER_MESSAGE = 16   # what a chat template adds per message, at most
PROMPT_TOKENS_OVERHEAD = 64      # the template's fixed part


_UNPARSED = object()


def prompt_token_bound(body: bytes | str, doc: Any = _UNPARSED) -> int:
    """An upper bound on a request's prompt tokens from its body alone (docs/PROTOCOL.md §4): every
    prompt token is at least one byte of it, so the body's UTF-8 length, plus 16 per chat message
    and 64 for the template. ``doc``: the body already parsed (None if it is not JSON)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if doc is _UNPARSED:
        try:
            doc = fastjson.loads(raw)
        except ValueError:
            doc = None
    messages = len(doc["messages"]) if isinstance(doc, dict) and isinstance(doc.get("messages"), list) else 0
    return len(raw) + PROMPT_TOKENS_PER_MESSAGE * messages + PROMPT_TOKENS_OVERHEAD


def request_max_cost(body: bytes | str, max_coefficient: int, economics: Economics, doc: Any = _UNPARSED) -> int:
    """The most a request can cost (docs/PROTOCOL.md §4): :func:`prompt_token_bound` prompt tokens
    and ``max_tokens`` completion tokens at the client's maximum coefficient. Raises ValueError when
    the body is not a JSON object with a positive integer ``max_tokens``. ``doc``: the body already
    parsed, when the caller has it (the body is then not parsed again)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if doc is _UNPARSED:
        try:
            doc = fastjson.loads(raw)
        except ValueError:
            raise ValueError("the request body is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("the request body is not a JSON object")
    mt = doc.get("max_tokens", doc.get("max_completion_tokens"))
    if isinstance(mt, bool) or not isinstance(mt, int) or mt <= 0:
        raise ValueError("the request needs a positive integer max_tokens")
    if max_coefficient <= 0:
        raise ValueError("the maximum coefficient is positive")
    return max_cost(prompt_token_bound(raw, doc), mt, max_coefficient, economics)

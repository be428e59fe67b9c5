"""Errors as OpenAI error objects, mapped to HTTP in this one place.

Every service raises :class:`APIError` (or a helper below) and lets :func:`error_middleware` or
:func:`error_response` turn it into ``{"error": {"message", "type", "param", "code"}}`` with the right
status. A client's mistake is always a 4xx; only the service's own failure is a 5xx.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Optional

from aiohttp import web

log = logging.getLogger(__name__)

TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "payment_required",
         403: "permission_error", 404: "not_found_error", 408: "timeout_error", 409: "conflict_error",
         413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
         429: "rate_limit_error", 499: "cancelled", 500: "server_error", 502: "server_error",
         503: "service_unavailable", 504: "timeout_error"}


class APIError(Exception):
    """An OpenAI-style error with its HTTP status; ``extra`` adds fields (e.g. ``cocoon``) to the
    error object and ``headers`` to the HTTP answer (e.g. Retry-After)."""

    def __init__(self, status: int, message: str, *, type: Optional[str] = None, param: Optional[str] = None,
                 code: Optional[str] = None, extra: Optional[dict] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.type = type or TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param, self.code = param, code
        self.extra, self.headers = dict(extra or {}), dict(headers or {})

    def to_dict(self) -> dict:
        """The error body: ``{"error": {...}}``."""
        e: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        e.update(self.extra)
        return {"error": e}

    @classmethod
    def from_dict(cls, status: int, body: Any) -> "APIError":
        """Rebuild an error from a body another service sent (non-conforming bodies become a
        generic error with the same status)."""
        e = body.get("error") if isinstance(body, dict) else None
        if not isinstance(e, dict):
            return cls(status, f"upstream answered {status}")
        extra = {k: v for k, v in e.items() if k not in ("message", "type", "param", "code")}
        return cls(status, str(e.get("message") or f"upstream answered {status}"), type=e.get("type"),
                   param=e.get("param"), code=e.get("code"), extra=extra)

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.message!r}, code={self.code!r})"


def bad_request(message: str, param: Optional[str] = None, code: Optional[str] = "invalid_request") -> APIError:
    return APIError(400, message, param=param, code=code)


def unknown_field(name: str) -> APIError:
    return APIError(400, f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")


def context_length_exceeded(prompt_tokens: int, limit: int) -> APIError:
    return APIError(400, f"This model's maximum context length is {limit} tokens; the prompt has {prompt_tokens}.",
                    param="messages", code="context_length_exceeded")


def payment_required(message: str, required: int, settled: int, in_flight: Optional[int] = None) -> APIError:
    """402 with ``error.cocoon``: ``required`` (what to authorize), ``settled`` (the billed total) and,
    from a proxy, ``in_flight`` (the maximum costs of the channel's running requests)."""
    cocoon = {"required": required, "settled": settled}
    if in_flight is not None:
        cocoon["in_flight"] = in_flight
    return APIError(402, message, code="payment_required", extra={"cocoon": cocoon})


def overloaded(retry_after: int = 1, message: str = "No worker has room for this request; retry shortly.") -> APIError:
    return APIError(429, message, code="overloaded", headers={"Retry-After": str(max(1, int(retry_after)))})


def timeout(message: str = "The request took longer than its timeout.") -> APIError:
    return APIError(504, message, code="timeout")


def unavailable(message: str) -> APIError:
    return APIError(503, message, code="unavailable")


def internal(message: str = "The server failed to answer; this is not the request's fault.") -> APIError:
    return APIError(500, message, code="internal_error")


def error_response(err: APIError) -> web.Response:
    return web.Response(status=err.status, text=json.dumps(err.to_dict()), content_type="application/json",
                        headers=err.headers)


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Map every failure of a handler to an OpenAI error body: APIError as it says, aiohttp's own
    HTTP errors (404, 405, 413) with their status, anything else 500 (logged)."""
    try:
        return await handler(request)
    except APIError as e:
        return error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error_response(APIError(e.status, e.reason or "error", code=e.reason.lower().replace(" ", "_")
                                       if e.reason else None))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(internal())

"""The OpenAI-compatible API surface shared by the worker, the proxy and the client gateway.

- :mod:`.errors`: every error as an OpenAI error object, mapped to HTTP in one place;
- :mod:`.protocol`: request validation (strict: unknown fields, ``n`` > 1, bad roles and types are
  400s) and the answer, chunk and usage objects;
- :mod:`.sse`: server-sent events (``data: ...``, ``data: [DONE]``, the error event) and a reader;
- :mod:`.headers`: the ``X-Cocoon-*`` header names (docs/PROTOCOL.md §4).
"""

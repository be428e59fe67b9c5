"""Server-sent events as OpenAI streams them: ``data: JSON\\n\\n`` per chunk, ``data: [DONE]`` at the
end, ``data: {"error": {...}}`` when a stream breaks; and :class:`SSEDecoder` to read them back."""
from __future__ import annotations

from typing import Iterator, Union

from node import fastjson

from .errors import APIError

DONE = "[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"
CONTENT_TYPE = "text/event-stream"
HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
           "X-Accel-Buffering": "no"}


def event(obj: Union[dict, str]) -> bytes:
    """One ``data:`` event for a chunk object (or pre-encoded JSON text)."""
    data = obj.encode("utf-8") if isinstance(obj, str) else fastjson.dumps(obj)
    return b"data: " + data + b"\n\n"


def error_event(err: APIError) -> bytes:
    """The event a broken stream ends with: ``data: {"error": {...}}``."""
    return event(err.to_dict())


class SSEDecoder:
    """Feed bytes as they arrive, get the ``data`` payloads of complete events (``[DONE]`` included,
    as the string). Comments and other fields are skipped; multi-line data is joined with ``\\n``."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, data: bytes) -> Iterator[str]:
        self._buf += data
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                return
            line, self._buf = self._buf[:i].rstrip(b"\r"), self._buf[i + 1:]
            if not line:
                if self._data:
                    out, self._data = "\n".join(self._data), []
                    yield out
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                self._data.append(value[1:].decode("utf-8") if value.startswith(b" ") else value.decode("utf-8"))


def parse_event(payload: str) -> Union[dict, str]:
    """A decoded payload as a chunk dict, or :data:`DONE`; raises ValueError for anything else."""
    if payload == DONE:
        return DONE
    obj = fastjson.loads(payload)
    if not isinstance(obj, dict):
        raise ValueError("an SSE chunk is a JSON object")
    return obj

"""The wrappers' readers (``RegistryReader``, ``StakeReader``, ``EscrowReader``, ``ReputationReader``)
with coroutine methods.

A reader parses what a synchronous ``call(address, method, stack)`` returns. :class:`AsyncReader`
runs the reader's own method with a ``call`` that answers from the get-method results fetched so
far and stops at the first one it lacks; that one is awaited on the provider and the method is run
again. Parsing therefore lives only in the wrappers, and a reader method that reads several getters
costs one await per getter.
"""
from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable


class _Need(Exception):
    def __init__(self, address, method, stack):
        self.request = (address, method, stack)


class AsyncReader:
    """``AsyncReader(RegistryReader, address, get_method)``: every public method of the reader
    becomes a coroutine; ``get_method(address, method, stack)`` is an async get-method."""

    def __init__(self, reader_cls: type, address, get_method: Callable[..., Awaitable[list]]):
        self._cls, self.address, self._get = reader_cls, address, get_method

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._cls, name, None)
        if name.startswith("_") or not callable(attr):
            raise AttributeError(f"{self._cls.__name__} has no reader method {name!r}")

        @functools.wraps(attr)
        async def method(*args, **kwargs):
            answers: list = []
            while True:
                it = iter(answers)

                def call(address, meth, stack):
                    try:
                        return next(it)
                    except StopIteration:
                        raise _Need(address, meth, stack) from None

                try:
                    return getattr(self._cls(call, self.address), name)(*args, **kwargs)
                except _Need as need:
                    answers.append(await self._get(*need.request))

        return method

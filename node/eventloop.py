"""How the services run: uvloop where it is installed (asyncio's own loop otherwise), and a garbage
collector tuned for a long-lived server.

uvloop runs the loop, its sockets and its TLS in C; on a loopback hop that is most of what a service
spends per request besides its own work. ``COCOON_EVENT_LOOP=asyncio`` keeps the standard loop (to
compare, or to debug with asyncio's debug mode).

The collector: a service imports a large, permanent heap (aiohttp, cryptography, pytoniq) and then
allocates thousands of short-lived objects per request; with CPython's default thresholds the
collector walks that heap again and again and took a sixth of a gateway's CPU. :func:`tune_gc`
freezes what start-up made (never scanned again) and collects the young generation every 50,000
allocations instead of 700. Reference counting still frees almost everything at once; only
cyclic garbage waits a little longer.
"""
from __future__ import annotations

import asyncio
import gc
import os

GC_THRESHOLDS = (50_000, 20, 20)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh event loop of the kind the services run on."""
    if os.environ.get("COCOON_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(coro):
    """asyncio.run on the services' loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)


def tune_gc() -> None:
    """Freeze the heap built so far and raise the collection thresholds (call once, before serving)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

"""Keep the garbage collector's full passes short in a running service.

CPython's cycle collector stops the whole process while it walks a
generation. The oldest generation holds everything a service built at
startup (modules, classes, FastAPI's routes, the NATS client, models'
wrappers: 60-100 thousand objects), so each full pass walked all of it, and
under load one pass stopped the gateway's event loop for 130-260 ms: every
call's audio waited at once, and the slowest answers of the capacity
benchmark were exactly those (docs/BENCHMARKS.md section 7, "Garbage
collector pauses").

``freeze_after_startup(app)`` makes the service's startup end with one full
collection (startup's garbage goes now, not mid-call) and ``gc.freeze()``:
what survived startup moves to a permanent generation that later passes do
not walk. The collector still runs as before for everything made afterwards
(calls come and go; their cycles are collected), and reference counting
still frees a frozen object that nothing refers to any more. Only the
process entry points call it: an app built inside a test process leaves that
process's collector alone.
"""

from __future__ import annotations

import contextlib
import gc
import logging

log = logging.getLogger("parley.heap")


def settle() -> int:
    """Collect startup's garbage, then freeze what survived. Returns how many
    objects are now frozen (never walked by the collector again)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def freeze_after_startup(app) -> None:
    """Run ``settle`` once ``app``'s lifespan startup is done (models
    loaded, NATS connected), before the first call."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a):
        async with inner(a) as state:
            frozen = settle()
            log.info("startup objects frozen", extra={"objects": frozen})
            yield state

    app.router.lifespan_context = lifespan

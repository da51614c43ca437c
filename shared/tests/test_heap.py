"""parley.heap: startup ends with its garbage collected and its survivors frozen;
the collector still collects what the running service makes afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

import pytest
from fastapi import FastAPI

from parley import heap


class Node:
    def __init__(self):
        self.other = self  # a cycle: only the collector frees it


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process's collector as it was


def test_startup_survivors_are_frozen_and_startup_garbage_is_not(unfrozen):
    seen: list[str] = []
    kept: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        kept["model"] = Node()  # built at startup, lives as long as the service
        dropped = Node()
        kept["dropped"] = weakref.ref(dropped)
        del dropped  # startup's garbage (a cycle)
        seen.append("started")
        yield {"ready": True}
        seen.append("stopped")

    app = FastAPI(lifespan=lifespan)
    heap.freeze_after_startup(app)

    async def run() -> None:
        async with app.router.lifespan_context(app) as state:
            assert state == {"ready": True}  # the service's own lifespan state passes through
            assert gc.get_freeze_count() > 0
            assert kept["dropped"]() is None  # collected before the freeze, not frozen for ever
            frozen = gc.get_objects(generation=2)
            assert not any(o is kept["model"] for o in frozen)  # frozen: no longer in any generation the collector walks

            later = Node()  # made while serving: still collected
            ref = weakref.ref(later)
            del later
            gc.collect()
            assert ref() is None
            seen.append("served")

    asyncio.run(run())
    assert seen == ["started", "served", "stopped"]


def test_settle_reports_what_it_froze(unfrozen):
    keep = [Node() for _ in range(100)]
    frozen = heap.settle()
    assert frozen == gc.get_freeze_count() >= len(keep)

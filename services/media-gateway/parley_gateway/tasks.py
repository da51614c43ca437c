"""Background tasks the gateway owns: each kept by reference, each failure loud.

asyncio holds only weak references to tasks, and an exception in a task nobody
awaits is reported (if ever) when the task is garbage-collected. So every task
a call or a transport starts goes through a ``TaskSet``: the set holds the task
until it ends, and a task that ends with an exception is logged with its name,
counted in the gateway's stats (``task_errors``) and handed to ``on_error``,
where a transport ends its call with a reason. Cancelling is not an error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Coroutine

log = logging.getLogger("parley.gateway")


class TaskSet:
    def __init__(
        self,
        stats: dict,
        on_error: Callable[[str, BaseException], None] | None = None,
        context: Callable[[], dict] | None = None,
    ):
        self.stats = stats
        self.on_error = on_error
        self.context = context or dict
        self.tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.stats["task_errors"] = self.stats.get("task_errors", 0) + 1
        log.error("background task %s failed", task.get_name(), exc_info=exc, extra=self.context())
        if self.on_error is not None:
            try:
                self.on_error(task.get_name(), exc)
            except Exception:  # noqa: BLE001 - the error path itself must not raise into asyncio
                log.exception("error handler of task %s failed", task.get_name(), extra=self.context())

    def cancel(self) -> None:
        """Cancel every task but the one running this."""
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()

    def __len__(self) -> int:
        return len(self.tasks)

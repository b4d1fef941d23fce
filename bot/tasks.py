"""Background tasks beside the caller: a failure is logged, never lost silently; all can be awaited or cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._tasks: set[asyncio.Task[object]] = set()

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        async def guarded() -> object:
            try:
                return await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("%s %s failed", self._what, name)
                return None

        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    async def wait_idle(self) -> None:
        """Until none runs, including tasks spawned by the ones being awaited."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

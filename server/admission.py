"""Bounded concurrency for CPU- and memory-heavy steps outside the inference queue (decoding).

Why not a plain semaphore: a semaphore queues without bound, so a burst of uploads would each
hold its spooled body while waiting and then its decoded audio, and the server would run out of
memory before refusing anybody. `Slots` lets `limit` holders run and `waiting` more wait; past
that it refuses at once with `Busy` (503 + Retry-After), like the inference scheduler does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server import metrics
from server.errors import Busy


class Slots:
    def __init__(self, name: str, limit: int, waiting: int, retry_after: int = 2) -> None:
        self.name = name
        self.limit = limit
        self.waiting = waiting
        self.retry_after = retry_after
        self._semaphore = asyncio.Semaphore(limit)
        self.active = 0
        self.queued = 0

    @asynccontextmanager
    async def take(self) -> AsyncIterator[None]:
        """Hold one slot for the block; raises Busy when every slot and waiting place is taken."""
        if self.active + self.queued >= self.limit + self.waiting:
            metrics.REJECTED.labels(self.name).inc()
            raise Busy(
                f"Server busy: {self.active} {self.name} jobs are running and {self.queued} are "
                "waiting; retry later",
                self.retry_after,
            )
        self.queued += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.queued -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self._semaphore.release()

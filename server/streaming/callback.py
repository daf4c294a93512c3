"""Deepgram's `callback` on a stream: every message the stream sends is also POSTed (or PUT)
to the callback URL, one request per message, in order.

The socket still gets every message, so an SDK client sees nothing different. Delivery runs on
its own task behind a bounded queue: a slow or dead callback server can delay nothing on the
socket, and costs at most `MAX_PENDING` messages of memory (beyond that the oldest undelivered
ones are dropped, and the drop is logged). Every request goes through `server.outbound` (each
hop checked and pinned, as REST callbacks are). Deepgram's `ws(s)://` callbacks (a second
WebSocket) are not offered: such a URL is refused at the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

import httpx

from server.outbound import Outbound, Refused, describe

log = logging.getLogger(__name__)

MAX_PENDING = 2000
ATTEMPTS = 3
RETRY_DELAY_S = 1.0
TIMEOUT_S = 10.0


class CallbackSink:
    def __init__(self, outbound: Outbound, url: str, method: str, request_id: str) -> None:
        self.outbound = outbound
        self.url = url
        self.method = method
        self.request_id = request_id
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self.dropped = 0
        self.delivered = 0
        self._task = asyncio.create_task(self._run())

    def put(self, message: dict[str, Any]) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(message)
        self._wake.set()

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_S, trust_env=False) as client:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._deliver(client, self._pending.popleft())

    async def _deliver(self, client: httpx.AsyncClient, message: dict[str, Any]) -> None:
        for attempt in range(ATTEMPTS):
            headers = {"content-type": "application/json", "dg-request-id": self.request_id}
            try:
                async with self.outbound.stream(
                    client, self.method, self.url, content=json.dumps(message), headers=headers
                ) as reply:
                    if reply.is_success:
                        self.delivered += 1
                        return
                    error = f"the callback answered {reply.status_code}"
            except Refused as exc:
                error = str(exc)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            log.warning(
                "stream callback failed",
                extra={
                    "request_id": self.request_id,
                    "callback": describe(self.url),
                    "error": error,
                    "attempt": attempt,
                },
            )
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(RETRY_DELAY_S)

    async def close(self, timeout: float) -> None:
        """Deliver what is queued (within `timeout`), then stop."""
        self._closing = True
        self._wake.set()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        if not self._task.done():
            self._task.cancel()
        if self.dropped or self._pending:
            log.warning(
                "stream callback lost messages",
                extra={
                    "request_id": self.request_id,
                    "dropped": self.dropped + len(self._pending),
                },
            )

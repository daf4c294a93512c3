"""Deadlines on request bodies: a stalled or trickling upload is answered 408, not held open.

Each piece of a body must arrive within `read_timeout_s`; once `grace_s` have passed, the body
must also have averaged `min_bytes_per_s` (0 turns that check off), so a client trickling
1 KB/s cannot pin a connection, a spool file and a request slot for hours. The deadlines end
with the body: once it is complete, `receive` is the route's to wait on (for the disconnect it
watches during transcription) without limit.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import RequestTimeout


class BodyDeadline:
    def __init__(
        self, app: ASGIApp, *, read_timeout_s: float, min_bytes_per_s: int, grace_s: float
    ) -> None:
        self.app = app
        self.read_timeout_s = read_timeout_s
        self.min_bytes_per_s = min_bytes_per_s
        self.grace_s = grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        received = 0
        complete = False

        async def guarded() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except asyncio.TimeoutError:
                raise RequestTimeout(
                    f"Request timeout: no body data for {self.read_timeout_s:g} s"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
                return message
            received += len(message.get("body", b""))
            elapsed = time.monotonic() - started
            slow = received < self.min_bytes_per_s * elapsed
            if self.min_bytes_per_s and elapsed > self.grace_s and slow:
                raise RequestTimeout(
                    f"Request timeout: the upload is slower than {self.min_bytes_per_s} "
                    "bytes per second"
                )
            return message

        await self.app(scope, guarded, send)

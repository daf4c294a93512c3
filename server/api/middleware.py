"""One ASGI middleware for what every HTTP exchange needs: a request id, metrics and a log line.

Pure ASGI rather than BaseHTTPMiddleware, so streamed request bodies and WebSockets pass
through untouched.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import metrics
from server.api.errors import new_request_id

log = logging.getLogger("openlisten.access")


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"dg-request-id" for k, _ in headers):
                    headers.append((b"dg-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            elapsed = time.monotonic() - started
            metrics.REQUESTS.labels(path, str(status)).inc()
            if path.startswith("/v1/listen"):
                metrics.REQUEST_SECONDS.labels(path).observe(elapsed)
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "route": path,
                    "method": scope.get("method"),
                    "status": status,
                    "seconds": round(elapsed, 4),
                },
            )

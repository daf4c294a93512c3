"""One ASGI middleware for what every exchange needs: a request id, metrics and a log line.

Pure ASGI rather than BaseHTTPMiddleware, so streamed request bodies and WebSockets pass
through untouched. It also counts requests in flight, which graceful shutdown waits on.
The access line carries route, status and timings plus whatever the service annotated
(model, audio seconds); never headers, query strings (they may hold a key) or bodies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import logs, metrics
from server.api.auth import parse_authorization, parse_subprotocols
from server.api.errors import new_request_id
from server.engine import owner

log = logging.getLogger("openlisten.access")


class InFlight:
    """How many HTTP requests are being served now; shutdown waits for it to reach zero."""

    count = 0


def _route(scope: Scope) -> str:
    """The route template (`/v1/listen`), never the raw path, so label values stay bounded.

    Requests refused before routing (auth, draining) have no `route` in their scope yet; they
    are matched against the app's routes here so a 401 or 503 is counted under its route.
    """
    path = getattr(scope.get("route"), "path", None)
    if path:
        return path
    try:
        return _match(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope)
    except Exception:  # a label must never fail the request it describes
        return "unmatched"


def _match(routes: Iterable[Any], scope: Scope) -> str:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router wrapper
        if included is not None:
            path = _match(included.routes, scope)
            if path != "unmatched":
                return path
            continue
        path = getattr(route, "path", None)
        if path and route.matches(scope)[0] != Match.NONE:
            return path
    return "unmatched"


def _presented_key(scope: Scope) -> str | None:
    """The API key the client sent (header, else browser subprotocol); checked elsewhere."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return parse_authorization(value.decode("latin-1"))
    return parse_subprotocols(list(scope.get("subprotocols") or []))[1]


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        context = logs.open_context(request_id=request_id)
        # The tenant, for the engine's packing rule; every task of this request inherits it.
        owner.CURRENT.set(owner.of_key(_presented_key(scope)))
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, context)
            return
        started = time.monotonic()
        status = 500
        InFlight.count += 1

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
            InFlight.count -= 1
            path = _route(scope)
            elapsed = time.monotonic() - started
            metrics.REQUESTS.labels(path, str(status)).inc()
            if path.startswith(("/v1/listen", "/v1/audio/")):
                metrics.REQUEST_SECONDS.labels(path).observe(elapsed)
            level = logging.DEBUG if path in _QUIET else logging.INFO
            log.log(
                level,
                "request",
                extra={
                    **context,
                    "route": path,
                    "method": scope.get("method"),
                    "status": status,
                    "seconds": round(elapsed, 4),
                },
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, context: dict) -> None:
        """Count the handshake (101 accepted, else the refusal) and log the session's end."""
        started = time.monotonic()
        status = 500
        close_code: int | None = None

        async def send_watched(message: Message) -> None:
            nonlocal status, close_code
            kind = message["type"]
            if kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close":
                close_code = message.get("code", 1000)
                if status != 101:
                    status = 403
            elif kind == "websocket.http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        finally:
            path = _route(scope)
            metrics.REQUESTS.labels(path, str(status)).inc()
            log.info(
                "websocket",
                extra={
                    **context,
                    "route": path,
                    "status": status,
                    "close_code": close_code,
                    "seconds": round(time.monotonic() - started, 4),
                },
            )


# Probes and scrapes arrive every few seconds; their lines would drown the useful ones.
_QUIET = {"/healthz", "/readyz", "/metrics"}

"""The FastAPI application: routes, error rendering, and the engine's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketState

from server.api import flux, health, openai, rest, web, ws
from server.api.bodyguard import BodyDeadline
from server.api.errors import ApiError, render_error, routing_error
from server.api.middleware import RequestContext
from server.callbacks.runner import CallbackJobs
from server.engine import Engine
from server.errors import InvalidRequest, ServiceError
from server.outbound import AddressPolicy, Outbound
from server.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = engine or Engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            try:
                await engine.start()
                log.info("ready", extra={"models": sorted(engine.pool.served)})
            except Exception as exc:  # keep serving /healthz and say why /readyz fails
                app.state.load_error = str(exc)
                log.exception("model loading failed")

        await app.state.callbacks.start()
        loader = asyncio.create_task(load())
        try:
            yield
        finally:
            loader.cancel()
            await drain(app)
            engine.stop()

    app = FastAPI(
        title="openlisten", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.outbound = Outbound(
        AddressPolicy.of(settings.outbound_allow_private, settings.outbound_allow_networks)
    )
    app.state.callbacks = CallbackJobs(settings, engine, app.state.outbound)
    app.state.draining = False
    app.state.streams = set()  # open WebSocket sessions; shutdown flushes each (server/runner.py)
    app.state.load_error = None

    @app.exception_handler(ServiceError)
    @app.exception_handler(ApiError)
    async def service_error(conn: HTTPConnection, exc: Exception) -> JSONResponse | None:
        """The one renderer of refusals: a JSON reply, or a refused WebSocket handshake."""
        return await _render(conn, exc)  # type: ignore[arg-type]

    @app.exception_handler(HTTPException)
    async def routing(conn: HTTPConnection, exc: HTTPException) -> JSONResponse | None:
        """404 and 405 from the router, shaped like every other error (`Allow` kept)."""
        response = await _render(conn, routing_error(exc.status_code, str(exc.detail)))
        if response is not None and exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(conn: HTTPConnection, exc: RequestValidationError) -> JSONResponse:
        return await _render(conn, InvalidRequest("Bad Request: malformed request"))  # type: ignore[return-value]

    @app.exception_handler(Exception)
    async def unexpected(conn: HTTPConnection, exc: Exception) -> JSONResponse | None:
        log.exception("unhandled error", extra={"request_id": _request_id(conn)})
        return await _render(conn, ApiError(500, "INTERNAL_SERVER_ERROR", "Internal server error"))

    app.include_router(health.router)
    app.include_router(rest.router)
    app.include_router(openai.router)
    app.include_router(web.router)
    app.mount("/web", web.static_files(), name="web")
    app.include_router(ws.router)
    app.include_router(flux.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["dg-request-id", "dg-model-name", "dg-model-uuid", "dg-error"],
        )
    app.add_middleware(
        BodyDeadline,
        read_timeout_s=settings.body_read_timeout_s,
        min_bytes_per_s=settings.upload_min_bytes_per_s,
        grace_s=settings.upload_grace_s,
    )
    app.add_middleware(RequestContext)
    return app


def _request_id(conn: HTTPConnection) -> str:
    return conn.scope.get("state", {}).get("request_id") or ""


async def _render(conn: HTTPConnection, exc: ServiceError | ApiError) -> JSONResponse | None:
    """HTTP and a WebSocket still in its handshake get the error response; an accepted socket,
    whose session failed, is closed with 1011 instead (nothing else can be sent on it)."""
    if isinstance(conn, WebSocket) and conn.application_state != WebSocketState.CONNECTING:
        if conn.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await conn.close(1011)
        return None
    return render_error(conn.url.path, exc, _request_id(conn))


async def drain(app: FastAPI) -> None:
    """Stop taking work; callback deliveries in flight get what is left of the deadline, and
    every callback job not yet delivered stays on disk for the next start."""
    app.state.draining = True
    # After a signal the deadline started then (server/runner.py); otherwise it starts now.
    deadline = getattr(app.state, "drain_deadline", None)
    timeout = app.state.settings.shutdown_deadline_s
    if deadline is not None:
        timeout = max(0.0, deadline - time.monotonic())
    await app.state.callbacks.stop(timeout)

"""The FastAPI application: routes, error rendering, and the engine's lifetime."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from server.api import health, openai, rest, web, ws
from server.api.auth import require_key
from server.api.errors import OPENAI_PREFIX, ApiError, render_error
from server.api.middleware import RequestContext
from server.engine import Engine
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
    app.state.background = set()
    app.state.draining = False
    app.state.streams = set()  # open WebSocket sessions; shutdown flushes each (server/runner.py)
    app.state.load_error = None

    @app.middleware("http")
    async def gate(request: Request, call_next):  # type: ignore[no-untyped-def]
        """Auth, readiness and draining for the transcription routes, before any body is read."""
        if request.url.path.startswith(("/v1/listen", OPENAI_PREFIX)):
            try:
                require_key(request.headers, settings.key_digests)
                if app.state.draining:
                    raise ApiError(503, "SERVER_DRAINING", "Server is shutting down", retry_after=5)
                if not engine.ready:
                    raise ApiError(503, "MODEL_LOADING", "Models are still loading", retry_after=5)
            except ApiError as exc:
                return render_error(request.url.path, exc, request.state.request_id)
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return render_error(request.url.path, exc, request.state.request_id)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = ApiError(400, "Bad Request", str(exc))
        return render_error(request.url.path, error, request.state.request_id)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": request.state.request_id})
        error = ApiError(500, "INTERNAL_SERVER_ERROR", "Internal server error")
        return render_error(request.url.path, error, request.state.request_id)

    app.include_router(health.router)
    app.include_router(rest.router)
    app.include_router(openai.router)
    app.include_router(web.router)
    app.mount("/web", web.static_files(), name="web")
    app.include_router(ws.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["dg-request-id", "dg-model-name", "dg-model-uuid", "dg-error"],
        )
    app.add_middleware(RequestContext)
    return app


async def drain(app: FastAPI) -> None:
    """Stop taking work and let in-flight background work (callbacks) finish, within a deadline."""
    app.state.draining = True
    # After a signal the deadline started then (server/runner.py); otherwise it starts now.
    deadline = getattr(app.state, "drain_deadline", None)
    timeout = app.state.settings.shutdown_deadline_s
    if deadline is not None:
        timeout = max(0.0, deadline - time.monotonic())
    pending = list(app.state.background)
    if pending:
        await asyncio.wait(pending, timeout=timeout)

"""Run the app under uvicorn, with a graceful drain on SIGTERM/SIGINT.

Why not plain `uvicorn.run`: on a signal uvicorn closes its listener and at once closes every
open WebSocket with 1012, so live streams would lose their last words; it also re-raises the
signal after shutdown, so the process dies by SIGTERM instead of exiting 0. Here the first
signal instead:

1. sets `app.state.draining` (readyz answers 503, new REST requests and new streams get 503);
2. flushes every open stream through its `shutdown()` (final Results, Metadata, close 1000);
3. waits for in-flight REST requests to finish;
4. only then lets uvicorn stop listening and run the lifespan shutdown (background callbacks,
   engine stop), all within `shutdown_deadline_s` from the signal.

A second signal skips what is left of the drain.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import sys
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from server import logs, memory
from server.api.middleware import InFlight
from server.app import create_app
from server.connections import with_header_timeout
from server.engine.catalog import ModelUnavailable
from server.settings import Settings

log = logging.getLogger("openlisten.shutdown")


async def flush_streams(app: FastAPI, deadline: float) -> int:
    """Ask every open stream to finish cleanly; returns how many were open."""
    streams = list(getattr(app.state, "streams", ()))
    if not streams:
        return 0
    tasks = [asyncio.create_task(stream.shutdown()) for stream in streams]
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning("stream shutdown failed", extra={"error": repr(task.exception())})
    if pending:
        log.warning("streams still open at the deadline", extra={"streams": len(pending)})
    return len(streams)


async def wait_in_flight(deadline: float) -> None:
    """Wait for HTTP requests being served to finish, or the deadline."""
    while InFlight.count > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


class GracefulServer(uvicorn.Server):
    """uvicorn.Server that drains the app before it stops accepting connections."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Deliberately not recorded in `_captured_signals`: uvicorn would re-raise it after
        # shutdown, and a drained server should exit 0.
        if self._loop is None or self._drain is not None or self.should_exit:
            self.should_exit = True
            if sig == signal.SIGINT and self._drain is None:
                self.force_exit = True
            elif self._drain is not None:
                log.warning("second signal: stopping without finishing the drain")
                self.config.timeout_graceful_shutdown = 1
            return
        self.app.state.draining = True  # a plain attribute write: safe in a signal handler
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        settings: Settings = self.app.state.settings
        deadline = time.monotonic() + settings.shutdown_deadline_s
        self.app.state.drain_deadline = deadline
        log.info(
            "draining",
            extra={
                "streams": len(getattr(self.app.state, "streams", ())),
                "in_flight": InFlight.count,
                "deadline_s": settings.shutdown_deadline_s,
            },
        )
        try:
            await flush_streams(self.app, deadline)
            await wait_in_flight(deadline)
        except Exception:  # the drain must never keep the process from exiting
            log.exception("drain failed")
        finally:
            remaining = deadline - time.monotonic()
            # uvicorn's own wait for open connections gets only what is left of the deadline.
            self.config.timeout_graceful_shutdown = max(0.1, remaining)  # type: ignore[assignment]
            self.should_exit = True


def plain_keys(settings: Settings) -> list[str]:
    """Configured keys in clear text (not `sha256:` entries), to mask them in logs."""
    keys = [k for k in settings.api_key if not k.startswith("sha256:")]
    if settings.api_keys_file and settings.api_keys_file.is_file():
        keys += [
            line.strip()
            for line in settings.api_keys_file.read_text().splitlines()
            if line.strip() and not line.strip().startswith(("#", "sha256:"))
        ]
    return keys


def serve(settings: Settings) -> int:
    """Serve until a signal, drain, and return the process exit status (0 after a drain)."""
    logs.configure(settings.log_level, settings.log_format, secrets=plain_keys(settings))
    memory.limit_arenas(settings.malloc_arenas)  # before any worker thread starts
    try:
        app = create_app(settings)
    except ModelUnavailable as exc:  # a model directory or alias the operator must fix first
        print(f"openlisten: error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_deadline_s),
        http=with_header_timeout(settings.header_timeout_s),
        access_log=False,
        ws_max_size=16 * 1024 * 1024,
    )
    GracefulServer(config, app).run()
    return 0

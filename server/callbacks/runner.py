"""Runs callback jobs: transcribe each stored job, then deliver its body with retries.

One loop wakes when a job is added or falls due. Transcription goes through the same service as
a synchronous request (`callback_workers` at a time); a job the engine cannot take yet (busy,
still loading) waits and is tried again, without counting as a failed attempt. A job whose audio
cannot be transcribed gets a Deepgram-shaped error body, delivered like a transcript, so the
client always hears back. Delivery retries back off exponentially from `callback_retry_delay_s`
up to `callback_retry_max_delay_s`; after `callback_retries` retries the job becomes a dead
letter (an error log line and `openlisten_callback_dead_letters_total`).

Nothing is lost on a crash or a restart: jobs live in `store.JobStore` until delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, BinaryIO

import httpx

from server import metrics
from server.api.errors import ApiError, error_body, to_api_error
from server.callbacks.store import Job, JobStore, StateDirBusy
from server.deepgram.params import param_limits, parse
from server.engine import Engine
from server.errors import Busy, InvalidParameter, ServiceError, Unavailable
from server.outbound import Outbound, Refused, describe
from server.service import transcribe_source
from server.settings import Settings

log = logging.getLogger(__name__)
BATCH = 32


class CallbackJobs:
    def __init__(self, settings: Settings, engine: Engine, outbound: Outbound) -> None:
        self.settings = settings
        self.engine = engine
        self.outbound = outbound
        self.store: JobStore | None = None
        self.unavailable: str | None = None
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._transcribing = asyncio.Semaphore(settings.callback_workers)

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self.store = await asyncio.to_thread(JobStore, self.settings.state_dir)
        except (StateDirBusy, OSError) as exc:
            self.unavailable = str(exc)
            log.error("callbacks are unavailable", extra={"error": str(exc)})
            return
        orphans = await asyncio.to_thread(self.store.remove_orphans)
        await asyncio.to_thread(self.store.due_now, time.time())
        counts = await asyncio.to_thread(self.store.counts)
        self._gauge(counts)
        if orphans or counts:
            log.info(
                "callback jobs recovered",
                extra={"pending": counts, "orphaned_audio_removed": orphans},
            )
        self._loop_task = asyncio.create_task(self._loop())

    async def stop(self, timeout: float) -> None:
        """Stop working: deliveries in flight get `timeout`; every job not delivered stays on
        disk and resumes at the next start (said in the log)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        running = list(self._running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=max(0.0, timeout))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.store is not None:
            pending = await asyncio.to_thread(self.store.pending)
            if pending:
                log.warning(
                    "callback jobs still pending at shutdown; they resume at the next start",
                    extra={"pending": pending, "state_dir": str(self.settings.state_dir)},
                )
            await asyncio.to_thread(self.store.close)
            self.store = None

    # --- intake --------------------------------------------------------------------------------
    async def check_callback(self, url: str) -> None:
        """Refuse, before accepting the job, a callback this server would never deliver."""
        try:
            await self.outbound.check(url)
        except Refused as exc:
            log.info("callback refused", extra={"url": describe(url), "reason": str(exc)})
            raise _bad_callback() from exc

    async def submit(
        self,
        job_id: str,
        source: BinaryIO,
        sha256: str,
        query: list[tuple[str, str]],
        callback: str,
        method: str,
    ) -> None:
        """Store the job durably; returns only once a crash can no longer lose it."""
        store = self.store
        if store is None:
            raise Unavailable(
                "Callbacks are unavailable on this server: " + (self.unavailable or "stopping"),
                retry_after=60,
            )
        if await asyncio.to_thread(store.pending) >= self.settings.callback_max_pending:
            metrics.REJECTED.labels("callbacks").inc()
            raise Busy(
                f"Server busy: {self.settings.callback_max_pending} callback jobs are pending",
                retry_after=30,
            )
        await asyncio.to_thread(
            store.add,
            job_id,
            source,
            callback=callback,
            method=method,
            query=query,
            sha256=sha256,
        )
        metrics.CALLBACK_JOBS.labels("transcribe").inc()
        self._wake.set()

    # --- the loop ------------------------------------------------------------------------------
    async def _loop(self) -> None:
        assert self.store is not None
        while True:
            self._wake.clear()
            jobs = await asyncio.to_thread(self.store.due, time.time(), BATCH)
            for job in jobs:
                if job.id not in self._running:
                    task = asyncio.create_task(self._run(job))
                    self._running[job.id] = task
                    task.add_done_callback(lambda _t, key=job.id: self._running.pop(key, None))
            upcoming = await asyncio.to_thread(self.store.next_due)
            wait = 1.0 if upcoming is None else min(1.0, max(0.05, upcoming - time.time()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _run(self, job: Job) -> None:
        assert self.store is not None
        # A lease: the loop does not pick the job again while it runs. A crash leaves the lease
        # behind, which `start` clears.
        lease = 3600 if job.state == "transcribe" else self.settings.callback_timeout_s + 60
        await asyncio.to_thread(self.store.postpone, job.id, time.time() + lease)
        try:
            if job.state == "transcribe":
                await self._transcribe(job)
            else:
                await self._deliver(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # a job must never kill the loop; it is retried at its next due time
            log.exception("callback job failed", extra={"request_id": job.id})
            assert self.store is not None
            await asyncio.to_thread(self.store.postpone, job.id, time.time() + 5)

    async def _transcribe(self, job: Job) -> None:
        store = self.store
        assert store is not None
        if not self.engine.ready:
            await asyncio.to_thread(store.postpone, job.id, time.time() + 1)
            return
        async with self._transcribing:
            try:
                source = store.open_audio(job.id)
            except OSError:
                body = error_body(
                    ApiError(500, "INTERNAL_SERVER_ERROR", "The job's audio was lost"), job.id
                )
            else:
                with source:
                    try:
                        params = parse(job.query, param_limits(self.settings))
                        body = await transcribe_source(
                            self.engine, source, job.sha256, params, job.id
                        )
                    except Unavailable as exc:  # busy or loading: not the job's fault, wait
                        await asyncio.to_thread(
                            store.postpone, job.id, time.time() + exc.retry_after
                        )
                        return
                    except ServiceError as exc:
                        body = error_body(to_api_error(exc), job.id)
                    except Exception:
                        log.exception("callback transcription failed", extra={"request_id": job.id})
                        body = error_body(
                            ApiError(500, "INTERNAL_SERVER_ERROR", "Internal server error"), job.id
                        )
        await asyncio.to_thread(store.set_body, job.id, body)
        metrics.CALLBACK_JOBS.labels("transcribe").dec()
        metrics.CALLBACK_JOBS.labels("deliver").inc()
        self._wake.set()

    async def _deliver(self, job: Job) -> None:
        store = self.store
        assert store is not None and job.body is not None
        error = await self._post(job)
        if error is None:
            await asyncio.to_thread(store.delete, job.id)
            metrics.CALLBACK_JOBS.labels("deliver").dec()
            metrics.CALLBACK_DELIVERIES.labels("delivered").inc()
            log.info("callback delivered", extra={"request_id": job.id, "attempt": job.attempts})
            return
        attempts = job.attempts + 1
        metrics.CALLBACK_DELIVERIES.labels("failed").inc()
        if attempts > self.settings.callback_retries:
            await asyncio.to_thread(store.bury, job.id, attempts, error)
            metrics.CALLBACK_JOBS.labels("deliver").dec()
            metrics.CALLBACK_DEAD_LETTERS.inc()
            log.error(
                "callback dead letter: delivery gave up",
                extra={
                    "request_id": job.id,
                    "callback": describe(job.callback),
                    "attempts": attempts,
                    "error": error,
                },
            )
            return
        delay = min(
            self.settings.callback_retry_max_delay_s,
            self.settings.callback_retry_delay_s * 2 ** (attempts - 1),
        )
        log.warning(
            "callback failed; will retry",
            extra={"request_id": job.id, "attempt": attempts, "error": error, "retry_in_s": delay},
        )
        await asyncio.to_thread(
            store.postpone, job.id, time.time() + delay, attempts=attempts, error=error
        )

    async def _post(self, job: Job) -> str | None:
        """One delivery; None on a 2xx, else why it failed (for logs; no URL path or query)."""
        timeout = self.settings.callback_timeout_s
        limits = httpx.Limits(max_keepalive_connections=0)
        headers = {"content-type": "application/json", "dg-request-id": job.id}
        try:
            async with (
                httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client,
                self.outbound.stream(
                    client, job.method, job.callback, content=job.body.encode(), headers=headers
                ) as reply,
            ):
                if reply.is_success:
                    return None
                return f"the callback answered {reply.status_code}"
        except Refused as exc:
            return str(exc)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        except Exception as exc:
            # Anything else is a failed attempt too: counted, retried with backoff and, in the
            # end, a dead letter. Left to `_run`'s catch-all it would be retried every 5 s
            # uncounted, forever, as a URL httpx refuses only once the request is built was.
            log.exception("callback delivery failed unexpectedly", extra={"request_id": job.id})
            return f"unexpected {type(exc).__name__}"

    def _gauge(self, counts: dict[str, Any]) -> None:
        for state in ("transcribe", "deliver", "dead"):
            metrics.CALLBACK_JOBS.labels(state).set(counts.get(state, 0))


def _bad_callback() -> ServiceError:
    return InvalidParameter(
        "Invalid value for 'callback': this server does not deliver to that address"
    )

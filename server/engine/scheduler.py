"""The inference scheduler: one queue for every client, batched per model and decode options.

Work items are ≤30 s windows (REST chunks cut by VAD, streaming interim and final decodes).
Worker threads take the most urgent item, wait up to a short batching window for compatible
items (same model and `DecodeOptions.batch_key`), and decode them in one CTranslate2 call.
Priorities put streaming work ahead of bulk REST windows; within a priority, earliest deadline
first. Admission control refuses new work when the queue would make it wait too long, so an
overloaded server answers 503 at once instead of letting latency drift; admitted work is never
dropped, and work whose client went away (a cancelled future) is skipped.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from server import metrics
from server.engine.whisper import DecodeOptions, Segment


class Priority(IntEnum):
    STREAM_FINAL = 0
    STREAM_INTERIM = 1
    BULK = 2


class Overloaded(RuntimeError):
    """New work refused; `retry_after` is a whole number of seconds for the Retry-After header."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(order=True)
class _Item:
    sort_key: tuple[int, float, int]
    model: str = field(compare=False)
    window: np.ndarray = field(compare=False)
    options: DecodeOptions = field(compare=False)
    future: Future = field(compare=False)
    enqueued: float = field(compare=False)

    @property
    def batch_key(self) -> tuple:
        return (self.model, self.options.batch_key)


DecodeFn = Callable[[str, list[np.ndarray], DecodeOptions], list[list[Segment]]]


@dataclass
class SchedulerConfig:
    batch_size: int = 8
    batch_window_s: float = 0.015
    workers: int = 1
    queue_max: int = 256
    queue_max_wait_s: float = 30.0
    initial_window_cost_s: float = 0.5


class Scheduler:
    def __init__(self, decode: DecodeFn, config: SchedulerConfig) -> None:
        self._decode = decode
        self._config = config
        self._queue: list[_Item] = []  # kept sorted; small (≤ queue_max)
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._running = False
        self._threads: list[threading.Thread] = []
        self._busy = 0
        # EWMA of wall seconds per window, measured per batch; drives admission control.
        self._window_cost = config.initial_window_cost_s

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        for index in range(self._config.workers):
            thread = threading.Thread(target=self._work, name=f"infer-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    # --- admission ---------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def window_cost_s(self) -> float:
        return self._window_cost

    def expected_wait_s(self, extra_windows: int = 0) -> float:
        """How long new work would wait for its last window, from the measured window cost."""
        ahead = len(self._queue) + self._busy * self._config.batch_size / 2 + extra_windows
        return ahead * self._window_cost / self._config.workers

    def check_admission(self, windows: int) -> None:
        """Raise Overloaded when `windows` more would overflow the queue or wait too long."""
        with self._cond:
            depth = len(self._queue)
            wait = self.expected_wait_s(windows)
        if depth + windows > self._config.queue_max:
            metrics.REJECTED.labels("queue_full").inc()
            raise Overloaded("the inference queue is full", self._retry_after(wait))
        if depth and wait > self._config.queue_max_wait_s:
            metrics.REJECTED.labels("wait").inc()
            raise Overloaded(f"queued work would wait about {wait:.0f} s", self._retry_after(wait))

    def _retry_after(self, wait: float) -> int:
        return max(1, math.ceil(wait - self._config.queue_max_wait_s / 2))

    # --- submission --------------------------------------------------------------------------
    def submit(
        self,
        model: str,
        windows: list[np.ndarray],
        options: DecodeOptions,
        priority: Priority,
        *,
        admit: bool = True,
    ) -> list[Future]:
        """Queue windows; each future resolves to that window's segments."""
        if admit:
            self.check_admission(len(windows))
        now = time.monotonic()
        futures: list[Future] = []
        with self._cond:
            for window in windows:
                future: Future = Future()
                item = _Item(
                    (int(priority), now, next(self._seq)), model, window, options, future, now
                )
                self._insert(item)
                futures.append(future)
            metrics.QUEUE_DEPTH.set(len(self._queue))
            self._cond.notify_all()
        return futures

    def _insert(self, item: _Item) -> None:
        lo, hi = 0, len(self._queue)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._queue[mid] < item:
                lo = mid + 1
            else:
                hi = mid
        self._queue.insert(lo, item)

    # --- workers -----------------------------------------------------------------------------
    def _take_batch(self) -> list[_Item] | None:
        """Block until a batch is ready: the most urgent item plus compatible ones."""
        with self._cond:
            while self._running and not self._queue:
                self._cond.wait()
            if not self._running:
                return None
            key = self._queue[0].batch_key
            deadline = time.monotonic() + self._config.batch_window_s
            while True:
                same = sum(1 for item in self._queue if item.batch_key == key)
                remaining = deadline - time.monotonic()
                if same >= self._config.batch_size or remaining <= 0:
                    break
                self._cond.wait(remaining)
                if not self._queue:
                    return []
            batch: list[_Item] = []
            rest: list[_Item] = []
            for item in self._queue:
                if item.batch_key == key and len(batch) < self._config.batch_size:
                    batch.append(item)
                else:
                    rest.append(item)
            self._queue = rest
            self._busy += 1
            metrics.QUEUE_DEPTH.set(len(self._queue))
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._busy -= 1

    def _run(self, batch: list[_Item]) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.monotonic()
        for item in live:
            metrics.QUEUE_WAIT_SECONDS.labels(Priority(item.sort_key[0]).name.lower()).observe(
                started - item.enqueued
            )
        metrics.BATCH_SIZE.observe(len(live))
        model = live[0].model
        try:
            results = self._decode(model, [item.window for item in live], live[0].options)
        except BaseException as exc:  # a failed batch fails its items, never the worker
            for item in live:
                item.future.set_exception(exc)
            return
        elapsed = time.monotonic() - started
        metrics.INFERENCE_SECONDS.labels(model).observe(elapsed)
        self._window_cost = 0.8 * self._window_cost + 0.2 * (elapsed / len(live))
        for item, result in zip(live, results, strict=True):
            item.future.set_result(result)

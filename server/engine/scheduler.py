"""The inference scheduler: one queue for every client, batched per model and decode options.

Work items are ≤30 s windows (REST chunks cut by VAD, streaming interim and final decodes).
Each item carries a deadline: the caller's, or its priority's default budget. Workers take the
item with the earliest deadline (ties: the more urgent priority), wait up to a short batching
window for compatible items (same model and `DecodeOptions.batch_key`), and decode them in one
CTranslate2 call. Streaming budgets are seconds while bulk REST budgets are the admission limit,
so streaming work runs ahead of bulk work, yet bulk work that has waited its whole budget is not
starved by a steady stream load.

On a CPU a batch costs about the sum of its windows (only the decoder gains from batching), so
bulk windows join a batch led by streaming work only while the estimated batch time still meets
the leader's deadline; on a GPU, where a batch costs little more than one window, they join.

On a CPU the encoder pass is most of a short window's cost and costs the same for 2 s as for
30 s, so compatible windows that wait together (same model and options, same owner unless the
operator allows mixing) are *packed*: laid end to end in one window, decoded once, and split back
by word times (`packing`). A worker then takes packs rather than windows.

Admission control refuses new work when the queue would make it wait too long, so an overloaded
server answers 503 at once instead of letting latency drift. Admitted work is never dropped:
the only items not decoded are those whose caller went away (cancelled futures, removed from
the queue at once) and droppable items (interims, by the caller's choice) past their deadline.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Literal

import numpy as np

from server import metrics
from server.engine import packing
from server.engine.whisper import SAMPLE_RATE, DecodeOptions
from server.errors import Busy


class Priority(IntEnum):
    STREAM_FINAL = 0
    STREAM_INTERIM = 1
    BULK = 2


class Kind(Enum):
    DECODE = "decode"  # windows -> segments
    DETECT = "detect"  # window -> (language, probability)


class Overloaded(Busy):
    """New work refused; `retry_after` is a whole number of seconds for the Retry-After header."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(f"Server busy: {message}; retry later", retry_after)


class DeadlineExpired(RuntimeError):
    """A droppable item's deadline passed before a worker reached it; it was not decoded."""


@dataclass(order=True)
class _Item:
    sort_key: tuple[float, int, int]  # (deadline, priority, arrival): earliest deadline first
    model: str = field(compare=False)
    window: np.ndarray = field(compare=False)
    options: DecodeOptions | None = field(compare=False)
    future: Future = field(compare=False)
    enqueued: float = field(compare=False)
    droppable: bool = field(compare=False, default=False)
    # A non-Whisper job (diarization) run on a worker as it is, never batched; `cost_s` is
    # its estimated run time for admission.
    task: Callable[[], object] | None = field(compare=False, default=None)
    cost_s: float = field(compare=False, default=0.0)
    owner: str | None = field(compare=False, default=None)
    kind: Kind = field(compare=False, default=Kind.DECODE)

    @property
    def deadline(self) -> float:
        return self.sort_key[0]

    @property
    def priority(self) -> Priority:
        return Priority(self.sort_key[1])

    @property
    def batch_key(self) -> tuple:
        if self.task is not None or self.options is None:
            return ("task", self.sort_key[2])
        return (self.model, self.kind, self.options.batch_key)

    @property
    def seconds(self) -> float:
        return len(self.window) / SAMPLE_RATE


@dataclass(frozen=True)
class Batch:
    """What one worker runs in one call: windows of one model, kind and options.

    `groups` lists which windows share one packed window (each window in exactly one group);
    None when nothing is packed.
    """

    model: str
    kind: Kind
    windows: list[np.ndarray]
    options: DecodeOptions
    groups: list[list[int]] | None = None
    # No other worker was running when this batch started: it may use every core.
    alone: bool = False


RunFn = Callable[[Batch], list[Any]]


@dataclass
class SchedulerConfig:
    batch_size: int = 8
    batch_window_s: float = 0.015
    workers: int = 1
    queue_max: int = 256
    queue_max_wait_s: float = 30.0
    # Seconds per window before any batch was measured; replaced by the measured EWMA quickly.
    initial_window_cost_s: float = 1.0
    # Default deadlines (seconds after submission) when the caller gives none.
    final_budget_s: float = 1.5
    interim_budget_s: float = 3.0
    # None: the queue_max_wait_s admission promise is the bulk budget.
    bulk_budget_s: float | None = None
    # Whether bulk windows may always join a batch led by streaming work (True on GPUs, where
    # a batch costs about one window); otherwise only while the leader's deadline still holds.
    mix_bulk_into_stream: bool = False
    # Pack compatible short windows into one encoder window (CPU): see `packing`. "interims"
    # packs only droppable interim decodes, whose text is replaced anyway; "all" packs finals
    # and bulk windows too, whose text then depends on what they were packed with.
    pack: Literal["off", "interims", "all"] = "off"
    pack_gap_s: float = 1.0
    pack_window_s: float = 30.0
    # Whether windows of different owners (API keys) may share a packed window.
    pack_across_owners: bool = False

    def budget(self, priority: Priority) -> float:
        if priority is Priority.STREAM_FINAL:
            return self.final_budget_s
        if priority is Priority.STREAM_INTERIM:
            return self.interim_budget_s
        return self.bulk_budget_s if self.bulk_budget_s is not None else self.queue_max_wait_s


class Scheduler:
    def __init__(self, run: RunFn, config: SchedulerConfig) -> None:
        self._decode = run
        self._config = config
        self._queue: list[_Item] = []  # kept sorted by deadline; small (≈ queue_max)
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._running = False
        self._threads: list[threading.Thread] = []
        self._inflight: list[str] = []  # model of every window being decoded right now
        self._busy = 0  # workers running a batch now
        # EWMA of wall seconds per window per model, measured per batch; drives admission.
        self._cost: dict[str, float] = {}

    @property
    def config(self) -> SchedulerConfig:
        return self._config

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._running:
                return
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

    def cost_of(self, model: str | None) -> float:
        if model is not None and model in self._cost:
            return self._cost[model]
        return max(self._cost.values(), default=self._config.initial_window_cost_s)

    def expected_wait_s(self, extra_windows: int = 0, model: str | None = None) -> float:
        """How long new work would wait for its last window: queued work, half of the batches
        now running, then its own windows, at the measured per-window cost over the workers."""
        with self._cond:
            return self._expected_wait_locked(extra_windows, model)

    def _expected_wait_locked(
        self, extra_windows: int, model: str | None, extra_cost_s: float = 0.0
    ) -> float:
        queued = sum(item.cost_s or self.cost_of(item.model) for item in self._queue)
        running = sum(self.cost_of(name) for name in self._inflight) / 2
        own = extra_windows * self.cost_of(model) + extra_cost_s
        return (queued + running + own) / self._config.workers

    def check_admission(self, windows: int, model: str | None = None) -> None:
        """Raise Overloaded when `windows` more would overflow the queue or wait too long.

        An idle queue admits any one request, however long, so big files are served when the
        server is free instead of being refused forever.
        """
        with self._cond:
            self._check_locked(windows, model)

    def _check_locked(self, windows: int, model: str | None, extra_cost_s: float = 0.0) -> None:
        depth = len(self._queue)
        if depth == 0:
            return
        per_window = self.cost_of(model) / self._config.workers
        overflow = depth + windows - self._config.queue_max
        if overflow > 0:
            metrics.REJECTED.labels("queue_full").inc()
            raise Overloaded("the inference queue is full", _seconds(overflow * per_window))
        wait = self._expected_wait_locked(windows, model, extra_cost_s)
        if wait > self._config.queue_max_wait_s:
            metrics.REJECTED.labels("wait").inc()
            raise Overloaded(
                f"queued work would wait about {wait:.0f} s",
                _seconds(wait - self._config.queue_max_wait_s),
            )

    # --- submission --------------------------------------------------------------------------
    def submit(
        self,
        model: str,
        windows: list[np.ndarray],
        options: DecodeOptions,
        priority: Priority,
        *,
        admit: bool = True,
        deadline_s: float | None = None,
        due_in_s: float = 0.0,
        droppable: bool = False,
        owner: str | None = None,
        kind: Kind = Kind.DECODE,
    ) -> list[Future]:
        """Queue windows; each future resolves to that window's segments.

        With `admit`, the admission check and the enqueue happen under one lock, so concurrent
        callers can't all pass the check and then overfill the queue together.
        """
        return self.submit_groups(
            model,
            [(windows, options)],
            priority,
            admit=admit,
            deadline_s=deadline_s,
            due_in_s=due_in_s,
            droppable=droppable,
            owner=owner,
            kind=kind,
        )[0]

    def submit_groups(
        self,
        model: str,
        groups: list[tuple[list[np.ndarray], DecodeOptions]],
        priority: Priority,
        *,
        admit: bool = True,
        deadline_s: float | None = None,
        due_in_s: float = 0.0,
        droppable: bool = False,
        owner: str | None = None,
        kind: Kind = Kind.DECODE,
    ) -> list[list[Future]]:
        """Queue several groups (e.g. the channels of one file) as one all-or-nothing request.

        `owner` (an API key's digest, or None) decides which windows may share a packed window.
        `due_in_s`: the caller will not use the result before then, so the priority's budget
        starts that much later (a final decoded speculatively at a pause is needed only when
        the pause is judged: a stream that decides after 0.8 s of silence yields to one that
        decides after 0.2 s).
        """
        now = time.monotonic()
        budget = (
            deadline_s
            if deadline_s is not None
            else max(0.0, due_in_s) + self._config.budget(priority)
        )
        deadline = now + budget
        out: list[list[Future]] = []
        with self._cond:
            total = sum(len(w) for w, _ in groups)
            if admit and total:
                self._check_locked(total, model)
            for windows, options in groups:
                futures: list[Future] = []
                for window in windows:
                    future: Future = Future()
                    key = (deadline, int(priority), next(self._seq))
                    item = _Item(
                        key, model, window, options, future, now, droppable, owner=owner, kind=kind
                    )
                    self._insert(item)
                    futures.append(future)
                out.append(futures)
            metrics.QUEUE_DEPTH.set(len(self._queue))
            self._cond.notify_all()
        return out

    def submit_task(
        self,
        name: str,
        task: Callable[[], object],
        priority: Priority,
        *,
        cost_s: float,
        admit: bool = True,
    ) -> Future:
        """Queue a job that is not a Whisper window (diarization) for a worker, under the
        same deadlines and admission as decoding, so it neither jumps the queue nor
        oversubscribes the cores the workers share. `name` labels its metrics."""
        now = time.monotonic()
        deadline = now + self._config.budget(priority)
        future: Future = Future()
        with self._cond:
            if admit:
                self._check_locked(1, None, cost_s)
            key = (deadline, int(priority), next(self._seq))
            item = _Item(
                key, name, np.zeros(0, np.float32), None, future, now, task=task, cost_s=cost_s
            )
            self._insert(item)
            metrics.QUEUE_DEPTH.set(len(self._queue))
            self._cond.notify_all()
        return future

    def discard(self, futures: list[Future]) -> int:
        """Cancel futures and take their items out of the queue now (the client went away), so
        they neither hold queue slots nor count against admission. Returns how many left."""
        for future in futures:
            future.cancel()
        gone = set(map(id, futures))
        with self._cond:
            before = len(self._queue)
            self._queue = [item for item in self._queue if id(item.future) not in gone]
            removed = before - len(self._queue)
            metrics.QUEUE_DEPTH.set(len(self._queue))
            self._cond.notify_all()
        return removed

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
    def _expire_locked(self, now: float) -> None:
        """Fail droppable items past their deadline and forget cancelled ones."""
        keep = []
        for item in self._queue:
            if item.future.cancelled():
                continue
            if item.droppable and item.deadline < now:
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(DeadlineExpired("deadline passed before decoding"))
                metrics.REJECTED.labels("expired").inc()
                continue
            keep.append(item)
        self._queue = keep

    def _fits(self, chosen: list[list[_Item]], group: list[_Item], now: float) -> bool:
        """Whether one more encoder window (`group`, same key already checked) may join."""
        head = chosen[0][0]
        if head.priority is Priority.BULK or group[0].priority is not Priority.BULK:
            return True
        if self._config.mix_bulk_into_stream:
            return True
        # Bulk joining streaming work: only if the leader still meets its deadline.
        per_window = self.cost_of(head.model)
        return now + (len(chosen) + 1) * per_window <= head.deadline

    def _limit(self, compatible: int) -> int:
        """How many of `compatible` encoder windows this worker takes: an even share per worker.

        Each worker runs on its own share of the cores; one worker taking everything would
        leave the others idle (or idle when they free up a moment later) while it grinds
        through a big batch alone. With one worker (GPU) it takes a full batch.
        """
        workers = self._config.workers
        if workers <= 1:
            return self._config.batch_size
        return max(1, min(self._config.batch_size, math.ceil(compatible / workers)))

    def _packable(self, item: _Item) -> bool:
        cfg = self._config
        return (
            (
                cfg.pack == "all"
                or (cfg.pack == "interims" and item.priority is Priority.STREAM_INTERIM)
            )
            and item.kind is Kind.DECODE
            and item.task is None
            and item.options is not None
            and item.options.word_timestamps  # the split needs word times
            and item.seconds + cfg.pack_gap_s < cfg.pack_window_s
        )

    def _windows(self, items: list[_Item]) -> list[list[_Item]]:
        """Compatible queued items (queue order) as encoder windows, most urgent first.

        Without packing each item is its own window. With it, items that may share a window
        (bulk only with bulk, so a long REST window never holds up a stream's final; one owner
        per window unless the operator allows mixing) are packed first fit, at most
        ceil(items / idle workers) per window: idle cores decode side by side first (lower
        latency), and windows share an encoder pass only when there are more of them than idle
        workers (less CPU per window, which is what counts under load).
        """
        idle = max(1, self._config.workers - self._busy)
        most = max(1, math.ceil(len(items) / idle))
        classes: dict[tuple, list[_Item]] = {}
        for item in items:
            if self._packable(item):
                owner = None if self._config.pack_across_owners else item.owner
                cls: tuple = (item.priority is Priority.BULK, owner)
            else:
                cls = ("alone", id(item))
            classes.setdefault(cls, []).append(item)
        windows: list[list[_Item]] = []
        for members in classes.values():
            lengths = [m.seconds for m in members]
            for indices in packing.plan(
                lengths, self._config.pack_gap_s, self._config.pack_window_s, most
            ):
                windows.append([members[i] for i in indices])
        windows.sort(key=lambda group: group[0].sort_key)
        return windows

    def _take_batch(self) -> tuple[list[list[_Item]], bool] | None:
        """Block until a batch is ready: the most urgent item plus compatible ones, as encoder
        windows (one item each, or several packed)."""
        with self._cond:
            while True:
                while self._running and not self._queue:
                    self._cond.wait()
                if not self._running:
                    return None
                self._expire_locked(time.monotonic())
                if self._queue:
                    break
            key = self._queue[0].batch_key
            fill_by = time.monotonic() + self._config.batch_window_s
            while True:
                windows = self._windows([i for i in self._queue if i.batch_key == key])
                limit = self._limit(len(windows))
                remaining = fill_by - time.monotonic()
                if len(windows) >= limit or remaining <= 0:
                    break
                self._cond.wait(remaining)
                self._expire_locked(time.monotonic())
                if not self._queue or self._queue[0].batch_key != key:
                    return [], False  # the leader went away or something more urgent came
            now = time.monotonic()
            chosen: list[list[_Item]] = []
            for group in windows:
                if len(chosen) == limit:
                    break
                if not chosen or self._fits(chosen, group, now):
                    chosen.append(group)
            taken = {id(item) for group in chosen for item in group}
            self._queue = [item for item in self._queue if id(item) not in taken]
            self._inflight.extend(group[0].model for group in chosen for _ in group)
            alone = self._busy == 0
            self._busy += 1
            metrics.QUEUE_DEPTH.set(len(self._queue))
            return chosen, alone

    def _work(self) -> None:
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            batch, alone = taken
            if not batch:
                continue
            try:
                self._run(batch, alone)
            finally:
                with self._cond:
                    self._busy -= 1
                    for group in batch:
                        for item in group:
                            self._inflight.remove(item.model)

    def _run(self, batch: list[list[_Item]], alone: bool = False) -> None:
        groups = [
            [item for item in group if item.future.set_running_or_notify_cancel()]
            for group in batch
        ]
        groups = [group for group in groups if group]
        live = [item for group in groups for item in group]
        if not live:
            return
        started = time.monotonic()
        for item in live:
            metrics.QUEUE_WAIT_SECONDS.labels(item.priority.name.lower()).observe(
                started - item.enqueued
            )
        head = live[0]
        if head.task is not None:
            self._run_task(head, started)
            return
        metrics.BATCH_SIZE.observe(len(live))
        indices: list[list[int]] = []
        for group in groups:
            first = len(indices) and indices[-1][-1] + 1
            indices.append(list(range(first, first + len(group))))
            if self._config.pack != "off":
                metrics.PACK_PIECES.observe(len(group))
        assert head.options is not None
        job = Batch(
            head.model,
            head.kind,
            [item.window for item in live],
            head.options,
            indices if any(len(g) > 1 for g in indices) else None,
            alone,
        )
        try:
            results = self._decode(job)
        except BaseException as exc:  # a failed batch fails its items, never the worker
            for item in live:
                item.future.set_exception(exc)
            return
        elapsed = time.monotonic() - started
        metrics.INFERENCE_SECONDS.labels(head.model).observe(elapsed)
        if head.kind is Kind.DECODE:  # a detection is an encoder pass: not a window's cost
            with self._cond:
                previous = self._cost.get(head.model)
                measured = elapsed / len(live)
                self._cost[head.model] = (
                    measured if previous is None else 0.8 * previous + 0.2 * measured
                )
        for item, result in zip(live, results, strict=True):
            item.future.set_result(result)

    def _run_task(self, item: _Item, started: float) -> None:
        assert item.task is not None
        try:
            result = item.task()
        except BaseException as exc:  # a failed job fails its caller, never the worker
            item.future.set_exception(exc)
            return
        metrics.INFERENCE_SECONDS.labels(item.model).observe(time.monotonic() - started)
        item.future.set_result(result)


def _seconds(value: float) -> int:
    """A Retry-After value: whole seconds, at least one."""
    return max(1, math.ceil(value))

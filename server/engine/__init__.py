"""The engine: the only owner of models and of the shared compute (inference workers, decode
slots). Routes and sessions submit windows and await segments."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from server.admission import Slots
from server.diarize import Diarization, DiarizeOptions, Diarizer, SpeakerHints
from server.engine.catalog import Catalog, ModelInfo, ModelNotServed, ModelUnavailable, Resolution
from server.engine.models import LoadedModel, ModelPool
from server.engine.scheduler import (
    DeadlineExpired,
    Overloaded,
    Priority,
    Scheduler,
    SchedulerConfig,
)
from server.engine.whisper import DecodeOptions, Segment, Word, decode_batch, detect_language
from server.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "DeadlineExpired",
    "DecodeOptions",
    "Engine",
    "ModelInfo",
    "ModelNotServed",
    "ModelUnavailable",
    "Overloaded",
    "Priority",
    "Segment",
    "Word",
]


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog.load(settings.models_dir)
        self.pool = ModelPool(settings, self.catalog)
        self.default_model = self.catalog.add_operator_model(settings.model)
        for name in settings.preload:
            self.catalog.add_operator_model(name)
        on_gpu = settings.resolved_device == "cuda"
        self.scheduler = Scheduler(
            self._decode,
            SchedulerConfig(
                batch_size=settings.batch_size,
                batch_window_s=settings.batch_window_ms / 1000,
                # CTranslate2 keeps `workers` replicas per device: one scheduler thread each.
                workers=settings.resolved_workers * (len(settings.device_index) if on_gpu else 1),
                queue_max=settings.queue_max,
                queue_max_wait_s=settings.queue_max_wait_s,
                mix_bulk_into_stream=on_gpu,
            ),
        )
        # Whole-file decoding is CPU and memory heavy too: bounded and admitted like inference.
        self.decode_slots = Slots(
            "decode", settings.resolved_decode_concurrency, settings.decode_max_waiting
        )
        self.diarizer = Diarizer(
            settings.diarize_embedding_model,
            DiarizeOptions(
                threshold=settings.diarize_threshold,
                max_speakers=settings.diarize_max_speakers,
            ),
            threads=settings.cpu_threads or None,
        )
        self.ready = False

    # --- lifecycle ---------------------------------------------------------------------------
    def load(self) -> None:
        """Load and warm every model to serve; blocking, run before saying ready."""
        for name in [self.default_model, *self.settings.preload]:
            self.pool.load(name)
        self.scheduler.start()
        self.ready = True

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    def stop(self) -> None:
        self.ready = False
        self.scheduler.stop()

    # --- models ------------------------------------------------------------------------------
    def resolve_model(self, requested: str | None) -> Resolution:
        return self.catalog.resolve(requested, self.pool.served, self.default_model)

    async def model(self, name: str) -> LoadedModel:
        """A loaded model; installed catalog models not preloaded are loaded on first use."""
        loaded = self.pool.get(name)
        if loaded is None:
            loaded = await asyncio.to_thread(self.pool.load, name)
        return loaded

    # --- inference ---------------------------------------------------------------------------
    def _decode(
        self, name: str, windows: list[np.ndarray], options: DecodeOptions
    ) -> list[list[Segment]]:
        loaded = self.pool.get(name)
        if loaded is None:
            raise ModelUnavailable(f"model '{name}' is not loaded")
        return decode_batch(loaded.model, windows, options)

    async def decode(
        self,
        model: str,
        windows: list[np.ndarray],
        options: DecodeOptions,
        priority: Priority = Priority.BULK,
        *,
        admit: bool = True,
        deadline_s: float | None = None,
        droppable: bool = False,
    ) -> list[list[Segment]]:
        """Decode windows through the shared scheduler; cancelling the caller cancels its work.

        `deadline_s` (seconds from now) overrides the priority's default budget; `droppable`
        work whose deadline passes before a worker reaches it raises `DeadlineExpired` instead
        of being decoded late (for interims only: admitted finals and bulk are never dropped).
        """
        futures = self.scheduler.submit(
            model,
            windows,
            options,
            priority,
            admit=admit,
            deadline_s=deadline_s,
            droppable=droppable,
        )
        return await self._gather(futures)

    async def decode_groups(
        self,
        model: str,
        groups: list[tuple[list[np.ndarray], DecodeOptions]],
        priority: Priority = Priority.BULK,
        *,
        admit: bool = True,
        on_window: Callable[[int, int, list[Segment]], None] | None = None,
    ) -> list[list[list[Segment]]]:
        """Decode several window groups (a file's channels) admitted together, all or none.

        `on_window(group, index, segments)` hears each window's result in order, as soon as it
        and every window before it are done (for progress and server-sent events).
        """
        submitted = self.scheduler.submit_groups(model, groups, priority, admit=admit)
        flat = [future for futures in submitted for future in futures]
        places = [(g, i) for g, futures in enumerate(submitted) for i in range(len(futures))]
        on_each = None
        if on_window is not None:
            callback = on_window

            def on_each(position: int, segments: list[Segment]) -> None:
                callback(*places[position], segments)

        results = iter(await self._gather(flat, on_each))
        return [[next(results) for _ in futures] for futures in submitted]

    async def _gather(
        self, futures: list, on_each: Callable[[int, list[Segment]], None] | None = None
    ) -> list[list[Segment]]:
        wrapped = [asyncio.wrap_future(f) for f in futures]
        try:
            if on_each is None:
                return list(await asyncio.gather(*wrapped))
            out = []
            for position, waiter in enumerate(wrapped):
                out.append(await waiter)
                on_each(position, out[-1])
            return out
        except BaseException:
            # The client went away (or one window failed): free the queue of the rest now.
            self.scheduler.discard(futures)
            for waiter in wrapped:
                waiter.cancel()
            raise

    async def diarize(
        self,
        samples: np.ndarray,
        regions: list[tuple[float, float]],
        hints: SpeakerHints,
        priority: Priority = Priority.BULK,
    ) -> Diarization:
        """Speaker turns of one track, run on a worker under the queue's admission."""
        await asyncio.to_thread(self.diarizer.load)  # a missing model fails before queueing
        future = self.scheduler.submit_task(
            "diarize",
            lambda: self.diarizer.run(samples, regions, hints),
            priority,
            cost_s=self.diarizer.cost_s(len(samples) / 16000),
        )
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            self.scheduler.discard([future])
            raise

    async def detect_language(self, model: str, window: np.ndarray) -> tuple[str, float]:
        loaded = await self.model(model)
        return await asyncio.to_thread(detect_language, loaded.model, window)

    def sample_gauges(self) -> None:
        """Refresh gauges read at scrape time (GPU memory, when on CUDA and NVML is present)."""
        if self.settings.resolved_device != "cuda":
            return
        try:
            import pynvml  # optional: nvidia-ml-py, installed in the GPU image
        except ImportError:
            return
        from server import metrics

        pynvml.nvmlInit()
        for index in self.settings.device_index:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
            metrics.GPU_MEMORY_BYTES.labels(str(index)).set(used)

"""The engine: the only owner of models and of the shared compute (inference workers, decode
slots). Routes and sessions submit windows and await segments."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from server import metrics
from server.admission import Slots
from server.diarize import (
    Diarization,
    DiarizeOptions,
    Diarizer,
    OnlineSpeakers,
    SherpaBackend,
    SpeakerHints,
)
from server.engine import owner as owners
from server.engine import packing
from server.engine.catalog import Catalog, ModelInfo, ModelNotServed, ModelUnavailable, Resolution
from server.engine.models import LoadedModel, ModelPool
from server.engine.scheduler import (
    Batch,
    DeadlineExpired,
    Kind,
    Overloaded,
    Priority,
    Scheduler,
    SchedulerConfig,
)
from server.engine.whisper import (
    DecodeOptions,
    Segment,
    Word,
    decode_batch,
    detect_language,
    one_blas_thread,
)
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
        self.catalog = Catalog.for_settings(settings)
        self.pool = ModelPool(settings, self.catalog)
        self.default_model = self.catalog.add_operator_model(settings.model)
        self.preload = [self.catalog.add_operator_model(name) for name in settings.preload]
        on_gpu = settings.resolved_device == "cuda"
        self.scheduler = Scheduler(
            self._run,
            SchedulerConfig(
                batch_size=settings.batch_size,
                batch_window_s=settings.batch_window_ms / 1000,
                # CTranslate2 keeps `workers` replicas per device: one scheduler thread each.
                workers=settings.resolved_workers * (len(settings.device_index) if on_gpu else 1),
                queue_max=settings.queue_max,
                queue_max_wait_s=settings.queue_max_wait_s,
                mix_bulk_into_stream=on_gpu,
                pack=settings.packing,
                pack_gap_s=settings.pack_gap_ms / 1000,
                pack_across_owners=settings.pack_across_keys,
            ),
        )
        # Whole-file decoding is CPU and memory heavy too: bounded and admitted like inference.
        self.decode_slots = Slots(
            "decode", settings.resolved_decode_concurrency, settings.decode_max_waiting
        )
        self.diarizer = Diarizer(
            settings.diarize_embedding_model,
            DiarizeOptions(
                min_silhouette=settings.diarize_min_silhouette,
                max_speakers=settings.diarize_max_speakers,
            ),
            threads=settings.cpu_threads or None,
            sherpa=(
                SherpaBackend(
                    settings.diarize_segmentation_model, settings.diarize_sherpa_threshold
                )
                if settings.diarize_backend == "sherpa"
                else None
            ),
            backend=settings.diarize_backend,
        )
        self.ready = False

    # --- lifecycle ---------------------------------------------------------------------------
    def load(self) -> None:
        """Load and warm every model to serve; blocking, run before saying ready."""
        one_blas_thread()  # the same features on any number of cores
        for name in [self.default_model, *self.preload]:
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

    def describe_models(self) -> dict:
        """`/v1/models`: each served model with its languages and where it comes from, the
        installed ones loaded on first use, and what every alias answers with right now."""
        served = self.pool.served
        names = sorted(served | {n for n in self.catalog.loadable()})
        models = []
        for name in names:
            info = self.catalog.info(name)
            loaded = self.pool.get(name)
            models.append(
                {
                    **info.as_deepgram(),
                    "uuid": info.uuid,
                    "source": self.catalog.source(name),
                    "languages": (
                        list(loaded.model.supported_languages)
                        if loaded is not None
                        else self.catalog.languages(name)
                    ),
                    "loaded": loaded is not None,
                    "default": name == self.default_model,
                }
            )
        aliases = {}
        for alias in sorted(a for a in self.catalog.aliases if a):
            try:
                aliases[alias] = self.resolve_model(alias).name
            except ModelNotServed:
                continue
        return {"default": self.default_model, "models": models, "aliases": aliases}

    async def model(self, name: str) -> LoadedModel:
        """A loaded model; installed catalog models not preloaded are loaded on first use."""
        loaded = self.pool.get(name)
        if loaded is None:
            loaded = await asyncio.to_thread(self.pool.load, name)
        return loaded

    # --- inference ---------------------------------------------------------------------------
    def _run(self, batch: Batch) -> list:
        """One scheduler batch, on a worker thread: detection, or decoding (packed or not)."""
        loaded = self.pool.get(batch.model)
        if loaded is None:
            raise ModelUnavailable(f"model '{batch.model}' is not loaded")
        model = loaded.solo if batch.alone and loaded.solo is not None else loaded.model
        if batch.kind is Kind.DETECT:
            return [detect_language(model, window) for window in batch.windows]
        if batch.groups is None:
            return decode_batch(model, batch.windows, batch.options)
        results, refused = packing.decode(
            model,
            batch.windows,
            batch.groups,
            batch.options,
            self.scheduler.config.pack_gap_s,
        )
        metrics.PACK_REFUSED.inc(refused)
        return results

    async def decode(
        self,
        model: str,
        windows: list[np.ndarray],
        options: DecodeOptions,
        priority: Priority = Priority.BULK,
        *,
        admit: bool = True,
        deadline_s: float | None = None,
        due_in_s: float = 0.0,
        droppable: bool = False,
        owner: str | None = None,
    ) -> list[list[Segment]]:
        """Decode windows through the shared scheduler; cancelling the caller cancels its work.

        `deadline_s` (seconds from now) overrides the priority's default budget, which
        `due_in_s` (when the caller will first use the result) delays; `droppable`
        work whose deadline passes before a worker reaches it raises `DeadlineExpired` instead
        of being decoded late (for interims only: admitted finals and bulk are never dropped).
        `owner` (default: the request's API key digest, `owner.CURRENT`) decides which windows
        may be packed together.
        """
        futures = self.scheduler.submit(
            model,
            windows,
            options,
            priority,
            admit=admit,
            deadline_s=deadline_s,
            due_in_s=due_in_s,
            droppable=droppable,
            owner=owner or owners.CURRENT.get(),
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
        submitted = self.scheduler.submit_groups(
            model, groups, priority, admit=admit, owner=owners.CURRENT.get()
        )
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
    ) -> list:
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
        return await self._diarize(
            lambda: self.diarizer.run(samples, regions, hints), len(samples), priority
        )

    async def diarize_online(self, speakers: OnlineSpeakers, samples: np.ndarray) -> Diarization:
        """One live final's speakers (stable ids across the stream), on a worker at the
        priority of stream finals; never refused: the stream was admitted."""
        return await self._diarize(
            lambda: self.diarizer.run_online(speakers, samples),
            len(samples),
            Priority.STREAM_FINAL,
            admit=False,
        )

    async def _diarize(
        self,
        job: Callable[[], Diarization],
        samples: int,
        priority: Priority,
        *,
        admit: bool = True,
    ) -> Diarization:
        await asyncio.to_thread(self.diarizer.load)  # a missing model fails before queueing
        future = self.scheduler.submit_task(
            "diarize",
            job,
            priority,
            cost_s=self.diarizer.cost_s(samples / 16000),
            admit=admit,
        )
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            self.scheduler.discard([future])
            raise

    async def detect_language(
        self, model: str, window: np.ndarray, priority: Priority = Priority.BULK
    ) -> tuple[str, float]:
        """Most likely language of a window: an encoder pass, so it queues like any other."""
        await self.model(model)
        futures = self.scheduler.submit(
            model, [window], DecodeOptions(), priority, admit=False, kind=Kind.DETECT
        )
        (result,) = await self._gather(futures)
        return result

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

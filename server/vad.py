"""Silero VAD through onnxruntime (no torch): offline speech regions and a streaming detector.

The ONNX model is the one faster-whisper ships (`silero_vad_v6.onnx`). Offline work reuses
faster-whisper's region finder and chunk packer, so the REST path cuts audio exactly as its
batched pipeline does; streaming needs state carried across calls, which lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.engine.fw import (
    SpeechTimestampsMap,
    VadOptions,
    collect_chunks,
    get_speech_timestamps,
    silero_probabilities,
)

SAMPLE_RATE = 16000
FRAME = 512  # samples per VAD decision (32 ms)
_CONTEXT = 64


@dataclass(frozen=True)
class Window:
    """A ≤30 s piece of concatenated speech, and where its speech came from in the file."""

    audio: np.ndarray
    offset: float  # seconds into the concatenated-speech timeline


@dataclass(frozen=True)
class SpeechPlan:
    windows: list[Window]
    timeline: SpeechTimestampsMap | None  # maps concatenated-speech time back to file time
    regions: list[tuple[float, float]] = field(default_factory=list)  # speech, file seconds

    def to_file_time(self, start: float, end: float) -> tuple[float, float]:
        """Map a word's span; both ends resolve through the chunk holding its middle."""
        if self.timeline is None:
            return start, end
        chunk = self.timeline.get_chunk_index((start + end) / 2)
        return (
            self.timeline.get_original_time(start, chunk),
            self.timeline.get_original_time(end, chunk),
        )


def plan_speech(audio: np.ndarray, options: VadOptions, window_s: float = 30.0) -> SpeechPlan:
    """Cut a channel into ≤window_s windows of speech; silence and noise never reach Whisper."""
    options = VadOptions(**{**options.__dict__, "max_speech_duration_s": window_s})
    regions = get_speech_timestamps(audio, options)
    if not regions:
        return SpeechPlan([], None)
    chunks, metadata = collect_chunks(audio, regions, max_duration=window_s)
    windows = [
        Window(chunk.astype(np.float32, copy=False), meta["offset"])
        for chunk, meta in zip(chunks, metadata, strict=True)
        if len(chunk)
    ]
    spans = [(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in regions]
    return SpeechPlan(windows, SpeechTimestampsMap(regions, SAMPLE_RATE), spans)


@dataclass
class StreamingVad:
    """Per-stream Silero state: feed samples as they arrive, get one probability per 32 ms."""

    _h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    _c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    _context: np.ndarray = field(default_factory=lambda: np.zeros(_CONTEXT, np.float32))
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Return speech probabilities for every complete 512-sample frame now available."""
        data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        count = len(data) // FRAME
        self._pending = data[count * FRAME :]
        if count == 0:
            return np.zeros(0, np.float32)
        frames = data[: count * FRAME].reshape(count, FRAME)
        contexts = np.vstack([self._context[None], frames[:-1, -_CONTEXT:]])
        batch = np.concatenate([contexts, frames], axis=1)
        # The model reads the rows as a sequence and carries its recurrent state through
        # them, so one call per feed equals frame-by-frame inference (checked) at a quarter
        # of the cost; h/c carry the state on to the next feed.
        out, self._h, self._c = silero_probabilities(batch, self._h, self._c)
        probs = np.asarray(out, np.float32).reshape(-1)
        self._context = frames[-1, -_CONTEXT:].copy()
        return probs

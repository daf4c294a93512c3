"""Silero VAD through onnxruntime (no torch): offline speech regions and a streaming detector.

The ONNX model is the one faster-whisper ships (`silero_vad_v6.onnx`). Offline work reuses
faster-whisper's region finder and chunk packer, so the REST path cuts audio exactly as its
batched pipeline does; streaming needs state carried across calls, which lives here.

Silero's recurrent state can drift over a long track: on some tracks with background noise and
room echo its probabilities for clear speech sink over tens of seconds until nothing counts as
speech (snakers4/silero-vad#725; Pipecat clears its state every 5 s). Five of
bench/vad_drift.py's 48 conversations lost a quarter to three quarters of their speech so; the
corpus's 222 s LJ reading, given the same kind of room and pink noise at 10-20 dB SNR, did not
drift at all. A state cleared often misses speech of its own, though, in other voices and
rooms. So every probability here, live or offline, is the larger of two readings: one state
that reads the whole track and one that starts afresh every `FRESH_FRAMES` frames. On
bench/vad_drift.py's 48 assembled conversations (one room, pink noise at 15-30 dB SNR) that
hears 82.2 % of the frames inside turns against 73.5 % for the one state alone, the REST
regions hold 97.1 % of the speech against 93.1 % (the worst conversation 49 % against 25 %), no
conversation loses, and no frame of noise alone reaches 0.5 in either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.engine import fw
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
    regions = speech_timestamps(audio, options)
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


FRESH_FRAMES = 250  # 8 s


@dataclass
class _State:
    """One Silero recurrent state; `period` frames between clears (None: never cleared)."""

    period: int | None
    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    age: int = 0  # frames read since the last clear

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Probabilities of (context + frame) rows in order, clearing on schedule."""
        out = np.empty(len(rows), np.float32)
        at = 0
        while at < len(rows):
            upto = len(rows) if self.period is None else min(len(rows), at + self.period - self.age)
            # The model reads the rows as a sequence and carries its recurrent state through
            # them, so one call equals frame-by-frame inference (checked) at a quarter of the
            # cost.
            probs, self.h, self.c = silero_probabilities(rows[at:upto], self.h, self.c)
            out[at:upto] = np.asarray(probs, np.float32).reshape(-1)
            self.age += upto - at
            if self.age == self.period:
                self.h, self.c, self.age = np.zeros_like(self.h), np.zeros_like(self.c), 0
            at = upto
        return out


@dataclass
class StreamingVad:
    """Per-stream Silero state: feed samples as they arrive, get one probability per 32 ms."""

    fresh_frames: int | None = FRESH_FRAMES  # None: one state reads all (as faster-whisper does)
    _steady: _State = field(default_factory=lambda: _State(None))
    _fresh: _State | None = field(init=False, default=None)
    _context: np.ndarray = field(default_factory=lambda: np.zeros(_CONTEXT, np.float32))
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __post_init__(self) -> None:
        self._fresh = _State(self.fresh_frames) if self.fresh_frames else None

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Return speech probabilities for every complete 512-sample frame now available."""
        data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        count = len(data) // FRAME
        self._pending = data[count * FRAME :]
        if count == 0:
            return np.zeros(0, np.float32)
        frames = data[: count * FRAME].reshape(count, FRAME)
        contexts = np.vstack([self._context[None], frames[:-1, -_CONTEXT:]])
        rows = np.concatenate([contexts, frames], axis=1)
        self._context = frames[-1, -_CONTEXT:].copy()
        steady = self._steady.read(rows)
        return steady if self._fresh is None else np.maximum(steady, self._fresh.read(rows))


def track_probabilities(audio: np.ndarray, piece_frames: int = 10_000) -> np.ndarray:
    """One probability per 512-sample frame of a whole track (its length a multiple of 512),
    read as a stream is, a bounded piece at a time."""
    vad = StreamingVad()
    step = piece_frames * FRAME
    return np.concatenate(
        [vad.feed(audio[at : at + step]) for at in range(0, len(audio), step)]
        or [np.zeros(0, np.float32)]
    )


def speech_timestamps(audio: np.ndarray, options: VadOptions) -> list[dict]:
    """faster-whisper's speech regions (sample offsets), found on `track_probabilities`."""
    fw.score_vad_with(track_probabilities)
    return get_speech_timestamps(audio, options)

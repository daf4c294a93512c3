"""Every use of faster-whisper beyond its documented `WhisperModel.transcribe` API, in one place.

openlisten decodes batches of windows itself (per-item fallback, per-item word timings, window
packing), so it calls methods faster-whisper treats as internal: the unbound
`WhisperModel.add_word_timestamps`, `_split_segments_by_timestamps`, `find_alignment`,
`get_prompt`, the Silero ONNX session behind `get_vad_model()` (an attribute only since 1.2.1),
the probabilities that model hands its region finder (`score_vad_with`) and the tokenizer's
language table. Their names and signatures change between minor releases,
so this module accepts only the tested range and checks the shapes it relies on at import:
a mismatch fails the server at start-up with a message that says what to install, instead of a
TypeError in the middle of a request. Nothing else in the package imports faster-whisper.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np

# The range tests ran on; pyproject.toml pins the same. Widen both together, after the suite.
SUPPORTED = (1, 2, 1), (1, 3, 0)  # >=1.2.1,<1.3
REQUIREMENT = "faster-whisper>=1.2.1,<1.3"


class IncompatibleFasterWhisper(ImportError):
    """The installed faster-whisper lacks (or changed) an internal this server relies on."""


def _fail(problem: str) -> IncompatibleFasterWhisper:
    return IncompatibleFasterWhisper(
        f"openlisten needs {REQUIREMENT}: {problem}. "
        f"Install a supported release: pip install '{REQUIREMENT}'"
    )


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_version(installed: str) -> None:
    """Raise `IncompatibleFasterWhisper` unless `installed` lies in the supported range."""
    low, high = SUPPORTED
    if not low <= _version_tuple(installed) < high:
        raise _fail(f"found faster-whisper {installed}")


try:
    VERSION = metadata.version("faster-whisper")
except metadata.PackageNotFoundError as exc:
    raise _fail("faster-whisper is not installed") from exc
check_version(VERSION)

try:
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
    from faster_whisper.transcribe import get_compression_ratio
    from faster_whisper.utils import download_model
    from faster_whisper.vad import (
        SileroVADModel,
        SpeechTimestampsMap,
        VadOptions,
        collect_chunks,
        get_speech_timestamps,
        get_vad_model,
    )
except ImportError as exc:  # pragma: no cover - only with a broken or foreign install
    raise _fail(f"cannot import {exc.name or exc}") from exc

# Methods called with these parameters, by position or name: check their names now.
_SIGNATURES: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "WhisperModel.add_word_timestamps": (
        WhisperModel.add_word_timestamps,
        (
            "self",
            "segments",
            "tokenizer",
            "encoder_output",
            "num_frames",
            "prepend_punctuations",
            "append_punctuations",
            "last_speech_timestamp",
        ),
    ),
    "WhisperModel._split_segments_by_timestamps": (
        WhisperModel._split_segments_by_timestamps,
        ("self", "tokenizer", "tokens", "time_offset", "segment_size", "segment_duration", "seek"),
    ),
    "WhisperModel.find_alignment": (
        WhisperModel.find_alignment,
        ("self", "tokenizer", "text_tokens", "encoder_output", "num_frames"),
    ),
    "SileroVADModel.__call__": (
        SileroVADModel.__call__,
        ("self", "audio", "num_samples", "context_size_samples"),
    ),
    "WhisperModel.get_prompt": (
        WhisperModel.get_prompt,
        ("self", "tokenizer", "previous_tokens", "without_timestamps", "prefix", "hotwords"),
    ),
}


def check_signatures() -> None:
    for name, (function, expected) in _SIGNATURES.items():
        params = tuple(inspect.signature(function).parameters)[: len(expected)]
        if params != expected:
            raise _fail(f"{name} takes {params}, expected {expected}")


check_signatures()

LANGUAGE_CODES: frozenset[str] = frozenset(_LANGUAGE_CODES)

add_word_timestamps = WhisperModel.add_word_timestamps


def split_segments_by_timestamps(
    model: WhisperModel,
    tokenizer: Tokenizer,
    tokens: list[int],
    segment_size: int,
    segment_duration: float,
) -> list[dict]:
    """Whisper's own split of one window's tokens into timed segments (offset 0, seek 0)."""
    segments, _, _ = model._split_segments_by_timestamps(
        tokenizer=tokenizer,
        tokens=tokens,
        time_offset=0.0,
        segment_size=segment_size,
        segment_duration=segment_duration,
        seek=0,
    )
    return segments


def vad_session() -> Any:
    """The shared Silero ONNX session (stateless per call: state is passed in and out)."""
    session = getattr(get_vad_model(), "session", None)
    if session is None:
        raise _fail("its Silero VAD model exposes no ONNX session")
    return session


def silero_probabilities(batch: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple:
    """Run Silero on rows of (context + frame) samples, carrying the recurrent state."""
    return vad_session().run(None, {"input": batch, "h": h, "c": c})


class _ScoredVad(SileroVADModel):
    """faster-whisper's Silero model whose probabilities come from `score_vad_with`'s function."""

    _score: Callable[[np.ndarray], np.ndarray]

    def __call__(
        self, audio: np.ndarray, num_samples: int = 512, context_size_samples: int = 64
    ) -> np.ndarray:
        if (num_samples, context_size_samples) != (512, 64):
            raise _fail(f"its region finder reads {num_samples}-sample Silero frames")
        return self._score(audio).reshape(-1, 1)


def score_vad_with(score: Callable[[np.ndarray], np.ndarray]) -> None:
    """Make `get_speech_timestamps` read its frame probabilities from `score` (a whole track,
    its length a multiple of 512, to one probability per 512 samples). The region finder
    takes no probabilities of its own, so the model it asks for them is given a subclass that
    answers with ours: the thresholds, padding and splitting stay faster-whisper's."""
    model = get_vad_model()
    model.__class__ = _ScoredVad
    model._score = score


__all__ = [
    "LANGUAGE_CODES",
    "VERSION",
    "BatchedInferencePipeline",
    "IncompatibleFasterWhisper",
    "SpeechTimestampsMap",
    "Tokenizer",
    "VadOptions",
    "WhisperModel",
    "add_word_timestamps",
    "check_version",
    "collect_chunks",
    "decode_audio",
    "download_model",
    "get_compression_ratio",
    "get_speech_timestamps",
    "pad_or_trim",
    "score_vad_with",
    "silero_probabilities",
    "split_segments_by_timestamps",
]

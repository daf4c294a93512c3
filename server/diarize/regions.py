"""Speech regions for diarization when the caller has none (CLI tools, benchmarks)."""

from __future__ import annotations

import numpy as np

from server.vad import VadOptions, speech_timestamps

SAMPLE_RATE = 16000


def speech_regions(
    samples: np.ndarray, options: VadOptions | None = None
) -> list[tuple[float, float]]:
    """Silero speech regions of a 16 kHz track, in seconds."""
    found = speech_timestamps(samples, options or VadOptions())
    return [(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in found]

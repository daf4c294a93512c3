"""Who speaks in each final of a live channel (`diarize=true`).

The channel hands over each final's speech as soon as the final's span is known, in stream
order; the embedding runs on an engine worker beside the final's decode, so it adds to the
final's latency only what outlasts the decode. Speaker ids must be stable across the stream,
so each final's clustering step waits for the previous one (`OnlineSpeakers` sees finals in
order); the embeddings of one final are a few hundred milliseconds of worker time at most.

A final's words get the speaker of the turn that covers most of each word. Interim results
carry no speaker: the final that replaces them does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from server.diarize import Diarization, SpeakerHints
from server.engine import Engine
from server.streaming.results import StreamWord
from server.vad import SAMPLE_RATE

log = logging.getLogger(__name__)

# A final shorter than this is embedded with the audio before it (the embedder needs 0.8 s
# of sound; a lone "yes" still has a voice).
MIN_SPEAKER_AUDIO = int(1.0 * SAMPLE_RATE)


class StreamSpeakers:
    """One channel's speaker labelling, on the engine shared with decoding."""

    def __init__(self, engine: Engine, hints: SpeakerHints, channel: int = 0) -> None:
        self._engine = engine
        self._online = engine.diarizer.online(hints)
        self._channel = channel
        self._last: asyncio.Task | None = None
        self._speaker = 0  # the last speaker labelled: a fallback when a labelling failed

    def start(self, audio: np.ndarray, offset: int) -> asyncio.Task:
        """Label the next final's speech (`audio` starts at stream sample `offset`)."""
        task = asyncio.create_task(self._label(audio, offset / SAMPLE_RATE, self._last))
        self._last = task
        return task

    async def _label(
        self, audio: np.ndarray, offset_s: float, previous: asyncio.Task | None
    ) -> Diarization:
        if previous is not None:
            await asyncio.wait([previous])  # in stream order; its outcome is its own business
        found = await self._engine.diarize_online(self._online, audio)
        return found.shifted(offset_s)

    def label(self, words: Sequence[StreamWord], task: asyncio.Task) -> tuple[StreamWord, ...]:
        """The final's words with speakers from its (finished) labelling task. Should that
        have failed, each word keeps a speaker (the last one known, at confidence 0): a
        client reading `speaker` never finds it missing."""
        found: Diarization | None = None
        if task.cancelled():
            log.error("speaker labelling cancelled", extra={"channel": self._channel})
        elif (error := task.exception()) is not None:
            log.error("speaker labelling failed", exc_info=error, extra={"channel": self._channel})
        else:
            found = task.result()
        out = []
        for word in words:
            hit = found.speaker_at(word.start, word.end) if found is not None else None
            speaker, confidence = hit if hit is not None else (self._speaker, 0.0)
            self._speaker = speaker
            out.append(replace(word, speaker=speaker, speaker_confidence=confidence))
        return tuple(out)

"""How a channel's windows are decoded: through the shared engine, as the REST path decodes.

The channel driver only needs "words of this window" for finals and interims; this is the one
place that knows how (offline VAD inside a final's window, decode options, language detection,
priorities), so the driver can be run against a scripted decoder in tests.
Word times come back on the window's clock (seconds from its first sample).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Protocol

import numpy as np

from server.engine import DecodeOptions, Engine, Priority, Segment
from server.prerecorded import to_file_clock, vad_options
from server.streaming.config import StreamConfig
from server.streaming.results import StreamWord
from server.vad import plan_speech


class WindowDecoder(Protocol):
    async def final(
        self, audio: np.ndarray, config: StreamConfig, due_in_s: float = 0.0
    ) -> list[StreamWord]: ...

    async def interim(self, audio: np.ndarray, config: StreamConfig) -> list[StreamWord]: ...


class EngineDecoder:
    """One channel's decodes on the shared engine (finals first, interims droppable)."""

    def __init__(self, engine: Engine, language: str | None = None) -> None:
        self.engine = engine
        self._detects = language == ""
        self._language = language or None  # "" (detect) is resolved on the first speech

    @property
    def detected(self) -> str | None:
        """The language detected on the channel's first speech (None until then, and when the
        client named the language: only a detected one is reported back)."""
        return self._language if self._detects else None

    async def final(
        self, audio: np.ndarray, config: StreamConfig, due_in_s: float = 0.0
    ) -> list[StreamWord]:
        """A final's window is cut as the REST path cuts a file (offline VAD, speech regions
        joined, padded) and decoded the same way, so a streamed phrase reads as the file would.
        `due_in_s`: when the stream will first need it (see `Scheduler.submit_groups`)."""
        plan = await asyncio.to_thread(plan_speech, audio, vad_options(self.engine), 30.0)
        if not plan.windows:
            return []
        options = await self._language_of(config, config.final_options, plan.windows[0].audio)
        decoded = await self.engine.decode(
            config.model,
            [w.audio for w in plan.windows],
            options,
            Priority.STREAM_FINAL,
            admit=False,  # the stream was admitted: its finals are never refused
            due_in_s=due_in_s,
        )
        return [
            word
            for window, segments in zip(plan.windows, decoded, strict=True)
            for word in words_of(to_file_clock(plan, window.offset, segments))
        ]

    async def interim(self, audio: np.ndarray, config: StreamConfig) -> list[StreamWord]:
        """May raise `Overloaded` or `DeadlineExpired`: an interim is skipped, never late."""
        options = await self._language_of(config, config.interim_options, audio)
        (segments,) = await self.engine.decode(
            config.model, [audio], options, Priority.STREAM_INTERIM, droppable=True
        )
        return words_of(segments)

    async def _language_of(
        self, config: StreamConfig, options: DecodeOptions, audio: np.ndarray
    ) -> DecodeOptions:
        """`language=""` means detect: once per channel, on its first decoded speech."""
        if options.language != "":
            return options
        if self._language is None:
            self._language, _ = await self.engine.detect_language(config.model, audio)
        return replace(options, language=self._language)


def words_of(segments: list[Segment]) -> list[StreamWord]:
    return [
        StreamWord(w.text, w.start, max(w.end, w.start), w.probability, s.avg_logprob)
        for s in segments
        for w in s.words
    ]

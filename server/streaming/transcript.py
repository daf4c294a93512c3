"""One channel's transcript state, and its only owner: what is final, what is shown, what is due.

The driver hands in decoded words (stream clock) for a span or an interim window; this class
decides, through the pure `policy` functions, which of them a result shows, and keeps what that
takes: the cursor (where the last final ended: finals tile the stream from here), the tail of
committed words (to recognise their echo in the next decode), the current hypothesis (the last
interim's words), and the end of the last final word (for UtteranceEnd). No I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from server.streaming import policy
from server.streaming.endpointer import Span
from server.streaming.results import StreamResult, StreamWord, UtteranceEnd
from server.vad import SAMPLE_RATE


class Transcript:
    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.cursor = 0  # sample index where the last final ended
        self.spoken_to = 0  # ... and the last final that decoded speech (not an empty one)
        self.committed: tuple[StreamWord, ...] = ()  # the newest final words, oldest first
        self.hypothesis: tuple[StreamWord, ...] = ()
        self.last_word_end: float | None = None  # set by a final with words, until UtteranceEnd

    def final(self, span: Span, words: Sequence[StreamWord], from_finalize: bool) -> StreamResult:
        """The final for `span` (the next one: it starts at the cursor) from its decode."""
        if span.start != self.cursor:
            raise ValueError(f"span starts at {span.start}, the stream is final to {self.cursor}")
        start, end = span.start / SAMPLE_RATE, span.end / SAMPLE_RATE
        since = self.spoken_to / SAMPLE_RATE
        kept = tuple(policy.owned(words, start, end, self.committed, since))
        self.cursor = span.end
        if span.window is not None:
            self.spoken_to = span.end
        self.committed = (self.committed + kept)[-policy.ECHO_WORDS :]
        self.hypothesis = ()
        if kept:
            self.last_word_end = kept[-1].end
        return StreamResult(self.channel, start, end, kept, True, span.speech_final, from_finalize)

    def interim(self, start: int, end: int, words: Sequence[StreamWord]) -> StreamResult | None:
        """An interim over [start, end) samples (start: where its final will start); None when
        it would show no words."""
        since = self.spoken_to / SAMPLE_RATE
        kept = tuple(policy.owned(words, start / SAMPLE_RATE, math.inf, self.committed, since))
        self.hypothesis = kept
        if not kept:
            return None
        return StreamResult(self.channel, start / SAMPLE_RATE, end / SAMPLE_RATE, kept, False)

    def preview(self, words: Sequence[StreamWord], end: int) -> tuple[StreamWord, ...]:
        """What the next final would show from `words` were it to end at sample `end`."""
        since = self.spoken_to / SAMPLE_RATE
        start = self.cursor / SAMPLE_RATE
        return tuple(policy.owned(words, start, end / SAMPLE_RATE, self.committed, since))

    def speech_resumed(self) -> None:
        """New speech: the gap after the last word is no utterance end."""
        self.last_word_end = None

    def utterance_end(self, now: float, gap_s: float, settled: bool) -> UtteranceEnd | None:
        """UtteranceEnd once `gap_s` has passed since the last final word, with no speech open
        and no final still to come (`settled`); at most once per word run."""
        if self.last_word_end is None or not settled or now - self.last_word_end < gap_s:
            return None
        event = UtteranceEnd(self.channel, self.last_word_end)
        self.last_word_end = None
        return event

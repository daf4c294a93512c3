"""What a live stream produces, as plain values that know nothing of any wire protocol.

The streaming state machine hands these to the session; `server.deepgram.live` turns them into
Deepgram messages. Times are seconds on the stream clock (from the first sample received).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from server.words import bare


@dataclass(frozen=True)
class StreamWord:
    text: str  # as decoded: leading space and punctuation kept
    start: float
    end: float
    confidence: float  # the word's probability
    logprob: float  # average log-probability of the decoded segment it came from
    speaker: int | None = None  # diarize=true: set on final words
    speaker_confidence: float | None = None

    @property
    def key(self) -> str:
        """The word for comparisons: lower-case, no punctuation ('' for a lone mark)."""
        return bare(self.text)

    @property
    def mid(self) -> float:
        return (self.start + self.end) / 2


@dataclass(frozen=True)
class StreamResult:
    """An interim or final transcript of one channel over [start, end)."""

    channel: int
    start: float
    end: float
    words: tuple[StreamWord, ...]
    is_final: bool
    speech_final: bool = False
    from_finalize: bool = False

    @property
    def confidence(self) -> float:
        """exp of the mean log-probability behind the words: Whisper's own certainty."""
        if not self.words:
            return 0.0
        mean = sum(w.logprob for w in self.words) / len(self.words)
        return round(min(1.0, math.exp(mean)), 4)


@dataclass(frozen=True)
class SpeechStarted:
    channel: int
    timestamp: float  # where the speech begins


@dataclass(frozen=True)
class UtteranceEnd:
    channel: int
    last_word_end: float


StreamEvent = StreamResult | SpeechStarted | UtteranceEnd

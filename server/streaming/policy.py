"""The commit policy: which decoded words become final, as pure functions over word lists.

Finals are immutable, so a word may only be committed once the decoder has stopped changing its
mind about it. For utterances that end at a pause, the endpoint decides (the whole utterance is
decoded once more and committed). For long monologues with no pause, words are committed
piecewise by *local agreement*: two consecutive decodes of the growing window must agree on a
prefix of words, and only agreed words that end comfortably before the audio's edge are
committed (the last word or two of any decode is often cut or misheard). This is the idea of
LocalAgreement-2 from the whisper_streaming paper (Macháček et al., 2023), written here on
absolute word times.

All times are seconds on the stream clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.deepgram.response import normalize
from server.engine import Word

# A word this close to the end of the decoded audio may still change: never commit it early.
EDGE_MARGIN_S = 1.0


@dataclass(frozen=True)
class TimedWord:
    """A decoded word on the stream clock, with the segment statistics it came from."""

    word: Word
    avg_logprob: float
    tokens: int

    @property
    def key(self) -> str:
        return normalize(self.word.text)

    @property
    def start(self) -> float:
        return self.word.start

    @property
    def end(self) -> float:
        return self.word.end


def after(words: Sequence[TimedWord], committed_until: float) -> list[TimedWord]:
    """Words not yet committed: those whose middle lies after the committed edge.

    Re-decoding a window that starts inside the last committed word can yield that word again
    (or its tail); the midpoint rule drops such echoes without losing a word that merely
    starts a few milliseconds early.
    """
    return [w for w in words if (w.start + w.end) / 2 > committed_until and w.key]


def agreed_prefix(previous: Sequence[TimedWord], current: Sequence[TimedWord]) -> int:
    """How many leading words two consecutive hypotheses share (compared as normalised text)."""
    count = 0
    for old, new in zip(previous, current, strict=False):
        if old.key != new.key:
            break
        count += 1
    return count


def stable_commit(
    previous: Sequence[TimedWord],
    current: Sequence[TimedWord],
    audio_end: float,
    margin_s: float = EDGE_MARGIN_S,
) -> list[TimedWord]:
    """The words of `current` that may be committed now: agreed and clear of the audio edge."""
    agreed = current[: agreed_prefix(previous, current)]
    out: list[TimedWord] = []
    for word in agreed:
        if word.end > audio_end - margin_s:
            break
        out.append(word)
    return out


def forced_commit(
    current: Sequence[TimedWord], audio_end: float, margin_s: float = EDGE_MARGIN_S * 2
) -> list[TimedWord]:
    """When agreement never comes and the window must shrink: keep all but the edge words."""
    return [w for w in current if w.end <= audio_end - margin_s]


def cut_point(committed: Sequence[TimedWord], rest: Sequence[TimedWord]) -> float:
    """Where to start the next window: in the gap after the last committed word."""
    last_end = committed[-1].end
    if rest and rest[0].start > last_end:
        return (last_end + rest[0].start) / 2
    return last_end


def endpoint_silence_ms(endpointing_ms: int | None, vad_min_ms: int, disabled_ms: int) -> int:
    """Silence that closes an utterance.

    Deepgram's default `endpointing` is 10 ms, but Silero's probability dips between words and
    at stop consonants for longer than that, so a floor (`vad_min_ms`) keeps utterances whole.
    With endpointing disabled, utterances still close at longer pauses (`disabled_ms`) so finals
    keep coming, but none is marked `speech_final`.
    """
    if endpointing_ms is None:
        return max(disabled_ms, vad_min_ms)
    return max(endpointing_ms, vad_min_ms)

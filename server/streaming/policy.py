"""Which decoded words a result may show, as pure functions over word lists (stream seconds).

Finals tile the stream: each covers [start, end) and is never changed or sent twice, so every
word must land in exactly one of them. A word belongs to the final that holds its midpoint.
Decodes overlap at every seam (a final's decode reads audio past a cut, the next one reads
seconds of left context), so both sides see a word at the seam whole; but two decodes may time
the same word a little differently, and a midpoint that moves across the seam would lose the
word (neither takes it) or repeat it (both do). So the left seam is settled by text first: a
decode that repeats the last committed words (same words at about the same times: an *echo*)
continues right after them, whatever its times say; only without an echo do midpoints decide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from server.streaming.results import StreamWord

# How far a word's time may move between two decodes of the same audio and still be the same.
ECHO_WINDOW_S = 0.6
# An echo repeats committed words, which lie before the seam: its last word's midpoint must
# not be later than this past the seam (a new word that happens to repeat one is not an echo).
ECHO_REACH_S = 0.3
ECHO_WORDS = 5  # the longest committed tail looked for


def echo_end(
    words: Sequence[StreamWord], committed: Sequence[StreamWord], seam: float
) -> int | None:
    """Index just past the words that repeat the committed tail, or None when none do.

    The longest tail (up to `ECHO_WORDS`) found as consecutive words of `words`, each within
    `ECHO_WINDOW_S` of the committed word's time, wins; among equal matches, the closest in time.
    """
    tail = list(committed[-ECHO_WORDS:])
    for n in range(len(tail), 0, -1):
        keys = [w.key for w in tail[-n:]]
        best: tuple[float, int] | None = None
        for i in range(len(words) - n + 1):
            run = words[i : i + n]
            if [w.key for w in run] != keys or run[-1].mid > seam + ECHO_REACH_S:
                continue
            drift = max(abs(a.mid - b.mid) for a, b in zip(run, tail[-n:], strict=True))
            if drift <= ECHO_WINDOW_S and (best is None or drift < best[0]):
                best = (drift, i + n)
        if best is not None:
            return best[1]
    return None


def owned(
    words: Sequence[StreamWord],
    start: float,
    end: float = math.inf,
    committed: Sequence[StreamWord] = (),
    since: float | None = None,
) -> list[StreamWord]:
    """The words of one decode that belong to the result covering [start, end).

    `committed` are the words already final before `start` (the newest last). `since` (at
    most `start`) is where the last final that decoded speech ended: the empty finals that
    answered the silence after it claimed no words, so a word this decode times into that
    silence (Whisper often starts the first word after a long pause early) is still this
    result's. Words kept are clamped into [start, end], so a result's words never stray
    outside it.
    """
    seam = start if since is None else min(since, start)
    words = [w for w in words if w.key]  # a lone punctuation mark is not a word
    first = echo_end(words, committed, seam)
    if first is None:
        first = next((i for i, w in enumerate(words) if w.mid >= seam), len(words))
    return [_clamp(w, start, end) for w in words[first:] if w.mid < end]


def _clamp(word: StreamWord, start: float, end: float) -> StreamWord:
    if start <= word.start and word.end <= end:
        return word
    lo = min(max(word.start, start), end)
    return replace(word, start=lo, end=min(max(word.end, lo), end))


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

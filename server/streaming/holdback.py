"""One channel's results held back while the number they end in is still being said.

Redaction must see a whole number to recognise it, and a stream cuts its finals at pauses:
a card number read in groups lands in several finals, none of which holds enough digits to
be a card. So, given a rule that says where words end inside an undecided number
(`deepgram.text.holdback.undecided_from` for redaction), this sits between a channel and the
protocol: an interim shows only the decided words, and a final that ends inside such a
number goes out without it; its words wait and open the next final, so the number is judged
whole and its redaction goes out once. What decides a held number: the next final's words,
a final with no words after `release_silence_s` of silence, a Finalize, the end of the stream
(`finish`), or the held words reaching `max_hold_s` (a count that never ends still ends).

The invariants hold: every word is in exactly one final, finals are never changed or sent
twice, times stay on the stream clock, and the finals still tile the stream (a held part
starts where the part sent before it ends). With no rule given (no redaction), nothing is
ever held and every event passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from server.streaming.results import StreamEvent, StreamResult, StreamWord, UtteranceEnd

# words -> index of the first word of the undecided number they end in, or None
Undecided = Callable[[Sequence[StreamWord]], int | None]

RELEASE_SILENCE_S = 2.0  # longer than people pause between the groups of a number
MAX_HOLD_S = 30.0


class Holdback:
    def __init__(
        self,
        undecided: Undecided,
        release_silence_s: float = RELEASE_SILENCE_S,
        max_hold_s: float = MAX_HOLD_S,
        provisional: Undecided | None = None,
    ) -> None:
        self._undecided = undecided
        # Interims are a greedy guess: their rule may be stricter than the finals' one.
        self._provisional = provisional or undecided
        self._release_silence_s = release_silence_s
        self._max_hold_s = max_hold_s
        self.held: StreamResult | None = None  # final words not sent yet
        self._deferred: list[StreamEvent] = []  # UtteranceEnds that must follow the held words

    def push(self, event: StreamEvent) -> list[StreamEvent]:
        """What to send now for `event` (possibly nothing, possibly held words too)."""
        if isinstance(event, StreamResult):
            return self._final(event) if event.is_final else self._interim(event)
        if isinstance(event, UtteranceEnd) and self.held is not None:
            self._deferred.append(event)
            return []
        return [event]

    def finish(self) -> list[StreamEvent]:
        """The stream ended: the held words go out as a final of their own."""
        out: list[StreamEvent] = [] if self.held is None else [self.held]
        out += self._deferred
        self.held, self._deferred = None, []
        return out

    def _interim(self, event: StreamResult) -> list[StreamEvent]:
        if self.held is not None:
            event = replace(event, start=self.held.start, words=self.held.words + event.words)
        cut = self._provisional(event.words)
        if cut is None:
            return [event]
        if cut == 0:
            return []  # all of it is undecided: nothing to show yet
        return [replace(event, words=event.words[:cut])]

    def _final(self, event: StreamResult) -> list[StreamEvent]:
        held, self.held = self.held, None
        if held is not None:
            event = replace(
                event,
                start=held.start,
                words=held.words + event.words,
                speech_final=event.speech_final or (held.speech_final and not event.words),
            )
        cut = None if self._decided(event, held) else self._undecided(event.words)
        if cut is not None and event.end - event.words[cut].start > self._max_hold_s:
            cut = None
        if cut is None:
            out, self._deferred = [event, *self._deferred], []
            return out
        at = min(max(event.words[cut].start, event.start), event.end) if cut else event.start
        self.held = replace(event, start=at, words=event.words[cut:])
        if cut == 0:
            return []
        sent = replace(
            event, end=at, words=event.words[:cut], speech_final=False, from_finalize=False
        )
        return [sent]

    def _decided(self, event: StreamResult, held: StreamResult | None) -> bool:
        if event.from_finalize:
            return True
        if held is None or not held.words or event.words[len(held.words) :]:
            return False
        return event.end - held.words[-1].end >= self._release_silence_s

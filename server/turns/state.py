"""The Flux turn state machine: what a stream's results and pauses mean as turns. Pure, no I/O.

A turn is a run of finals (the v1 transcript owner's, so every word is in exactly one of them)
from its first words to the final that closes it. What comes in, in stream order:

- `heard(at)`: the endpointer has heard the stream up to `at` (an `Update` every
  `update_every_s` of audio while a turn is open);
- `interim(words)` / `final(words, ...)`: the words of the open utterance, and the finals;
- `judged(verdict, ...)`: a pause was judged (the words the pause's final would add are known
  by then, so the verdict and the transcript it is sent with agree);
- `speech_resumed()`, `force_end()`, `finish()` (CloseStream).

What goes out are `TurnEvent`s in Deepgram's order: StartOfTurn -> Update* -> [EagerEndOfTurn
-> (TurnResumed -> Update*) | EndOfTurn] -> EndOfTurn, then the next `turn_index`. A turn
starts when it has its first words (a cough never opens one), an `EndOfTurn` after an
`EagerEndOfTurn` carries the same transcript unless a `TurnResumed` came first, and after
`finish()` the open turn's words go out in a last `Update` (Flux sends no `EndOfTurn` for
CloseStream).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from server.streaming.results import StreamWord
from server.turns.judge import Verdict

UPDATE_EVERY_S = 0.25


class Phase(enum.Enum):
    IDLE = "idle"  # no turn open (between turns, or words yet to come)
    OPEN = "open"  # StartOfTurn sent
    EAGER = "eager"  # EagerEndOfTurn sent; speech resuming is TurnResumed
    ENDING = "ending"  # judged over: waiting for the final that closes it


@dataclass(frozen=True)
class TurnEvent:
    event: str  # StartOfTurn | Update | EagerEndOfTurn | TurnResumed | EndOfTurn
    turn_index: int
    start: float  # audio_window_start (s, stream clock)
    end: float  # audio_window_end
    words: tuple[StreamWord, ...]
    confidence: float  # end_of_turn_confidence
    trigger: str | None = None  # EndOfTurn only: model | timeout | manual


class Turns:
    def __init__(self, update_every_s: float = UPDATE_EVERY_S) -> None:
        self.update_every_s = update_every_s
        self.index = 0
        self.phase = Phase.IDLE
        self.start = 0.0  # where the turn's audio window starts: the last turn's end
        self._heard = 0.0
        self._next_update = 0.0
        self._finals: list[StreamWord] = []  # the turn's final words so far
        self._hypothesis: tuple[StreamWord, ...] = ()  # the open utterance's latest words
        self._eager: tuple[StreamWord, ...] | None = None  # what EagerEndOfTurn said
        self._confidence = 0.0
        self._trigger: str | None = None  # why the turn is ending, once known
        self._early: tuple[StreamWord, ...] = ()  # the next turn's words, while this one ends

    # --- what the turn says now ---------------------------------------------------------------
    @property
    def words(self) -> tuple[StreamWord, ...]:
        if self.phase is Phase.EAGER and self._eager is not None:
            return self._eager
        return (*self._finals, *self._hypothesis)

    @property
    def words_final(self) -> tuple[StreamWord, ...]:
        """The turn's words that are final already."""
        return tuple(self._finals)

    def _event(self, name: str, words: Sequence[StreamWord] | None = None, **extra) -> TurnEvent:
        shown = self.words if words is None else tuple(words)
        end = extra.pop("end", self._heard)
        return TurnEvent(
            name, self.index, self.start, max(end, self.start), shown, self._confidence, **extra
        )

    def _open(self, out: list[TurnEvent]) -> None:
        """A turn opens with its first words."""
        if self.phase is Phase.IDLE and self.words:
            self.phase = Phase.OPEN
            self._next_update = self._heard + self.update_every_s
            out.append(self._event("StartOfTurn"))

    # --- inputs -------------------------------------------------------------------------------
    def heard(self, at: float) -> list[TurnEvent]:
        self._heard = max(self._heard, at)
        if self.phase in (Phase.OPEN, Phase.EAGER) and self._heard >= self._next_update:
            self._next_update = self._heard + self.update_every_s
            return [self._event("Update")]
        return []

    def interim(self, words: Sequence[StreamWord]) -> list[TurnEvent]:
        """The open utterance's latest decode (owned words only)."""
        if self.phase is Phase.ENDING:
            self._early = tuple(words)  # the next turn's: this one's last final is on its way
            return []
        self._hypothesis = tuple(words)
        out: list[TurnEvent] = []
        self._open(out)
        return out

    def speech_resumed(self) -> list[TurnEvent]:
        """Speech again after a pause: an eager end of turn is withdrawn."""
        if self.phase is Phase.ENDING:
            return []
        self._confidence = 0.0
        if self.phase is Phase.EAGER:
            self.phase = Phase.OPEN
            self._eager = None
            return [self._event("TurnResumed")]
        return []

    def judged(
        self,
        verdict: Verdict,
        confidence: float,
        preview: Sequence[StreamWord],
        timed_out: bool = False,
    ) -> list[TurnEvent]:
        """A pause judged; `preview` is what the pause's final will add to the turn's finals.
        END means the caller has closed the utterance (its final will close the turn)."""
        if self.phase is Phase.ENDING:
            return []
        self._confidence = confidence
        out: list[TurnEvent] = []
        if self.phase is not Phase.EAGER:
            self._hypothesis = tuple(preview)
            self._open(out)
        if verdict is Verdict.END:
            self._trigger = "timeout" if timed_out else "model"
            if self.phase is not Phase.IDLE:  # wordless (a cough): no turn to end
                self.phase = Phase.ENDING
        elif verdict is Verdict.EAGER and self.phase is Phase.OPEN:
            self._eager = self.words
            self.phase = Phase.EAGER
            out.append(self._event("EagerEndOfTurn"))
        return out

    def force_end(self) -> None:
        """ForceEndTurn: the final the flush brings closes the turn, as `manual`."""
        if self.phase is not Phase.ENDING:
            self._trigger = "manual"

    def final(
        self, words: Sequence[StreamWord], end: float, closing: bool, manual: bool = False
    ) -> list[TurnEvent]:
        """A final result (in stream order). `closing`: it ends the turn (an endpoint, a
        judged end, a ForceEndTurn flush); otherwise the turn goes on past it (a cut)."""
        self._finals.extend(words)
        if not closing:
            if self.phase is not Phase.ENDING:
                self._hypothesis = ()
            out: list[TurnEvent] = []
            if self.phase is not Phase.ENDING:
                self._open(out)
            return out
        self._hypothesis = ()
        out = []
        eager = self._eager
        if self.phase is Phase.EAGER:
            self.phase = Phase.OPEN  # `words` is now the finals
        self._open(out)
        if self.phase is not Phase.IDLE:
            if eager is not None and tuple(self._finals) != eager:
                out.append(self._event("TurnResumed"))
            trigger = self._trigger or ("manual" if manual else "timeout")
            out.append(self._event("EndOfTurn", end=end, trigger=trigger))
            self.index += 1
        self._reset(end)
        early, self._early = self._early, ()
        if early:
            out.extend(self.interim(early))
        return out

    def finish(self) -> list[TurnEvent]:
        """CloseStream, after the last finals: the open turn's words in a last Update."""
        self._hypothesis = ()
        if self.phase is Phase.EAGER:
            self.phase = Phase.OPEN
        out: list[TurnEvent] = []
        self._open(out)
        if self.phase is not Phase.IDLE:
            out.append(self._event("Update"))
        return out

    def _reset(self, end: float) -> None:
        self.phase = Phase.IDLE
        self.start = max(self.start, end)
        self._finals = []
        self._hypothesis = ()
        self._eager = None
        self._confidence = 0.0
        self._trigger = None

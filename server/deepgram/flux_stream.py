"""Deepgram Flux over the stream runner: turns, judged at pauses by smart-turn and the text.

The runner and its channel are v1's (same engine, same finals, same transcript owner); this
adapter turns what they produce into Flux messages through the pure turn state machine
(`server/turns/state.py`). At each pause the channel announces (every ~0.1 s of it), the
pause is judged (`server/turns/judge.py`): on the pause's first announcement the channel is
held while the turn's audio is scored by `TurnModel` (on a thread) and the words the pause's
final decode adds are awaited (that decode started when the pause did, so `EndOfTurn` waits
for no decode that could have started earlier); later announcements re-judge with the same
score as the silence grows. Holding the endpointer makes every turn boundary a function of the
audio alone, however fast the score and the decode come back.

A pause judged mid-turn past `SEGMENT_AFTER_S` closes its utterance as a final that does not
end the turn (the decode started at the pause is that final), and the pause goes on being
judged (`Quiet`) with no utterance open: each pause then waits for a decode of the phrase
before it (with the usual left context), never of the whole turn so far, and Updates decode
only the phrase being spoken. A turn judged over in such a pause ends with an empty final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from server.deepgram import flux, live
from server.deepgram.flux_params import (
    MODEL_MULTI,
    ParamError,
    check_thresholds,
    threshold_value,
)
from server.deepgram.params import ParamLimits, _language, configure_keyterms
from server.deepgram.text import TextOptions
from server.errors import KeytermLimitExceeded, ServiceError
from server.streaming.channel import Channel, Heard
from server.streaming.endpointer import Event, Paused, Quiet, Resumed, Started
from server.streaming.results import StreamEvent, StreamResult, StreamWord
from server.streaming.session import Adapter, Control, Failure
from server.turns.judge import SCORE_AFTER_S, Judgement, Thresholds, Verdict, judge
from server.turns.model import TurnModel
from server.turns.state import TurnEvent, Turns
from server.vad import SAMPLE_RATE

log = logging.getLogger(__name__)

SCORED_S = 8.0  # smart-turn reads the last 8 s of the turn
# Silence after which a pause judged mid-turn closes its utterance (a final that does not end
# the turn): past the first judgement (SCORE_AFTER_S), so a turn judged over at once still
# ends with the final of its last phrase.
SEGMENT_AFTER_S = 0.3
CONTEXT_WORDS = 16
CODES: dict[Failure, str] = {
    "idle": "NET-0001",
    "keepalive": "NET-0001",
    "data": "DATA-0000",
    "internal": "INTERNAL_SERVER_ERROR",
    "incomplete": "INCOMPLETE",
    "client": "UNPARSABLE_CLIENT_MESSAGE",
}
HELD_BACK = {"StartOfTurn", "Update", "TurnResumed"}  # a turn still open (redaction)
CONFIGURE_FIELDS = {
    "type",
    "thresholds",
    "keyterms",
    "language_hints",
    "numerals",
    "profanity_filter",
}


@dataclass(frozen=True)
class FluxSpec:
    request_id: str
    model: str  # as the client named it (flux-general-en, flux-general-multi, ...)
    text: TextOptions
    thresholds: Thresholds
    limits: ParamLimits
    keyterms: tuple[str, ...] = ()
    language_hints: tuple[str, ...] = ()
    multilingual_model: bool = False  # the served model can decode other languages
    warnings: tuple[dict[str, str], ...] = ()
    # eot_timeout_ms -> the endpointer's own close, a backstop past the judge's timeout
    backstop_ms: int = 1000


@dataclass
class _Pause:
    window: tuple[int, int]
    score: float
    words: tuple[StreamWord, ...]  # what its final adds to the turn, until that final is in
    segmented: bool = False  # its utterance was closed mid-turn


@dataclass
class _Said:
    words: deque[StreamWord] = field(default_factory=lambda: deque(maxlen=CONTEXT_WORDS))


class FluxAdapter(Adapter):
    known_types = flux.KNOWN_TYPES
    numbered = True

    def __init__(self, spec: FluxSpec, model: TurnModel) -> None:
        self.spec = spec
        self.model = model
        self.text = spec.text
        self.thresholds = spec.thresholds
        self.keyterms = list(spec.keyterms)
        self.language_hints = list(spec.language_hints)
        self.turns = Turns()
        self._pause: _Pause | None = None
        self._judging: set[asyncio.Task] = set()
        self._said = _Said()
        self._refusal = ""

    # --- out ---------------------------------------------------------------------------------
    def _send(self, events: list[TurnEvent]) -> None:
        detected = self.session.detected(0) if self.session.channels else None
        text = self.text
        if detected and detected != text.language:
            text = replace(text, language=detected)
        for event in events:
            shown = event
            if text.redact and event.event in HELD_BACK:
                # Redaction: an open turn shows no number that may still grow (as v1 interims).
                cut = live.undecided_from(event.words, text, provisional=True)
                if cut is not None:
                    shown = replace(event, words=event.words[:cut])
            self.session.put(
                flux.turn_info(
                    shown,
                    request_id=self.spec.request_id,
                    text=text,
                    context=tuple(self._said.words),
                    languages=[detected or text.language] if self._reports_language else (),
                )
            )
            if event.event == "EndOfTurn":
                self._said.words.extend(event.words)

    @property
    def _reports_language(self) -> bool:
        return self.spec.model.strip().lower() == MODEL_MULTI

    def opened(self) -> None:
        self.session.put(flux.connected(self.spec.request_id))
        for notice in self.spec.warnings:
            self.session.put(
                flux.warning(
                    self.spec.request_id,
                    notice["type"].upper(),
                    f"{notice['parameter']}: {notice['message']}",
                )
            )

    # --- what the channel produces -------------------------------------------------------------
    def result(self, event: StreamEvent) -> None:
        if not isinstance(event, StreamResult):
            return
        if not event.is_final:
            self._send(self.turns.interim(event.words))
            return
        closing = event.speech_final or event.from_finalize
        pause = self._pause
        if closing:
            self._pause = None
        elif pause is not None and pause.segmented and event.end * SAMPLE_RATE >= pause.window[1]:
            pause.words = ()  # the pause's own final: its words are the turn's finals now
        self._send(self.turns.final(event.words, event.end, closing, manual=event.from_finalize))

    def endpoint(self, channel: Channel, event: Event | Heard) -> None:
        match event:
            case Heard(position):
                self._send(self.turns.heard(position / SAMPLE_RATE))
            case Started() | Resumed():
                self._pause = None
                self._send(self.turns.speech_resumed())
            case Paused(window, at, silence):
                self._paused(channel, window, at, silence / SAMPLE_RATE)
            case Quiet(window, _, silence):
                pause = self._pause
                if pause is None or pause.window != window:  # unscored: only the timeout ends it
                    pause = self._pause = _Pause(window, 0.0, (), segmented=True)
                self._apply(channel, pause, silence / SAMPLE_RATE)

    def _paused(self, channel: Channel, window: tuple[int, int], at: int, silence: float) -> None:
        if silence < SCORE_AFTER_S:
            return
        pause = self._pause
        if pause is not None and pause.window == window:
            self._apply(channel, pause, silence)
            return
        task = asyncio.ensure_future(self._first_judgement(channel, window, at, silence))
        self._judging.add(task)
        task.add_done_callback(self._judging.discard)
        channel.hold(task)

    async def _first_judgement(
        self, channel: Channel, window: tuple[int, int], at: int, silence: float
    ) -> None:
        """Score the turn's audio and learn the pause's words, then judge (the channel is
        held meanwhile: no later frame is endpointed until this is done)."""
        try:
            begin = max(int(self.turns.start * SAMPLE_RATE), at - int(SCORED_S * SAMPLE_RATE))
            audio = channel.audio(begin, at)
            scoring = asyncio.to_thread(self._score, audio)
            score, words = await asyncio.gather(scoring, channel.pause_words(window))
            pause = _Pause(window, score, tuple(words or ()))
            self._pause = pause
            self._apply(channel, pause, silence)
        except asyncio.CancelledError:
            raise
        except Exception:  # a judgement that cannot be made waits for the timeout
            log.exception("end-of-turn judgement failed")

    def _score(self, audio: np.ndarray) -> float:
        return self.model.score(audio) if len(audio) else 0.0

    def _apply(self, channel: Channel, pause: _Pause, silence: float) -> None:
        words = (*self.turns.words_final, *pause.words)
        transcript, _ = flux.shaped(words, self.text)
        verdict: Judgement = judge(pause.score, silence, transcript, self.thresholds)
        if verdict.verdict is Verdict.END and not channel.end_utterance():
            verdict = replace(verdict, verdict=Verdict.WAIT)
        elif (
            verdict.verdict is not Verdict.END
            and silence >= SEGMENT_AFTER_S
            and not pause.segmented
            and channel.end_utterance(closing=False)
        ):
            pause.segmented = True
        self._send(
            self.turns.judged(verdict.verdict, verdict.confidence, pause.words, verdict.timed_out)
        )

    # --- controls ----------------------------------------------------------------------------
    async def control(self, message: Any, text: str) -> Control:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "CloseStream":
            return "close"
        if kind == "ForceEndTurn":
            self.turns.force_end()
            await self.session.flush(list(self.session.channels), from_finalize=True)
            return "continue"
        if kind == "Configure":
            self._configure(message)
            return "continue"
        self._refusal = (
            "expected a JSON text message with a 'type' of Configure, ForceEndTurn or "
            f"CloseStream; got {text[:200]!r}"
        )
        return "refuse"  # the Error comes after the last results, then the close

    def _configure(self, message: dict[str, Any]) -> None:
        """All or nothing: a bad field fails the whole message and changes nothing; omitted
        fields keep their values. Exactly one answer per Configure."""
        request_id = self.spec.request_id
        try:
            unknown = sorted(set(message) - CONFIGURE_FIELDS)
            if unknown:
                raise ParamError(f"Configure cannot change: {', '.join(unknown)[:200]}")
            thresholds = self.thresholds
            if "thresholds" in message:
                given = message["thresholds"]
                if not isinstance(given, dict) or set(given) - {
                    "eot_threshold",
                    "eager_eot_threshold",
                    "eot_timeout_ms",
                }:
                    raise ParamError(
                        "'thresholds' takes eot_threshold, eager_eot_threshold, eot_timeout_ms"
                    )
                changes = {
                    name: None
                    if value is None and name == "eager_eot_threshold"
                    else threshold_value(name, value)
                    for name, value in given.items()
                }
                thresholds = check_thresholds(replace(thresholds, **changes))
            keyterms = self.keyterms
            if "keyterms" in message:
                keyterms = configure_keyterms(message["keyterms"], self.spec.limits)
            hints = self.language_hints
            if "language_hints" in message:
                if self.spec.model.strip().lower() != MODEL_MULTI:
                    raise ParamError(f"language_hints are only available with {MODEL_MULTI}")
                given = message["language_hints"]
                if not isinstance(given, list) or not all(isinstance(h, str) for h in given):
                    raise ParamError("'language_hints' takes a list of language codes")
                hints = [_language(h) for h in given]
            text = self.text
            for name in ("numerals", "profanity_filter"):
                if name in message:
                    if not isinstance(message[name], bool):
                        raise ParamError(f"'{name}' takes true or false")
                    text = replace(text, **{name: message[name]})
        except (ParamError, ServiceError, ValueError) as exc:
            code = (
                "CONFIGURE_KEYTERM_LIMIT_EXCEEDED"
                if isinstance(exc, KeytermLimitExceeded)
                else "CONFIGURE_INVALID"
            )
            self.session.put(live.configure_failure(request_id, code, str(exc)[:500]))
            return
        self._apply_configuration(thresholds, keyterms, hints, text)
        self.session.put(
            flux.configure_success(
                request_id,
                thresholds,
                keyterms,
                text.numerals,
                hints if self.spec.model.strip().lower() == MODEL_MULTI else None,
            )
        )

    def _apply_configuration(
        self, thresholds: Thresholds, keyterms: list[str], hints: list[str], text: TextOptions
    ) -> None:
        session = self.session
        config = session.config
        hotwords = " ".join(keyterms) or None
        final = replace(config.final_options, hotwords=hotwords)
        if hints != self.language_hints and self.spec.multilingual_model:
            language = hints[0].split("-")[0] if len(hints) == 1 else ""
            final = replace(final, language=language)
        config = replace(
            config,
            final_options=final,
            interim_options=replace(
                config.interim_options, hotwords=hotwords, language=final.language
            ),
            endpoint_ms=thresholds.eot_timeout_ms + self.spec.backstop_ms,
        )
        session.reconfigure(config)
        self.thresholds, self.keyterms, self.language_hints, self.text = (
            thresholds,
            keyterms,
            hints,
            text,
        )

    # --- ends --------------------------------------------------------------------------------
    def failure(self, kind: Failure, description: str) -> dict[str, Any] | None:
        if kind == "client":
            description = self._refusal
        return flux.error(CODES[kind], description)

    def closing(self) -> list[dict[str, Any]]:
        """CloseStream: no EndOfTurn (as Flux), the open turn's words in a last Update."""
        self._send(self.turns.finish())
        return []

    def closed(self) -> None:
        for task in list(self._judging):
            task.cancel()
        with contextlib.suppress(Exception):
            self._judging.clear()

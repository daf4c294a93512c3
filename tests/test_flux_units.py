"""Flux without a server: the turn state machine, its messages, the query and Configure rules."""

from __future__ import annotations

import numpy as np
import pytest

from server.deepgram import flux
from server.deepgram.flux_params import parse_flux
from server.deepgram.params import ParamError
from server.deepgram.text import TextOptions
from server.streaming.endpointer import (
    PAUSE_FRAMES,
    Closed,
    Endpointer,
    EndpointerConfig,
    Paused,
    Started,
)
from server.streaming.results import StreamWord
from server.turns.judge import Verdict
from server.turns.state import TurnEvent, Turns
from server.vad import FRAME
from tests.flux_helpers import assert_no_word_twice, check_order, turn_words


def words(*items: tuple[str, float]) -> tuple[StreamWord, ...]:
    return tuple(StreamWord(f" {t}", at, at + 0.3, 0.9, -0.1) for t, at in items)


def wire(events: list[TurnEvent]) -> list[dict]:
    text = TextOptions(punctuate=True)
    out = [flux.connected("r")]
    out += [flux.turn_info(e, request_id="r", text=text) for e in events]
    return [{**m, "sequence_id": i} for i, m in enumerate(out)]


def test_a_turn_opens_with_words_updates_on_the_audio_clock_and_ends_once():
    turns = Turns()
    out = turns.heard(0.5)
    assert out == []  # no words, no turn
    out += turns.interim(words(("book", 1.0)))
    out += turns.heard(1.2) + turns.heard(1.3) + turns.heard(1.5)
    out += turns.judged(Verdict.WAIT, 0.3, words(("book", 1.0), ("a", 1.4)))
    out += turns.judged(Verdict.END, 0.9, words(("book", 1.0), ("a", 1.4), ("flight", 1.6)))
    out += turns.heard(2.4)  # ending: no Update while its last final is on the way
    out += turns.final(words(("book", 1.0), ("a", 1.4), ("flight", 1.6)), 2.5, closing=True)
    names = [e.event for e in out]
    assert names == ["StartOfTurn", "Update", "Update", "EndOfTurn"]  # at 1.2 and 1.5 s
    assert out[-1].trigger == "model" and out[-1].end == 2.5 and turns.index == 1
    ends = check_order(wire(out))
    assert [w["word"] for w in ends[0]["words"]] == ["Book", "a", "flight"]


def test_eager_then_end_carries_the_eager_text_and_resumed_withdraws_it():
    turns = Turns()
    first = words(("i", 0.5), ("need", 0.8))
    out = turns.interim(first)
    out += turns.judged(Verdict.EAGER, 0.6, first)
    out += turns.heard(2.0)  # an Update while eager shows the eager text
    out += turns.speech_resumed()
    more = (*first, *words(("help", 2.5)))
    out += turns.interim(more)
    out += turns.judged(Verdict.EAGER, 0.6, more)
    out += turns.judged(Verdict.END, 0.8, more)
    out += turns.final(more, 3.2, closing=True)
    names = [e.event for e in out]
    assert names == [
        "StartOfTurn",
        "EagerEndOfTurn",
        "Update",
        "TurnResumed",
        "EagerEndOfTurn",
        "EndOfTurn",
    ]
    ends = check_order(wire(out))
    assert ends[0]["transcript"] == "I need help"


def test_a_final_that_differs_from_the_eager_text_is_announced_by_turn_resumed():
    turns = Turns()
    guess = words(("hello", 0.2))
    out = turns.judged(Verdict.EAGER, 0.6, guess)
    out += turns.judged(Verdict.END, 0.8, guess)
    out += turns.final(words(("yellow", 0.2)), 1.0, closing=True)
    assert [e.event for e in out] == ["StartOfTurn", "EagerEndOfTurn", "TurnResumed", "EndOfTurn"]
    check_order(wire(out))


def test_a_turn_spans_cuts_and_the_next_turns_words_wait_for_its_end():
    turns = Turns()
    out = turns.final(words(("one", 0.1), ("two", 0.5)), 1.0, closing=False)  # a cut
    out += turns.interim(words(("three", 1.2)))
    out += turns.judged(Verdict.END, 0.9, words(("three", 1.2)))
    out += turns.interim(words(("next", 2.0)))  # the next turn's, before this one's final
    out += turns.final(words(("three", 1.2)), 1.8, closing=True)
    out += turns.final(words(("next", 2.0), ("please", 2.3)), 3.0, closing=False)
    out += turns.finish()  # CloseStream: the open turn's words in a last Update
    assert [e.event for e in out] == [
        "StartOfTurn",
        "EndOfTurn",
        "StartOfTurn",
        "Update",
    ]
    log = wire(out)
    ends = check_order(log)
    assert ends[0]["transcript"] == "One two three"
    assert [[w["word"] for w in t] for t in turn_words(log)] == [
        ["One", "two", "three"],
        ["Next", "please"],
    ]
    assert_no_word_twice(turn_words(log))


def test_timeout_manual_and_wordless_turns():
    turns = Turns()
    out = turns.judged(Verdict.END, 0.2, words(("so", 0.1)), timed_out=True)
    out += turns.final(words(("so", 0.1)), 5.5, closing=True)
    assert out[-1].trigger == "timeout"
    turns.force_end()
    out += turns.final(words(("stop", 6.0)), 6.5, closing=True, manual=True)
    assert out[-1].trigger == "manual"
    # a cough: judged over, nothing decoded -> no turn at all
    before = len(out)
    out += turns.judged(Verdict.END, 0.9, ())
    out += turns.final((), 8.0, closing=True)
    assert len(out) == before and turns.index == 2
    check_order(wire(out))


def test_the_endpointer_announces_a_growing_pause_and_closes_where_the_turn_is_judged_over():
    config = EndpointerConfig(0.5, 5000, True, 20.0, pause_every_frames=3)
    endpointer = Endpointer(config)
    events = endpointer.push(np.array([0.9] * 20 + [0.0] * (PAUSE_FRAMES + 7)))
    assert isinstance(events[0], Started)
    pauses = [e for e in events if isinstance(e, Paused)]
    assert [p.silence // FRAME for p in pauses] == [
        PAUSE_FRAMES,
        PAUSE_FRAMES + 3,
        PAUSE_FRAMES + 6,
    ]
    assert len({p.window for p in pauses}) == 1
    span = endpointer.end_utterance()
    assert span is not None and span.speech_final and span.window == pauses[0].window
    assert endpointer.end_utterance() is None
    assert not any(isinstance(e, Closed) for e in endpointer.push(np.zeros(10)))


@pytest.mark.parametrize(
    "query",
    [
        "eot_threshold=0.4",
        "eot_threshold=1.1",
        "eot_threshold=nan",
        "eager_eot_threshold=0.2",
        "eager_eot_threshold=0.95",
        "eot_threshold=0.6&eager_eot_threshold=0.7",
        "eot_timeout_ms=499",
        "eot_timeout_ms=60001",
        "eot_timeout_ms=1000.5",
        "encoding=flac&sample_rate=16000",
        "encoding=linear16&sample_rate=22050",
        "encoding=linear16",
        "redact=pci",
        "language_hint=es",
        "numerals=maybe",
    ],
)
def test_flux_query_values_outside_the_reference_are_refused(query):
    with pytest.raises(ParamError):
        parse_flux([tuple(item.split("=", 1)) for item in query.split("&")])


def test_flux_query_defaults_and_ranges():
    params = parse_flux([])
    assert (params.model, params.thresholds.eot_threshold, params.thresholds.eot_timeout_ms) == (
        "flux-general-en",
        0.7,
        5000,
    )
    assert params.thresholds.eager_eot_threshold is None
    params = parse_flux(
        [
            ("model", "flux-general-multi"),
            ("eot_threshold", "1.0"),
            ("eager_eot_threshold", "0.3"),
            ("eot_timeout_ms", "60000"),
            ("language_hint", "es"),
            ("redact", "numbers"),
            ("keyterm", "Deepgram"),
            ("mip_opt_out", "true"),
            ("frobnicate", "1"),
        ]
    )
    listen = params.listen()
    assert listen.language == "es" and listen.keyterms == ["Deepgram"]
    assert listen.redact == {"numbers"}
    assert [n.parameter for n in params.warnings] == ["frobnicate"]


def test_turn_text_is_shaped_as_v1_and_rest_shape_it():
    """numerals, profanity_filter and redact read the same on a turn as on a v1 result."""
    spoken = words(("call", 0.0), ("me", 0.4), ("at", 0.8), ("twenty", 1.2), ("five", 1.6))
    event = TurnEvent("EndOfTurn", 0, 0.0, 2.0, spoken, 0.9, "model")
    plain = flux.turn_info(event, request_id="r", text=TextOptions(punctuate=True))
    digits = flux.turn_info(event, request_id="r", text=TextOptions(punctuate=True, numerals=True))
    said = ("my", "number", "is", "five", "five", "five", "one", "two", "three", "four")
    number = TurnEvent(
        "EndOfTurn", 0, 0.0, 5.0, words(*[(w, i * 0.4) for i, w in enumerate(said)]), 0.9, "model"
    )
    hidden = flux.turn_info(
        number, request_id="r", text=TextOptions(punctuate=True, redact=frozenset({"numbers"}))
    )
    assert plain["transcript"] == "Call me at twenty five"
    assert digits["transcript"] == "Call me at 25"
    assert hidden["transcript"] == "My number is [NUMERICAL_PII_1]"
    assert plain["trigger"] == "model" and all(w["start"] < w["end"] for w in plain["words"])

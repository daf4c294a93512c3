"""Flux without a server: the turn state machine, its messages, the query and Configure rules."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.deepgram import flux
from server.deepgram.flux_params import parse_flux
from server.deepgram.flux_stream import FluxAdapter, FluxSpec
from server.deepgram.params import ParamError, param_limits
from server.deepgram.text import TextOptions
from server.settings import Settings
from server.streaming.channel import LEFT_CONTEXT, Channel
from server.streaming.endpointer import (
    PAUSE_FRAMES,
    PRE_ROLL,
    SPEECH_PAD,
    Closed,
    Endpointer,
    EndpointerConfig,
    Paused,
    Quiet,
    Started,
)
from server.streaming.results import StreamWord
from server.turns.judge import Thresholds, Verdict
from server.turns.state import TurnEvent, Turns
from server.vad import FRAME, SAMPLE_RATE
from tests.flux_helpers import assert_no_word_twice, check_order, turn_words
from tests.test_ws_seams import ScriptedDecoder, Timeline, TimelineVad, stream_config


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


def test_a_turn_made_of_several_segments_ends_with_all_its_words_once():
    """Pauses judged mid-turn close their phrase as a final that does not end the turn; the
    judged end then comes in the silence, with an empty closing final."""
    turns = Turns()
    out = turns.interim(words(("book", 0.2)))
    out += turns.judged(Verdict.WAIT, 0.1, words(("book", 0.2), ("a", 0.6)))
    out += turns.final(words(("book", 0.2), ("a", 0.6)), 1.3, closing=False)  # segment 1
    out += turns.heard(1.6)
    out += turns.interim(words(("flight", 1.8)))
    out += turns.judged(Verdict.WAIT, 0.2, words(("flight", 1.8), ("to", 2.2)))
    out += turns.final(words(("flight", 1.8), ("to", 2.2)), 2.9, closing=False)  # segment 2
    out += turns.judged(Verdict.WAIT, 0.3, ())  # the silence after it, judged again
    out += turns.interim(words(("boston", 3.2)))
    out += turns.judged(Verdict.WAIT, 0.4, words(("boston", 3.2)))
    # its END comes before its segment's final is in (the final is on its way)
    out += turns.judged(Verdict.END, 0.8, words(("boston", 3.2)))
    out += turns.final(words(("boston", 3.2)), 4.0, closing=False)  # segment 3
    out += turns.final((), 4.6, closing=True)  # the silence's empty final ends the turn
    log = wire(out)
    ends = check_order(log)
    assert [e.event for e in out].count("EndOfTurn") == 1
    assert ends[0]["transcript"] == "Book a flight to boston"
    assert ends[0]["audio_window_end"] == 4.6
    assert_no_word_twice(turn_words(log))
    assert [w["word"] for w in turn_words(log)[0]] == ["Book", "a", "flight", "to", "boston"]


def test_the_endpointer_closes_a_phrase_mid_turn_and_goes_on_judging_its_silence():
    config = EndpointerConfig(0.5, 5000, True, 20.0, pause_every_frames=3)
    endpointer = Endpointer(config)
    events = endpointer.push(np.array([0.9] * 20 + [0.0] * (PAUSE_FRAMES + 3)))
    pauses = [e for e in events if isinstance(e, Paused)]
    span = endpointer.end_utterance(closing=False)  # judged mid-turn
    assert span is not None and not span.speech_final and span.window == pauses[0].window
    assert endpointer.open_start is None and endpointer.end_utterance(closing=False) is None
    # the silence goes on being announced on the same grid, with the same window
    quiet = [e for e in endpointer.push(np.zeros(6)) if isinstance(e, Quiet)]
    assert [q.silence // FRAME for q in quiet] == [PAUSE_FRAMES + 6, PAUSE_FRAMES + 9]
    assert {q.window for q in quiet} == {span.window}
    # a blip (too short to be speech) pauses the announcements, then they go on
    events = endpointer.push(np.array([0.9] * 2 + [0.0] * (PAUSE_FRAMES + 6)))
    assert not any(isinstance(e, Started) for e in events)
    after = [e.silence // FRAME for e in events if isinstance(e, Quiet)]
    assert after and after[0] >= PAUSE_FRAMES + 11 + PAUSE_FRAMES  # none while it sounded
    assert all((n - PAUSE_FRAMES) % 3 == 0 for n in after)  # the same grid
    # speech again: the next phrase's window starts at the segment, not at the turn's start
    events = endpointer.push(np.array([0.9] * 10 + [0.0] * PAUSE_FRAMES))
    assert isinstance(events[0], Started)
    assert not any(isinstance(e, Quiet) for e in events)
    second = next(e for e in events if isinstance(e, Paused))
    assert second.window[0] >= span.end
    segment = endpointer.end_utterance(closing=False)
    endpointer.push(np.zeros(4))
    # judged over in the silence: an empty final that ends the turn, then no more ticks
    end = endpointer.end_utterance()
    assert end is not None and end.window is None and end.speech_final
    assert segment is not None and end.start == segment.end and end.end == endpointer.boundary
    assert endpointer.end_utterance() is None
    assert not any(isinstance(e, Quiet) for e in endpointer.push(np.zeros(12)))


class _Model:
    """smart-turn's stand-in: a doubtful score, so only the growing silence ends a turn."""

    def score(self, audio: np.ndarray) -> float:
        return 0.05


class _Session:
    def __init__(self) -> None:
        self.log: list[dict] = []
        self.channels: list[Channel] = []

    def put(self, message: dict) -> None:
        self.log.append({**message, "sequence_id": len(self.log)})

    def detected(self, channel: int) -> str | None:
        return None


def phrases(*lengths: float, gap: float = 0.6, tail: float = 3.0) -> Timeline:
    """One turn: phrases of 0.4 s words, `gap` of silence between them, then `tail`."""
    out, t, n = [], 0.5, 0
    for length in lengths:
        end = t + length
        while t + 0.4 <= end + 1e-9:
            out.append((f"w{chr(97 + n % 26)}{chr(97 + n // 26)}", t, t + 0.4))  # no numerals
            n, t = n + 1, t + 0.45
        t = end + gap
    return Timeline(tuple(out), t - gap + tail)


async def flux_drive(timeline: Timeline, decoder: ScriptedDecoder) -> list[dict]:
    """The real adapter over the real channel: the timeline at any speed, then CloseStream."""
    settings = Settings()
    spec = FluxSpec("r", "flux-general-en", TextOptions(), Thresholds(), param_limits(settings))
    adapter = FluxAdapter(spec, _Model())  # type: ignore[arg-type]
    session = _Session()
    adapter.attach(session)  # type: ignore[arg-type]
    adapter.opened()
    config = stream_config(
        interim_results=True,
        endpoint_ms=6000,
        vad_events=False,
        interim_step_s=1.0,
        max_utterance_s=20.0,
        pause_every_frames=3,
    )
    channel = Channel(
        0,
        config,
        decoder,
        adapter.result,
        lambda _: 0.0,
        vad=TimelineVad(timeline),
        on_endpoint=lambda event: adapter.endpoint(channel, event),
        retain_s=8.5,
    )
    session.channels.append(channel)
    audio = timeline.audio()
    for at in range(0, len(audio), 1600):
        channel.feed(audio[at : at + 1600])
        await asyncio.sleep(0)
    await channel.drain()
    await asyncio.wait_for(channel.flush(from_finalize=False), 30)
    adapter.closing()
    await channel.close()
    adapter.closed()
    return session.log


def test_a_turn_of_several_phrases_is_decoded_phrase_by_phrase_and_ends_once():
    """Each pause judged mid-turn decodes only the phrase before it (plus left context), never
    the turn so far; the turn still ends once, with every word once, at the same place of the
    audio however fast the decoder is."""
    timeline = phrases(2.5, 2.5, 2.5, 2.5, 2.5)
    said = [text for text, _, _ in timeline.words]
    longest = LEFT_CONTEXT / SAMPLE_RATE + 2.5 + (PRE_ROLL + SPEECH_PAD) / SAMPLE_RATE
    decided = []
    for delay in (0.0, 0.05):
        decoder = ScriptedDecoder(timeline, delay=delay, seed=4)
        log = asyncio.run(flux_drive(timeline, decoder))
        ends = check_order(log)
        assert len(ends) == 1 and ends[0]["trigger"] == "model", [e["transcript"] for e in ends]
        assert [w["word"].lower() for w in turn_words(log)[0]] == said
        assert_no_word_twice(turn_words(log))
        # the turn is 14 s long; no final decode read more than one phrase and its context
        assert len(decoder.finals) >= 5
        assert max(end - start for start, end in decoder.finals) <= longest + 0.01
        decided.append(ends[0]["audio_window_end"])
    assert decided[0] == decided[1]
    assert 1.0 < decided[0] - timeline.words[-1][2] < 3.0  # judged in the silence


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

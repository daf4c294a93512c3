"""The streaming state machine without a socket or a model: synthetic VAD and word timelines.

The endpointer (VAD probabilities -> events), the word-ownership policy, the transcript owner
and the channel driver are each driven here with made-up timelines. The channel runs against a
scripted decoder that reads *positions* out of the audio (each sample's value is its index on
the stream clock), drops any word its window cuts off, and shifts its times a little per window,
as real decodes of overlapping windows do. Every spoken word must then land in exactly one
final, whatever the cuts, the chunk sizes or the decoder's speed.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, replace

import numpy as np
import pytest

from server.engine import DecodeOptions
from server.streaming import policy
from server.streaming.buffer import SampleBuffer
from server.streaming.channel import Channel
from server.streaming.config import StreamConfig
from server.streaming.endpointer import (
    CUT_CONTEXT,
    PAUSE_FRAMES,
    PRE_ROLL,
    SPEECH_PAD,
    Closed,
    Cut,
    Endpointer,
    EndpointerConfig,
    Paused,
    Resumed,
    Span,
    Started,
)
from server.streaming.results import StreamResult, StreamWord, UtteranceEnd
from server.streaming.transcript import Transcript
from server.vad import FRAME, SAMPLE_RATE

SR = SAMPLE_RATE


# --- the sample buffer -----------------------------------------------------------------------


def test_buffer_appends_trims_and_windows_like_one_long_array():
    rng = np.random.default_rng(3)
    whole = rng.normal(size=SR * 50).astype(np.float32)
    buffer = SampleBuffer(capacity=SR)
    at = 0
    for size in itertools.cycle([7, 512, 1600, 333, 16000]):
        if at >= len(whole):
            break
        buffer.append(whole[at : at + size])
        at = min(at + size, len(whole))
        buffer.trim(at - 3 * SR)  # keep the last 3 s
        begin = max(buffer.start, at - 2 * SR - 5)
        np.testing.assert_array_equal(buffer.window(begin, at), whole[begin:at])
    assert buffer.end == len(whole) and len(buffer) == 3 * SR
    # Trimmed audio is gone, windows are clipped to what is held, and are copies.
    window = buffer.window(0, buffer.start + 10)
    assert len(window) == 10
    window[:] = 0
    assert buffer.window(buffer.start, buffer.start + 10).any()
    # The array grows with what is held, not with what was ever received.
    assert len(buffer._data) <= 8 * SR


# --- the endpointer --------------------------------------------------------------------------

CONFIG = EndpointerConfig(threshold=0.5, endpoint_ms=300, speech_final=True, max_utterance_s=6)


def frames(*pieces: tuple[float, float]) -> np.ndarray:
    """Per-frame probabilities: (seconds, probability) pieces in order."""
    return np.concatenate([np.full(round(s * SR / FRAME), p, np.float32) for s, p in pieces])


def test_endpointer_opens_pauses_and_closes_on_the_audio():
    ep = Endpointer(CONFIG)
    events = ep.push(frames((1.0, 0.05), (2.0, 0.9), (1.0, 0.05)))
    kinds = [type(e) for e in events]
    assert kinds == [Started, Paused, Closed]
    started, paused, closed = events
    first_speech = round(1.0 * SR / FRAME) * FRAME
    assert started.at == first_speech
    span = closed.span
    speech_end = first_speech + round(2.0 * SR / FRAME) * FRAME
    # The paused window is exactly the window the final decodes.
    assert paused.window == span.window == (first_speech - PRE_ROLL, speech_end + SPEECH_PAD)
    assert span.start == 0 and span.speech_final
    assert span.end == speech_end + CONFIG.silence_frames * FRAME == ep.boundary
    assert ep.open_start is None and not ep.in_speech


def test_endpointer_forgets_blips_and_voids_a_pause_when_speech_resumes():
    ep = Endpointer(CONFIG)
    assert ep.push(frames((0.5, 0.05), (0.1, 0.9), (1.0, 0.05))) == []  # a click
    assert ep.boundary == 0
    short_pause = (PAUSE_FRAMES + 1) * FRAME / SR
    events = ep.push(frames((1.0, 0.9), (short_pause, 0.05), (1.0, 0.9), (1.0, 0.05)))
    assert [type(e) for e in events] == [Started, Paused, Resumed, Paused, Closed]
    assert events[1].window != events[4].span.window == events[3].window


def test_long_speech_is_cut_at_its_quietest_moment_the_same_however_it_arrives():
    rng = np.random.default_rng(5)
    probs = np.clip(rng.normal(0.9, 0.03, round(20 * SR / FRAME)), 0, 1).astype(np.float32)
    probs[140:143] = 0.3  # a breath 4.5 s in: inside the first cut's search range (3-5 s)
    whole = [e for e in Endpointer(CONFIG).push(probs)]
    ep = Endpointer(CONFIG)
    pieces = []
    for i in range(0, len(probs), 7):
        pieces += ep.push(probs[i : i + 7])
    assert pieces == whole  # cut positions depend on the audio, not on how it was chunked
    cuts = [e.span for e in whole if isinstance(e, Cut)]
    assert len(cuts) >= 3
    assert cuts[0].end == 141 * FRAME + FRAME // 2  # the middle of the smoothed dip
    for before, after in itertools.pairwise(cuts):
        assert after.start == before.end
        assert 3 * SR <= after.end - after.speech_start <= 6 * SR
    for span in cuts:
        assert span.decode_end == span.end + CUT_CONTEXT  # decoded past the cut
        assert not span.speech_final


def test_long_silence_is_closed_into_empty_spans_that_keep_the_next_pre_roll():
    """Deepgram answers silence with empty finals: silence_final_s of it since the last span
    closes into a span with nothing to decode, ending a pre-roll short of the frame that
    closed it, so speech right after still opens with its full pre-roll."""
    config = replace(CONFIG, silence_final_s=3.0)
    ep = Endpointer(config)
    events = ep.push(frames((7.0, 0.05), (1.0, 0.9), (0.5, 0.05)))
    closed = [e.span for e in events if isinstance(e, Closed)]
    silent = [s for s in closed if s.window is None]
    assert len(silent) == 2 and closed[-1].window is not None  # 0-3 s, 3-6 s, then the speech
    for before, after in itertools.pairwise(closed):
        assert after.start == before.end
    assert silent[0].start == 0 and 3 * SR <= silent[0].end < 3 * SR + FRAME
    assert not silent[0].speech_final
    first_speech = round(7.0 * SR / FRAME) * FRAME
    assert closed[-1].window[0] == first_speech - PRE_ROLL  # the pre-roll is whole
    # Silence as long but with speech in it never closes empty; 0 turns the feature off.
    assert not [e for e in Endpointer(CONFIG).push(frames((20.0, 0.05))) if isinstance(e, Closed)]


def test_flush_finalises_whatever_is_open():
    ep = Endpointer(CONFIG)
    ep.push(frames((1.0, 0.05), (1.0, 0.9)))
    span = ep.flush(2 * SR + 100)
    first_speech = round(SR / FRAME) * FRAME
    assert span.window == (first_speech - PRE_ROLL, 2 * SR + 100) and span.start == 0
    assert ep.flush(3 * SR) == replace(
        span, start=span.end, end=3 * SR, speech_start=None, decode_end=3 * SR
    )
    assert ep.open_start is None and ep.boundary == 3 * SR


def test_a_long_murmur_that_never_becomes_speech_is_dropped():
    ep = Endpointer(CONFIG)
    # Between the two thresholds: never confirmed, never closed by silence.
    assert ep.push(frames((30.0, 0.4))) == []
    assert ep.earliest_needed > 20 * SR  # nothing holds old audio


# --- word ownership --------------------------------------------------------------------------


def w(text: str, start: float, end: float) -> StreamWord:
    return StreamWord(f" {text}", start, end, 0.9, -0.2)


def keys(words) -> list[str]:
    return [x.key for x in words]


def test_each_word_goes_to_the_result_holding_its_midpoint():
    words = [w("a", 0.0, 0.4), w("b", 0.5, 1.1), w("c", 1.2, 1.6)]
    assert keys(policy.owned(words, 0.0, 0.9)) == ["a", "b"]  # b's middle is 0.8
    second = policy.owned(words, 0.9, 5.0)
    assert keys(second) == ["c"]
    first = policy.owned(words, 0.0, 0.7)
    assert keys(first) == ["a"]
    straddling = policy.owned(words, 0.7, 5.0)
    assert keys(straddling) == ["b", "c"] and straddling[0].start == 0.7  # clamped into it


def test_a_word_straddling_a_cut_is_final_once_whichever_side_times_it():
    cut = 2.0
    # Decode 1 reads past the cut and times "celebrating" just before it.
    first = [w("worth", 1.0, 1.4), w("celebrating", 1.5, 2.4)]  # middle 1.95
    final1 = policy.owned(first, 0.0, cut)
    assert keys(final1) == ["worth", "celebrating"]
    # Decode 2 (left context) times it a little later: its middle crosses the cut.
    second = [w("worth", 1.05, 1.45), w("celebrating", 1.62, 2.5), w("the", 2.5, 2.6)]
    assert keys(policy.owned(second, cut, 9.0, final1)) == ["the"]
    # The other way round: decode 1 put it after the cut, decode 2 before.
    final1 = policy.owned(second, 0.0, cut)
    assert keys(final1) == ["worth"]
    assert keys(policy.owned([*first, w("the", 2.5, 2.6)], cut, 9.0, final1)) == [
        "celebrating",
        "the",
    ]


def test_an_echo_is_the_same_words_at_the_same_time_not_a_repeated_word():
    committed = [w("of", 9.0, 9.2), w("the", 9.3, 9.5)]
    # "the ... the": the speaker says it again after the seam: not an echo.
    again = [w("of", 9.0, 9.2), w("the", 9.3, 9.5), w("the", 10.2, 10.4), w("end", 10.5, 10.8)]
    assert keys(policy.owned(again, 9.8, 20.0, committed)) == ["the", "end"]
    assert keys(policy.owned(again[2:], 9.8, 20.0, committed)) == ["the", "end"]
    # Decoded differently ("off" for "of") and no echo of the last word: midpoints decide.
    other = [w("off", 9.0, 9.2), w("a", 9.3, 9.5), w("end", 10.5, 10.8)]
    assert keys(policy.owned(other, 9.8, 20.0, committed)) == ["end"]


def test_lone_punctuation_is_no_word():
    assert policy.owned([w("...", 1.0, 1.2), w("yes", 1.3, 1.5)], 0.0) == [w("yes", 1.3, 1.5)]


# --- the transcript owner --------------------------------------------------------------------


def test_transcript_tiles_finals_and_times_utterance_end():
    ep = Endpointer(CONFIG)
    (_, _, closed) = ep.push(frames((1.0, 0.05), (2.0, 0.9), (1.0, 0.05)))
    transcript = Transcript(channel=1)
    interim = transcript.interim(0, 2 * SR, [w("hello", 1.0, 1.5)])
    assert interim is not None and not interim.is_final and interim.start == 0
    final = transcript.final(closed.span, [w("hello", 1.0, 1.5), w("there", 1.6, 2.9)], False)
    assert final.is_final and final.speech_final and final.channel == 1
    assert keys(final.words) == ["hello", "there"] and transcript.cursor == closed.span.end
    assert transcript.hypothesis == ()
    with pytest.raises(ValueError):
        transcript.final(closed.span, [], False)  # not the next span
    assert transcript.utterance_end(3.5, 1.0, settled=True) is None  # too soon
    assert transcript.utterance_end(4.0, 1.0, settled=False) is None  # a final is pending
    assert transcript.utterance_end(4.0, 1.0, settled=True) == UtteranceEnd(1, 2.9)
    assert transcript.utterance_end(9.0, 1.0, settled=True) is None  # once


def test_a_word_timed_into_the_silence_of_empty_finals_is_kept_by_the_next():
    """Empty finals answer silence but claim no words: a word the next decode times early,
    into that silence (Whisper often starts the first word after a long pause too soon), is
    still the next final's, clamped to its start. (With the last final's words in its left
    context the echo rule keeps it anyway; past 4 s of silence there is no echo to find.)"""
    transcript = Transcript(channel=0)
    spoken = Span(0, 2 * SR, int(0.7 * SR), int(1.8 * SR), True)
    assert keys(transcript.final(spoken, [w("hello", 1.0, 1.4)], False).words) == ["hello"]
    transcript.final(Span(2 * SR, 5 * SR, None, 5 * SR), [], False)  # 3 s of silence
    span = Span(5 * SR, 8 * SR, int(5.2 * SR), int(7.0 * SR), True)
    decoded = [w("again", 4.2, 4.6), w("there", 6.0, 6.4)]
    assert transcript.interim(span.start, 7 * SR, decoded) is not None
    assert keys(transcript.hypothesis) == ["again", "there"]
    final = transcript.final(span, decoded, False)
    assert keys(final.words) == ["again", "there"]
    assert final.words[0].start == final.words[0].end == 5.0  # clamped into its final


# --- the channel driver, against a scripted decoder ------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """Words on the stream clock; speech is wherever a word is."""

    words: tuple[tuple[str, float, float], ...]
    duration: float

    def audio(self) -> np.ndarray:
        """Each sample holds its own index: the decoder reads positions back from it."""
        return np.arange(int(self.duration * SR), dtype=np.float32)

    def prob(self, t: float) -> float:
        return 0.9 if any(s <= t < e for _, s, e in self.words) else 0.02


def conversation(seed: int, turns: int = 14) -> Timeline:
    """Bursts of words with pauses: some long enough to endpoint, some just short of it."""
    rng = random.Random(seed)
    words, t, n = [], 0.7, 0
    for _ in range(turns):
        for _ in range(rng.randint(1, 9)):
            length = rng.uniform(0.15, 0.6)
            words.append((f"w{n}", t, t + length))
            n += 1
            t += length + rng.choice([0.0, 0.03, 0.08, 0.2])
        t += rng.choice([0.25, 0.33, 0.4, 0.7, 1.5])
    return Timeline(tuple(words), t + 1.0)


def monologue(seconds: float) -> Timeline:
    """Speech with no pause at all: every cut falls inside a word."""
    words, t, n = [], 0.5, 0
    while t < seconds - 1:
        words.append((f"w{n}", t, t + 0.37))
        n, t = n + 1, t + 0.37
    return Timeline(tuple(words), seconds)


class TimelineVad:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.seen = 0
        self.done = 0  # frames answered

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        self.seen += len(samples)
        out = []
        while (self.done + 1) * FRAME <= self.seen:
            out.append(self.timeline.prob((self.done + 0.5) * FRAME / SR))
            self.done += 1
        return np.asarray(out, np.float32)


class ScriptedDecoder:
    """Returns the timeline's words wholly inside the window (a word the window cuts off is
    lost, as a truncated word often is), shifted by up to ±90 ms depending on the window."""

    def __init__(self, timeline: Timeline, delay: float = 0.0, seed: int = 0) -> None:
        self.timeline = timeline
        self.delay = delay
        self.rng = random.Random(seed)
        self.finals: list[tuple[float, float]] = []
        self.due: list[float] = []  # each final's due_in_s
        self.gate: asyncio.Event | None = None

    def _words(self, audio: np.ndarray) -> list[StreamWord]:
        if not len(audio):
            return []
        first, last = float(audio[0]) / SR, (float(audio[-1]) + 1) / SR
        shift = ((int(audio[0]) // FRAME) % 7 - 3) * 0.03
        return [
            StreamWord(f" {text}", s - first + shift, e - first + shift, 0.9, -0.1)
            for text, s, e in self.timeline.words
            if first <= s and e <= last
        ]

    async def _wait(self) -> None:
        if self.delay:
            await asyncio.sleep(self.rng.uniform(0, self.delay))
        if self.gate is not None:
            await self.gate.wait()

    async def final(
        self, audio: np.ndarray, config: StreamConfig, due_in_s: float = 0.0
    ) -> list[StreamWord]:
        self.finals.append((float(audio[0]) / SR, (float(audio[-1]) + 1) / SR))
        self.due.append(due_in_s)
        await self._wait()
        return self._words(audio)

    async def interim(self, audio: np.ndarray, config: StreamConfig) -> list[StreamWord]:
        await self._wait()
        return self._words(audio)


def stream_config(**changes) -> StreamConfig:
    options = DecodeOptions()
    base = StreamConfig(
        model="tiny.en",
        interim_results=False,
        endpoint_ms=300,
        speech_final=True,
        utterance_end_ms=None,
        vad_events=True,
        vad_threshold=0.5,
        interim_step_s=0.5,
        max_utterance_s=6.0,
        final_options=options,
        interim_options=options,
    )
    return replace(base, **changes)


def timeline_channel(
    timeline: Timeline,
    out: list,
    decoder: ScriptedDecoder | None = None,
    config: StreamConfig | None = None,
) -> Channel:
    """A channel hearing `timeline` (its VAD and, unless given, its decoder), emitting to `out`."""
    return Channel(
        0,
        config or stream_config(),
        decoder or ScriptedDecoder(timeline),
        out.append,
        lambda _: 0.0,
        vad=TimelineVad(timeline),
    )


async def drive(
    timeline: Timeline,
    decoder: ScriptedDecoder,
    chunk: int = 1600,
    config: StreamConfig | None = None,
    pace: float = 0.0,
    script: dict[int, str] | None = None,
) -> list:
    """Feed the timeline's audio in chunks (sending 'finalize' after the chunk numbers in
    `script`), close the stream, and return everything the channel emitted."""
    out: list = []
    channel = timeline_channel(timeline, out, decoder, config)
    audio = timeline.audio()
    for n, at in enumerate(range(0, len(audio), chunk)):
        channel.feed(audio[at : at + chunk])
        await asyncio.sleep(pace)
        if script and script.get(n) == "finalize":
            channel.flush(from_finalize=True)
    await asyncio.wait_for(channel.flush(from_finalize=False), 30)
    await channel.close()
    return out


def finals_of(events: list) -> list[StreamResult]:
    return [e for e in events if isinstance(e, StreamResult) and e.is_final]


def assert_every_word_once(timeline: Timeline, events: list) -> list[StreamResult]:
    finals = finals_of(events)
    said = [text for text, _, _ in timeline.words]
    heard = [x.key for f in finals for x in f.words]
    assert heard == said, [(f.start, f.end, keys(f.words)) for f in finals]
    for before, after in itertools.pairwise(finals):
        assert after.start == before.end  # finals tile the stream
    for final in finals:
        assert all(final.start <= x.start <= x.end <= final.end for x in final.words)
    return finals


@pytest.mark.parametrize("seed", range(6))
def test_conversation_every_word_in_exactly_one_final(seed):
    timeline = conversation(seed)
    events = asyncio.run(drive(timeline, ScriptedDecoder(timeline)))
    finals = assert_every_word_once(timeline, events)
    assert any(f.speech_final for f in finals)


def test_monologue_cut_inside_words_every_word_in_exactly_one_final():
    timeline = monologue(40.0)
    decoder = ScriptedDecoder(timeline)
    finals = assert_every_word_once(timeline, asyncio.run(drive(timeline, decoder)))
    cut = [f for f in finals if not f.speech_final and f.words]
    assert len(cut) >= 6 and max(f.end - f.start for f in finals) <= 6.0
    # A cut final's decode reads past its end, so the word across the cut is heard whole.
    windows = decoder.finals  # no pause in a monologue: no early decodes, one per final
    spoken = [f for f in finals if f.words]  # the silent tail's empty final decodes nothing
    assert len(windows) == len(spoken) and not finals[-1].words
    assert all(end >= f.end + 0.99 for (_, end), f in zip(windows, cut, strict=False))


def _summary(events: list) -> list[tuple]:
    return [(f.start, f.end, f.speech_final, keys(f.words)) for f in finals_of(events)]


def test_same_audio_same_finals_at_any_speed_and_chunking():
    """A slow decoder (far behind the audio) and a fast one give identical finals."""
    timeline = conversation(11, turns=10)
    mono = monologue(20.0)
    fast = asyncio.run(drive(timeline, ScriptedDecoder(timeline)))
    slow = asyncio.run(drive(timeline, ScriptedDecoder(timeline, delay=0.05, seed=1), chunk=333))
    paced = asyncio.run(
        drive(timeline, ScriptedDecoder(timeline, delay=0.01, seed=2), chunk=5000, pace=0.002)
    )
    assert _summary(fast) == _summary(slow) == _summary(paced)
    interims = stream_config(interim_results=True)
    a = asyncio.run(drive(mono, ScriptedDecoder(mono), config=interims))
    b = asyncio.run(drive(mono, ScriptedDecoder(mono, delay=0.03), chunk=800, config=interims))
    assert _summary(a) == _summary(b)


def test_interims_precede_their_final_and_share_its_start():
    timeline = monologue(14.0)
    events = asyncio.run(
        drive(
            timeline,
            ScriptedDecoder(timeline),
            config=stream_config(interim_results=True),
            pace=0.001,
        )
    )
    results = [e for e in events if isinstance(e, StreamResult)]
    assert any(not r.is_final for r in results)
    final_starts = [r.start for r in results if r.is_final]
    seen_final: set[float] = set()
    for r in results:
        if r.is_final:
            seen_final.add(r.start)
        else:
            assert r.start in final_starts and r.start not in seen_final


def test_finalize_just_after_an_endpoint_marks_that_final_not_an_empty_one():
    timeline = Timeline((("hello", 0.5, 0.9), ("there", 1.0, 1.4), ("again", 3.0, 3.4)), 4.5)

    async def go() -> list:
        decoder = ScriptedDecoder(timeline)
        decoder.gate = asyncio.Event()  # the final's decode is still running at Finalize
        out: list = []
        channel = Channel(
            0, stream_config(), decoder, out.append, lambda _: 0.0, vad=TimelineVad(timeline)
        )
        audio = timeline.audio()
        channel.feed(audio[: int(2.2 * SR)])  # "hello there", then the endpoint
        flushed = channel.flush(from_finalize=True)
        decoder.gate.set()
        await asyncio.wait_for(flushed, 5)
        channel.feed(audio[int(2.2 * SR) : int(3.6 * SR)])  # "again", utterance still open
        await asyncio.wait_for(channel.flush(from_finalize=True), 5)
        channel.feed(audio[int(3.6 * SR) :])
        await asyncio.wait_for(channel.flush(from_finalize=True), 5)  # over silence
        await channel.close()
        return out

    finals = finals_of(asyncio.run(go()))
    assert [(keys(f.words), f.from_finalize) for f in finals] == [
        (["hello", "there"], True),
        (["again"], True),
        ([], True),
    ]
    assert finals[0].speech_final and finals[0].end == 2.2  # took the flush over, to its end
    assert [f.start for f in finals[1:]] == [finals[0].end, finals[1].end]


@pytest.mark.parametrize(
    ("endpoint_ms", "decide_after_s", "due"),
    [
        (800, None, 0.8 - PAUSE_FRAMES * FRAME / SR),
        (300, None, 0.3 - PAUSE_FRAMES * FRAME / SR),
        (5000, 0.2, 0.0),
    ],
)
def test_a_pause_final_is_due_when_the_pause_will_be_decided(endpoint_ms, decide_after_s, due):
    """The final decoded at a pause carries when the stream will first use it: v1 at its
    endpoint, Flux at its first judgement (0.2 s, before the 0.224 s pause is even announced)."""
    timeline = Timeline((("hello", 0.5, 0.9), ("there", 1.0, 1.4)), 3.5)
    decoder = ScriptedDecoder(timeline)
    config = stream_config(endpoint_ms=endpoint_ms, decide_after_s=decide_after_s)
    asyncio.run(drive(timeline, decoder, config=config))
    assert decoder.due[0] == pytest.approx(due, abs=0.04)


def test_the_end_of_a_stream_over_silence_is_answered_by_an_empty_final():
    """Deepgram's last Results after CloseStream reaches the end of the audio, so a client's
    transcript cursor (`start + duration`) ends where the Metadata's `duration` does: the
    silence after the last endpoint gets an empty final. A stream whose finals already end
    where its audio does gets nothing more."""
    timeline = Timeline((("hello", 0.5, 0.9), ("there", 1.0, 1.4)), 3.5)
    finals = finals_of(asyncio.run(drive(timeline, ScriptedDecoder(timeline))))
    assert [(keys(f.words), f.speech_final, f.from_finalize) for f in finals] == [
        (["hello", "there"], True, False),
        ([], False, False),
    ]
    assert finals[1].start == finals[0].end and finals[1].end == 3.5

    async def closed_twice() -> list:
        out: list = []
        channel = timeline_channel(timeline, out)
        channel.feed(timeline.audio())
        await asyncio.wait_for(channel.flush(from_finalize=False), 5)
        await asyncio.wait_for(channel.flush(from_finalize=False), 5)  # nothing new since
        await channel.close()
        return out

    assert [f.end for f in finals_of(asyncio.run(closed_twice()))] == [finals[0].end, 3.5]


def test_silence_is_answered_by_empty_finals_and_speech_after_it_loses_nothing():
    """With `silence_final_s`, 7 s of silence before speech gets two empty finals (never a
    speech_final), the finals still tile the stream, and the words after keep every word."""
    timeline = Timeline((("hello", 7.2, 7.6), ("there", 7.7, 8.2), ("again", 15.0, 15.5)), 16.0)
    events = asyncio.run(
        drive(timeline, ScriptedDecoder(timeline), config=stream_config(silence_final_s=3.0))
    )
    finals = assert_every_word_once(timeline, events)
    shape = [(bool(f.words), f.speech_final) for f in finals]
    # 0-3 and 3-6 s empty; the greeting; the 6.5 s after its endpoint in empty finals;
    # "again"; and the stream's end (the endpoint's silence to 16 s) in an empty final.
    empty, spoken = (False, False), (True, True)
    assert shape == [empty, empty, spoken, empty, empty, spoken, empty], shape
    assert all(f.end - f.start <= 3.1 for f in finals if not f.words)


def test_channel_forgets_audio_over_long_silence():
    """An hour of silence keeps the channel's buffer small and opens no utterance."""
    silence = Timeline((), 600.0)

    async def go() -> tuple[int, list]:
        out: list = []
        channel = timeline_channel(silence, out)
        chunk = np.zeros(SR * 10, np.float32)
        for _ in range(60):
            channel.feed(chunk)
        held = len(channel._buffer._data)
        await channel.close()
        return held, out

    held, out = asyncio.run(go())
    assert held <= 32 * SR and out == []


class GatedFinals(ScriptedDecoder):
    """Finals wait for the gate; interims answer at once and are recorded."""

    def __init__(self, timeline: Timeline) -> None:
        super().__init__(timeline)
        self.gate = asyncio.Event()
        self.interims: list[float] = []  # where each interim window ended (stream seconds)

    async def final(
        self, audio: np.ndarray, config: StreamConfig, due_in_s: float = 0.0
    ) -> list[StreamWord]:
        await self.gate.wait()
        return self._words(audio)

    async def interim(self, audio: np.ndarray, config: StreamConfig) -> list[StreamWord]:
        self.interims.append((float(audio[-1]) + 1) / SR)
        return self._words(audio)


def test_no_interim_runs_beside_the_channels_own_final():
    """On two cores an interim decoded beside a final takes half the final's threads, so the
    next utterance's interims wait until the final is out (then they resume)."""
    said = [(f"a{i}", 0.5 + 0.4 * i, 0.85 + 0.4 * i) for i in range(3)]
    said += [(f"b{i}", 2.2 + 0.4 * i, 2.55 + 0.4 * i) for i in range(12)]
    timeline = Timeline(tuple(said), 8.0)

    async def go() -> tuple[list[float], list[float]]:
        decoder = GatedFinals(timeline)
        channel = Channel(
            0,
            stream_config(interim_results=True, max_utterance_s=20.0),
            decoder,
            lambda _: None,
            lambda _: 0.0,
            vad=TimelineVad(timeline),
        )
        audio = timeline.audio()
        for at in range(0, int(5.0 * SR), 1600):  # the first final is held back meanwhile
            channel.feed(audio[at : at + 1600])
            await asyncio.sleep(0.002)
        held = list(decoder.interims)
        decoder.gate.set()
        for at in range(int(5.0 * SR), len(audio), 1600):
            channel.feed(audio[at : at + 1600])
            await asyncio.sleep(0.002)
        await asyncio.wait_for(channel.flush(from_finalize=False), 5)
        await channel.close()
        return held, decoder.interims

    held, everything = asyncio.run(go())
    first_endpoint = said[2][2] + 0.3
    assert held and all(end <= first_endpoint for end in held), held  # none past the endpoint
    assert any(end > 5.0 for end in everything)  # they resume once the final is out


def test_backlog_counts_the_speech_a_pending_final_must_decode_not_the_silence_before_it():
    timeline = Timeline((("late", 18.0, 18.5), ("words", 18.6, 19.1)), 21.0)

    async def go() -> float:
        decoder = GatedFinals(timeline)
        channel = Channel(
            0, stream_config(), decoder, lambda _: None, lambda _: 0.0, vad=TimelineVad(timeline)
        )
        channel.feed(timeline.audio())  # the endpoint is in, its final is still decoding
        backlog = channel.backlog_s
        decoder.gate.set()
        await asyncio.wait_for(channel.flush(from_finalize=False), 5)
        await channel.close()
        return backlog

    assert 2.0 < asyncio.run(go()) < 3.5  # from the speech (~17.7 s with pre-roll) to 21 s


def test_a_failing_channel_tells_its_session_instead_of_going_quiet():
    """A bug in the driver must end the stream with an error, never leave it waiting forever
    for finals that will not come."""
    timeline = Timeline((("hello", 0.5, 0.9), ("there", 1.0, 1.4)), 3.0)
    failures: list[BaseException] = []

    def emit(event) -> None:
        if isinstance(event, StreamResult):
            raise RuntimeError("broken emit")

    async def go() -> None:
        channel = Channel(
            0,
            stream_config(),
            ScriptedDecoder(timeline),
            emit,
            lambda _: 0.0,
            vad=TimelineVad(timeline),
            on_failure=failures.append,
        )
        channel.feed(timeline.audio())
        for _ in range(200):
            if failures:
                break
            await asyncio.sleep(0.01)
        await channel.close()

    asyncio.run(go())
    assert len(failures) == 1 and str(failures[0]) == "broken emit"

"""Window packing: the split's guards, the owner rule, and that packed clients never swap words.

The guard tests are pure (synthetic word timelines). The isolation tests use real speech of two
different speakers: through the engine with packing forced on, and through two live streams of a
one-worker server at real-time pace, where their decodes queue together and get packed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from server import metrics
from server.engine import DecodeOptions, Engine, Priority, packing
from server.engine.whisper import Segment, Word
from server.settings import Settings
from tests import corpus
from tests.ws_helpers import RAW16, audio_frames, run_stream, samples16k

# Two speakers whose sentences share no content word.
SPEAKER_A = [
    "en_harvard_speechbrain_spk1_snt1.wav",  # The child almost hurt the small dog.
    "en_harvard_speechbrain_spk1_snt3.wav",  # At that high level the air is pure.
    "en_harvard_speechbrain_spk1_snt5.wav",  # Sunday is the best part of the week.
]
SPEAKER_B = [
    "en_cmuarctic_aew_a0003.wav",  # For the twentieth time that evening the two men shook hands.
    "en_cmuarctic_a0024.wav",  # It was my reports from the north which chiefly induced people…
    "en_cmuarctic_a0010.wav",  # I'm playing a single hand in what looks like a losing game.
]


def vocabulary(names: list[str]) -> set[str]:
    return {w for name in names for w in corpus.normalize(corpus.by_name(name).reference).split()}


def words_of(text: str) -> list[str]:
    return corpus.normalize(text).split()


def assert_own_words(got: list[str], own: set[str], other: set[str], who: str) -> None:
    """No word only the other speaker said; nearly every word is one of this speaker's."""
    foreign = [w for w in got if w in other - own]
    assert not foreign, f"{who} received the other speaker's words {foreign}: {got}"
    mine = [w for w in got if w in own]
    assert got and len(mine) >= 0.8 * len(got), f"{who}: {got}"


def pieces_run() -> dict[float, float]:
    """Cumulative count of encoder windows by how many pieces they held (histogram buckets)."""
    samples = metrics.PACK_PIECES.collect()[0].samples
    return {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}


def packed_windows() -> float:
    buckets = pieces_run()
    return buckets.get("+Inf", 0.0) - buckets.get("1.0", 0.0)


# --- the split's guards, on synthetic timelines -----------------------------------------------
def segment(*words: tuple[str, float, float], temperature: float = 0.0) -> Segment:
    ws = [Word(text, start, end, 0.9) for text, start, end in words]
    text = "".join(w.text for w in ws)
    return Segment(ws[0].start, ws[-1].end, text, -0.2, 0.01, temperature, 3 * len(ws), ws)


PACK = packing.build([np.zeros(32000, np.float32), np.zeros(24000, np.float32)], 1.0)
# pieces: [0, 2] and [3, 4.5] seconds


def test_plan_fills_windows_first_fit_in_order() -> None:
    assert packing.plan([5, 5, 25, 5], 1.0, 30.0) == [[0, 1, 3], [2]]
    assert packing.plan([29.5, 1], 1.0, 30.0) == [[0], [1]]
    assert packing.plan([2, 2, 2, 2], 1.0, 30.0, most=2) == [[0, 1], [2, 3]]


def test_split_gives_each_piece_its_words_on_its_own_clock() -> None:
    parts = packing.split(
        PACK, [segment((" hello", 0.2, 0.6), (" there.", 0.6, 2.7), (" blue", 3.1, 3.5))]
    )
    assert parts is not None
    first, second = parts.results
    assert [w.text for s in first for w in s.words] == [" hello", " there."]
    assert first[0].words[-1].end == 2.0  # a last word stretched into the gap is clamped
    assert [(w.text, w.start, w.end) for w in second[0].words] == [(" blue", 0.1, 0.5)]
    assert parts.redo == []


@pytest.mark.parametrize(
    "words",
    [
        [(" over", 1.8, 3.4)],  # runs from one piece into the next one's audio
        [(" ghost", 2.5, 2.6)],  # starts in the gap, touching neither piece
    ],
)
def test_split_refuses_words_not_cleanly_inside_one_piece(words) -> None:
    assert packing.split(PACK, [segment((" a", 0.1, 0.3), *words, (" b", 3.2, 3.4))]) is None


def test_split_refuses_unsure_decodes_and_repeated_runs() -> None:
    assert packing.split(PACK, [segment((" a", 0.1, 0.3), temperature=0.2)]) is None
    unsure = segment((" a", 0.1, 0.3), (" b", 3.2, 3.4))
    unsure.avg_logprob = -1.5  # below the log-prob threshold: a lone window would re-sample
    assert packing.split(PACK, [unsure]) is None
    repeated = segment(
        *[
            (f" {w}", 0.1 + 0.3 * i, 0.3 + 0.3 * i)
            for i, w in enumerate(["one", "two", "three", "four"])
        ],
        *[
            (f" {w}", 3.0 + 0.3 * i, 3.2 + 0.3 * i)
            for i, w in enumerate(["one", "two", "three", "four"])
        ],
    )
    assert packing.split(PACK, [repeated]) is None


def test_split_sends_pieces_without_words_to_be_decoded_alone() -> None:
    parts = packing.split(PACK, [segment((" hello", 0.2, 0.6))])
    assert parts is not None and parts.redo == [1]
    parts = packing.split(PACK, [])  # judged silent as a whole: each piece gets its own say
    assert parts is not None and parts.redo == [0, 1]


# --- real speech ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def packing_engine() -> Iterator[Engine]:
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    engine = Engine(Settings(workers=1, pack="all", batch_window_ms=0))
    engine.load()
    yield engine
    engine.stop()


def occupy(engine: Engine) -> None:
    """Give the one worker a long window so everything submitted next queues up together."""
    blocker = samples16k(corpus.by_name(SPEAKER_B[1]).path)
    engine.scheduler.submit("tiny.en", [blocker], DecodeOptions(), Priority.BULK)


def test_packed_windows_of_two_speakers_keep_their_own_words(packing_engine: Engine) -> None:
    engine = packing_engine
    options = DecodeOptions(beam_size=5)
    a = [samples16k(corpus.by_name(n).path) for n in SPEAKER_A]
    b = [samples16k(corpus.by_name(n).path) for n in SPEAKER_B]
    before = packed_windows()
    occupy(engine)
    # Interleaved, as two clients' windows would arrive; one owner, so they may share windows.
    futures = [
        engine.scheduler.submit("tiny.en", [w], options, Priority.STREAM_FINAL)[0]
        for pair in zip(a, b, strict=True)
        for w in pair
    ]
    results = [f.result(timeout=300) for f in futures]
    assert packed_windows() > before, "nothing was packed: the test proves nothing"
    own_a, own_b = vocabulary(SPEAKER_A), vocabulary(SPEAKER_B)
    for index, segments in enumerate(results):
        got = words_of("".join(w.text for s in segments for w in s.words))
        if index % 2 == 0:
            assert_own_words(got, own_a, own_b, SPEAKER_A[index // 2])
        else:
            assert_own_words(got, own_b, own_a, SPEAKER_B[index // 2])


def test_windows_of_different_keys_are_not_packed_together(packing_engine: Engine) -> None:
    engine = packing_engine
    clip = samples16k(corpus.by_name(SPEAKER_A[0]).path)
    options = DecodeOptions(beam_size=1, temperatures=(0.0,))
    before = packed_windows()
    occupy(engine)
    futures = [
        engine.scheduler.submit("tiny.en", [clip], options, Priority.STREAM_FINAL, owner=key)[0]
        for key in ("key-one", "key-two", "key-three")
    ]
    for future in futures:
        future.result(timeout=300)
    assert packed_windows() == before
    engine.scheduler.config.pack_across_owners = True
    try:
        occupy(engine)
        futures = [
            engine.scheduler.submit("tiny.en", [clip], options, Priority.STREAM_FINAL, owner=key)[0]
            for key in ("key-one", "key-two")
        ]
        for future in futures:
            future.result(timeout=300)
    finally:
        engine.scheduler.config.pack_across_owners = False
    assert packed_windows() > before


def test_by_default_only_interims_are_packed(packing_engine: Engine) -> None:
    """`pack=auto` on a CPU packs interims only: a final's (or a file's) text must not depend
    on what else was queued beside it."""
    assert Settings(device="cpu").packing == "interims"
    engine = packing_engine
    clip = samples16k(corpus.by_name(SPEAKER_A[0]).path)
    options = DecodeOptions(beam_size=1, temperatures=(0.0,))
    engine.scheduler.config.pack = "interims"
    try:
        for priority, packs in (
            (Priority.STREAM_FINAL, False),
            (Priority.BULK, False),
            (Priority.STREAM_INTERIM, True),
        ):
            before = packed_windows()
            occupy(engine)
            futures = [
                engine.scheduler.submit("tiny.en", [clip], options, priority)[0] for _ in range(3)
            ]
            for future in futures:
                future.result(timeout=300)
            assert (packed_windows() > before) is packs, priority
    finally:
        engine.scheduler.config.pack = "all"


def test_two_packed_live_streams_never_exchange_a_word(server_factory) -> None:
    """Two speakers streamed at once, real-time pace, to a one-worker server packing everything:
    every final word of each stream is its own speaker's.

    A fast machine decodes each window before the other stream's next one arrives, so nothing
    would wait together and nothing would be packed; a one-second batching window makes the two
    streams' decodes (each stream submits one at least every half second while it speaks) meet in
    the queue on any machine."""
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    server = server_factory("--workers", "1", "--pack", "all", "--batch-window-ms", "1000")
    pause = np.zeros(8000, np.float32)

    def program(names: list[str]) -> np.ndarray:
        return np.concatenate(
            [x for n in names for x in (samples16k(corpus.by_name(n).path), pause)]
        )

    url = f"{server.ws_url}/v1/listen?{RAW16}&interim_results=true&punctuate=true"

    async def both():
        return await asyncio.gather(
            run_stream(url, audio_frames(program(SPEAKER_A[:2])), pace_s=0.1),
            run_stream(url, audio_frames(program(SPEAKER_B[:2])), pace_s=0.1),
        )

    first, second = asyncio.run(both())
    own_a, own_b = vocabulary(SPEAKER_A[:2]), vocabulary(SPEAKER_B[:2])
    assert_own_words(words_of(first.final_text()), own_a, own_b, "stream A")
    assert_own_words(words_of(second.final_text()), own_b, own_a, "stream B")
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    counts = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'openlisten_pack_pieces_bucket\{le="([^"]+)"\} (\S+)', text)
    }
    assert counts["+Inf"] - counts["1.0"] > 0, "no decode was packed: the test proves nothing"

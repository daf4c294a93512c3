"""Batching changes speed, not text: `decode_batch` over many windows equals one-at-a-time.

Runs the real tiny.en model in-process on real corpus speech: the VAD windows of the long
LJSpeech file (≈30 s each) plus short clips, so batches mix lengths as the scheduler does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from faster_whisper.audio import decode_audio
from faster_whisper.vad import VadOptions

from server.engine.catalog import Catalog
from server.engine.models import LoadedModel, ModelPool
from server.engine.whisper import DecodeOptions, Segment, decode_batch
from server.settings import Settings
from server.vad import plan_speech
from tests import corpus

LONG = "en_ljspeech_LJ001-0001_to_0032_long.wav"
SHORT = [
    "en_librispeech_1995-1837-0001.wav",
    "en_harvard_speechbrain_spk1_snt1.wav",
    "en_cmuarctic_a0024.wav",
]


@pytest.fixture(scope="module")
def tiny() -> Iterator[LoadedModel]:
    corpus_ready()
    settings = Settings(workers=1)
    pool = ModelPool(settings, Catalog.load(settings.models_dir))
    yield pool.load("tiny.en")


def corpus_ready() -> None:
    if not (corpus.CORPUS / LONG).is_file():
        pytest.skip(corpus.MISSING)


def audio(name: str) -> np.ndarray:
    return decode_audio(str(corpus.CORPUS / name))


@pytest.fixture(scope="module")
def windows() -> list[np.ndarray]:
    """Six windows: four VAD chunks of the long file and two short clips, mixed in order."""
    corpus_ready()
    plan = plan_speech(audio(LONG), VadOptions(min_silence_duration_ms=500, speech_pad_ms=200))
    long = [w.audio for w in plan.windows[:4]]
    return [long[0], audio(SHORT[0]), long[1], long[2], audio(SHORT[1]), long[3]]


@pytest.fixture(scope="module")
def alone(tiny: LoadedModel, windows: list[np.ndarray]) -> list[list[Segment]]:
    """Each window decoded on its own (default options): what every batch must reproduce."""
    return [decode_batch(tiny.model, [w], DecodeOptions())[0] for w in windows]


@pytest.fixture(scope="module")
def batched(tiny: LoadedModel, windows: list[np.ndarray]) -> list[list[Segment]]:
    """All six windows in one batch, in order (default options)."""
    return decode_batch(tiny.model, windows, DecodeOptions())


def words(segments: list[Segment]) -> list[tuple[str, float, float]]:
    return [(w.text, w.start, w.end) for s in segments for w in s.words]


def text(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments).strip()


def test_batched_equals_one_at_a_time(
    windows: list[np.ndarray], alone: list[list[Segment]], batched: list[list[Segment]]
) -> None:
    assert len(batched) == len(windows)
    for index, (b, a) in enumerate(zip(batched, alone, strict=True)):
        assert text(a), f"window {index} decoded to nothing alone"
        assert text(b) == text(a), f"window {index} text differs in a batch"
        bw, aw = words(b), words(a)
        assert [w[0] for w in bw] == [w[0] for w in aw]
        # Word times: same within one Whisper time step (20 ms); they are identical today.
        for (_, bs, be), (_, as_, ae) in zip(bw, aw, strict=True):
            assert abs(bs - as_) <= 0.02 and abs(be - ae) <= 0.02
    # Each window's words stay inside that window: nothing leaks from a neighbour.
    for window, segments in zip(windows, batched, strict=True):
        duration = len(window) / 16000
        assert all(0 <= s <= e <= duration + 1e-6 for _, s, e in words(segments))


def test_batch_order_does_not_matter(
    tiny: LoadedModel, windows: list[np.ndarray], batched: list[list[Segment]]
) -> None:
    """The word-timing heuristics used to carry state from one batch item into the next."""
    backward = decode_batch(tiny.model, windows[::-1], DecodeOptions())[::-1]
    assert [words(s) for s in batched] == [words(s) for s in backward]


def test_fallback_is_per_item_and_the_same_every_time(
    tiny: LoadedModel, windows: list[np.ndarray]
) -> None:
    """A window that fails the first decode is retried on its own (its batch neighbours are
    untouched), and by default the retry is deterministic: the same window reads the same in
    a batch, alone, and again. Sampled retries (a client's temperature) used to give one 25 s
    conversation 86, 3 and 60 words on three requests."""
    phrase = audio("en_uberi_one_two_three.wav")
    looped = np.tile(phrase, int(28 * 16000 / len(phrase)))  # "one two three" × 10: repetitive
    options = DecodeOptions()
    first_only = decode_batch(tiny.model, [looped], replace(options, repair_ngram=0))[0]
    clean = [windows[1], windows[0]]
    batched = decode_batch(tiny.model, [clean[0], looped, clean[1]], options)
    alone_looped = decode_batch(tiny.model, [looped], options)[0]
    again = decode_batch(tiny.model, [looped], options)[0]
    assert text(alone_looped) != text(first_only), "the looped window was not retried"
    assert words(batched[1]) == words(alone_looped) == words(again)
    for segments, window in zip([batched[0], batched[2]], clean, strict=True):
        alone = decode_batch(tiny.model, [window], options)[0]
        assert all(s.temperature == 0.0 for s in segments)
        assert text(segments) == text(alone)
        assert words(segments) == words(alone)
    sampled = replace(options, temperatures=(0.0, 0.2, 0.4), repair_ngram=0)
    assert decode_batch(tiny.model, [looped], sampled)[0][0].temperature > 0  # asked for


def test_silent_window_in_a_batch(
    tiny: LoadedModel, windows: list[np.ndarray], alone: list[list[Segment]]
) -> None:
    """A window of silence (aligned or not, by Whisper's silence rule) changes no neighbour."""
    silence = np.zeros(16000 * 5, np.float32)
    options = DecodeOptions()
    trio = decode_batch(tiny.model, [windows[1], silence, windows[4]], options)
    silent_alone = decode_batch(tiny.model, [silence], options)[0]
    assert words(trio[0]) == words(alone[1])
    assert words(trio[1]) == words(silent_alone)
    assert words(trio[2]) == words(alone[4])
    assert words(trio[0]) and words(trio[2])

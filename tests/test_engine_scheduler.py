"""The scheduler in a real Engine (tiny.en, in-process): order, deadlines, cancel, admission.

Each test first hands the single worker a 30 s window of real speech (the "blocker") so the
work submitted next queues up behind it; what the test then checks is which queued work the
worker picks, and in which batches.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import numpy as np
import pytest
from faster_whisper.audio import decode_audio

from server import metrics
from server.engine import DeadlineExpired, DecodeOptions, Engine, Overloaded, Priority
from server.engine.whisper import decode_batch
from server.settings import Settings
from tests import corpus

LONG = "en_ljspeech_LJ001-0001_to_0032_long.wav"
CLIP = "en_harvard_speechbrain_spk1_snt1.wav"
OPTIONS = DecodeOptions()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    if not (corpus.CORPUS / CLIP).is_file():
        pytest.skip(corpus.MISSING)
    return decode_audio(str(corpus.CORPUS / CLIP))


@pytest.fixture(scope="module")
def blocker_audio() -> np.ndarray:
    if not (corpus.CORPUS / LONG).is_file():
        pytest.skip(corpus.MISSING)
    return decode_audio(str(corpus.CORPUS / LONG))[: 30 * 16000]


def make_engine(**overrides: object) -> Engine:
    # Packing off: these tests check which windows a worker picks, one window per item.
    settings = Settings(**{"batch_window_ms": 0, "workers": 1, "pack": "off", **overrides})
    engine = Engine(settings)
    engine.load()
    return engine


@pytest.fixture
def engine_factory() -> Iterator:
    started: list[Engine] = []

    def make(**overrides: object) -> Engine:
        engine = make_engine(**overrides)
        started.append(engine)
        return engine

    yield make
    for engine in started:
        engine.stop()


def occupy(engine: Engine, audio: np.ndarray) -> Future:
    """Give the worker a long window and wait until it has taken it off the queue."""
    (future,) = engine.scheduler.submit("tiny.en", [audio], OPTIONS, Priority.BULK)
    deadline = time.monotonic() + 10
    while engine.scheduler.depth and time.monotonic() < deadline:
        time.sleep(0.002)
    assert engine.scheduler.depth == 0, "the worker never took the blocker"
    return future


def batches_run() -> float:
    return next(
        s.value for s in metrics.BATCH_SIZE.collect()[0].samples if s.name.endswith("_count")
    )


def test_streaming_and_deadlines_run_first(
    engine_factory, clip: np.ndarray, blocker_audio: np.ndarray
) -> None:
    engine = engine_factory(batch_size=1)
    order: list[str] = []
    lock = threading.Lock()
    blocker = occupy(engine, blocker_audio)

    def track(label: str, future: Future) -> None:
        def done(_: Future) -> None:
            with lock:
                order.append(label)

        future.add_done_callback(done)

    submit = engine.scheduler.submit
    for label, priority, deadline in [
        ("bulk-a", Priority.BULK, None),
        ("bulk-b", Priority.BULK, None),
        ("interim", Priority.STREAM_INTERIM, None),
        ("final", Priority.STREAM_FINAL, None),
        ("bulk-urgent", Priority.BULK, 0.5),  # an explicit deadline beats default budgets
    ]:
        (future,) = submit("tiny.en", [clip], OPTIONS, priority, deadline_s=deadline)
        track(label, future)
    blocker.result(timeout=120)
    deadline = time.monotonic() + 120
    while len(order) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == ["bulk-urgent", "final", "interim", "bulk-a", "bulk-b"]


def test_a_final_due_later_yields_to_one_due_now(
    engine_factory, clip: np.ndarray, blocker_audio: np.ndarray
) -> None:
    """Finals decoded at a pause are needed when the pause is judged: v1 at endpointing=800
    first uses its final 0.6 s after Flux (0.2 s) uses its own, so Flux's goes first even
    when it came second."""
    engine = engine_factory(batch_size=1)
    order: list[str] = []
    blocker = occupy(engine, blocker_audio)
    submit = engine.scheduler.submit
    for label, due_in_s in [("v1@800", 0.6), ("v1@300", 0.1), ("flux", 0.0)]:
        (future,) = submit("tiny.en", [clip], OPTIONS, Priority.STREAM_FINAL, due_in_s=due_in_s)
        future.add_done_callback(lambda _, label=label: order.append(label))
    blocker.result(timeout=120)
    deadline = time.monotonic() + 120
    while len(order) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == ["flux", "v1@300", "v1@800"]


def test_droppable_work_expires_and_the_rest_is_decoded(
    engine_factory, clip: np.ndarray, blocker_audio: np.ndarray
) -> None:
    engine = engine_factory(batch_size=1)
    occupy(engine, blocker_audio)
    (dropped,) = engine.scheduler.submit(
        "tiny.en", [clip], OPTIONS, Priority.STREAM_INTERIM, deadline_s=0.01, droppable=True
    )
    (late,) = engine.scheduler.submit(
        "tiny.en", [clip], OPTIONS, Priority.STREAM_INTERIM, deadline_s=0.01
    )
    with pytest.raises(DeadlineExpired):
        dropped.result(timeout=120)
    segments = late.result(timeout=120)  # admitted, not droppable: decoded though late
    assert "".join(s.text for s in segments).strip()


def test_cancelled_client_leaves_the_queue(
    engine_factory, clip: np.ndarray, blocker_audio: np.ndarray
) -> None:
    engine = engine_factory(batch_size=1)

    async def scenario() -> list:
        occupy(engine, blocker_audio)
        gone = asyncio.create_task(engine.decode("tiny.en", [clip, clip, clip], OPTIONS))
        stays = asyncio.create_task(engine.decode("tiny.en", [clip], OPTIONS))
        for _ in range(200):
            await asyncio.sleep(0.005)
            if engine.scheduler.depth == 4:
                break
        assert engine.scheduler.depth == 4
        gone.cancel()
        await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert engine.scheduler.depth == 1  # the client's three windows are gone at once
        return await stays

    (segments,) = asyncio.run(scenario())
    assert "".join(s.text for s in segments).strip()


def test_admission_refuses_whole_requests(
    engine_factory, clip: np.ndarray, blocker_audio: np.ndarray
) -> None:
    engine = engine_factory(batch_size=1, queue_max=3, queue_max_wait_s=1000)
    scheduler = engine.scheduler
    # An idle queue admits one request of any size: long files are served when the box is free.
    scheduler.check_admission(10)
    blocker = occupy(engine, blocker_audio)
    admitted = scheduler.submit("tiny.en", [clip, clip], OPTIONS, Priority.BULK)
    with pytest.raises(Overloaded) as refused:
        scheduler.check_admission(2)
    assert refused.value.retry_after >= 1

    async def two_channels() -> None:
        await engine.decode_groups("tiny.en", [([clip], OPTIONS), ([clip], OPTIONS)])

    with pytest.raises(Overloaded):
        asyncio.run(two_channels())
    assert scheduler.depth == 2  # all or nothing: neither channel was queued
    blocker.result(timeout=120)
    for future in admitted:  # admitted work is decoded, never dropped
        assert future.result(timeout=120)


def test_wait_based_admission(engine_factory, clip: np.ndarray, blocker_audio: np.ndarray) -> None:
    engine = engine_factory(batch_size=1, queue_max=100, queue_max_wait_s=0.05)
    occupy(engine, blocker_audio)
    engine.scheduler.submit("tiny.en", [clip], OPTIONS, Priority.BULK)
    with pytest.raises(Overloaded) as refused:
        engine.scheduler.submit("tiny.en", [clip], OPTIONS, Priority.BULK)
    assert refused.value.retry_after >= 1
    assert engine.scheduler.expected_wait_s(1) > 0.05


@pytest.mark.parametrize("mix", [False, True])
def test_bulk_joins_streaming_batches_only_when_it_keeps_the_deadline(
    engine_factory, clip: np.ndarray, blocker_audio: np.ndarray, mix: bool
) -> None:
    engine = engine_factory(batch_size=8, batch_window_ms=50)
    engine.scheduler.config.mix_bulk_into_stream = mix
    before = batches_run()
    blocker = occupy(engine, blocker_audio)
    bulk = engine.scheduler.submit("tiny.en", [clip] * 4, OPTIONS, Priority.BULK)
    # A CPU can't decode two windows in 0.2 s, so on CPU the bulk windows must stay out.
    (final,) = engine.scheduler.submit(
        "tiny.en", [clip], OPTIONS, Priority.STREAM_FINAL, deadline_s=0.2
    )
    blocker.result(timeout=120)
    for future in [final, *bulk]:
        assert future.result(timeout=120)
    # blocker + (final alone, then the bulk four) on CPU; blocker + one mixed batch on GPU.
    assert batches_run() - before == (2 if mix else 3)


def test_a_lone_batch_decodes_with_every_core(engine_factory, clip: np.ndarray) -> None:
    """Two one-core workers, yet a batch running while the other worker idles uses the copy of
    the model with every core, and reads the same as the one-core replica."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to gain")
    engine = engine_factory(workers=2)
    loaded = engine.pool.get("tiny.en")
    assert loaded is not None and loaded.solo is not None
    seen: list[bool] = []
    run = engine.scheduler._decode

    def spy(batch):
        seen.append(batch.alone)
        return run(batch)

    engine.scheduler._decode = spy
    (segments,) = asyncio.run(engine.decode("tiny.en", [clip], OPTIONS))
    assert seen == [True]
    (alone,) = decode_batch(loaded.model, [clip], OPTIONS)
    assert [w.text for s in segments for w in s.words] == [w.text for s in alone for w in s.words]

"""The GPU path, end to end: what `make gpu-check` runs before it measures anything.

Marked `gpu` and skipped unless `bench/gpu_check.py` runs them (it sets OPENLISTEN_GPU_CHECK):
on a GPU machine with `device=cuda`, and in CI's dry run on the CPU at a small size, so the
steps cannot rot where no GPU is lent. Each is a real server on the device under test: REST
accuracy, streams at once, batching (stacked windows read like windows alone), diarization
(its embedder runs on the CPU beside a GPU decoder, as designed).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator

import httpx
import pytest

from server.engine.catalog import Catalog
from server.engine.models import ModelPool
from server.engine.whisper import DecodeOptions, decode_batch
from server.settings import Settings
from tests import corpus
from tests.conftest import Server, start_server
from tests.test_rest_support import transcript
from tests.ws_helpers import CLOSE, RAW16, chunks, pcm16, run_stream, samples16k

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        os.environ.get("OPENLISTEN_GPU_CHECK") != "1", reason="run by make gpu-check"
    ),
]
DEVICE = os.environ.get("OPENLISTEN_GPU_CHECK_DEVICE", "cuda")
COMPUTE = os.environ.get("OPENLISTEN_GPU_CHECK_COMPUTE", "float16")
QUICK = os.environ.get("OPENLISTEN_GPU_CHECK_QUICK") == "1"
CLIPS = 12
STREAMS = 2 if QUICK else 8
PACE = 0.025 if QUICK else 0.05  # s per 100 ms chunk: 4x and 2x real time
DIALOGUE = "en_multispeaker_picovoice_diarization_3spk.wav"


def english() -> list[corpus.Clip]:
    """Quick (the CPU dry run): two short clips; a GPU: the first dozen."""
    clips = corpus.english()
    if not clips:
        pytest.skip(corpus.MISSING)
    if QUICK:
        return [c for c in clips if "short" in c.tags][:2]
    return clips[:CLIPS]


@pytest.fixture(scope="module")
def device_server(tmp_path_factory) -> Iterator[Server]:
    english()
    args = ["--device", DEVICE, "--compute-type", COMPUTE]
    srv = start_server(tmp_path_factory.mktemp("gpu"), *args, ready_timeout=300)
    yield srv
    srv.stop()


def test_the_server_runs_on_the_device_under_test(device_server):
    """Ready, and on a GPU holding GPU memory (the gauge reads NVML, which the GPU image and
    the lent machines have)."""
    assert httpx.get(f"{device_server.url}/readyz", timeout=10).json()["status"] == "ready"
    metrics = httpx.get(f"{device_server.url}/metrics", timeout=10).text
    assert 'openlisten_model_loaded{model="tiny.en"} 1.0' in metrics
    if DEVICE == "cuda" and importlib.util.find_spec("pynvml") is not None:
        used = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("openlisten_gpu_memory_used_bytes{")
        ]
        assert used and max(used) > 100e6, used


def test_rest_wer_on_the_device(device_server):
    clips = english()
    with httpx.Client(timeout=300) as client:
        texts = [
            transcript(
                client.post(f"{device_server.url}/v1/listen", content=c.path.read_bytes())
                .raise_for_status()
                .json()
            )
            for c in clips
        ]
    error = corpus.wer([c.reference for c in clips], texts)
    print(f"\nREST WER on {DEVICE} {COMPUTE}: {error:.2f} % over {len(clips)} clips")
    assert error < 12, error


def test_streams_at_once_on_the_device(device_server):
    clips = english()[:STREAMS]
    url = f"{device_server.ws_url}/v1/listen?{RAW16}&interim_results=true"

    async def all_streams() -> list:
        return await asyncio.gather(
            *[
                run_stream(url, [*chunks(pcm16(samples16k(c.path)), 3200), CLOSE], pace_s=PACE)
                for c in clips
            ]
        )

    results = asyncio.run(all_streams())
    assert [r.close_code for r in results] == [1000] * len(clips)
    assert all(r.interims for r in results)
    error = corpus.wer([c.reference for c in clips], [r.final_text() for r in results])
    print(f"\nlive WER ({len(clips)} streams at {0.1 / PACE:.0f}x): {error:.2f} %")
    assert error < 15, error


def test_stacked_windows_read_like_windows_alone():
    """The engine's batch on the device: one stacked decode per window set, same text (a GPU
    may pick other GEMM kernels per batch size, so within a word or two, not bit-equal)."""
    settings = Settings(device=DEVICE, compute_type=COMPUTE, workers=1)
    loaded = ModelPool(settings, Catalog.for_settings(settings)).load("tiny.en")
    clips = english()
    windows = [samples16k(c.path) for c in clips]
    alone = [decode_batch(loaded.model, [w], DecodeOptions())[0] for w in windows]
    stacked = decode_batch(loaded.model, windows, DecodeOptions())
    refs = [c.reference for c in clips]

    def texts(results):
        return ["".join(s.text for s in segments) for segments in results]

    assert corpus.wer(refs, texts(stacked)) <= corpus.wer(refs, texts(alone)) + 2
    assert corpus.wer(texts(alone), texts(stacked)) < 5


def test_diarization_beside_the_device_decoder(device_server):
    clip = corpus.by_name(DIALOGUE)
    body = (
        httpx.post(
            f"{device_server.url}/v1/listen",
            params={"diarize": "true"},
            content=clip.path.read_bytes(),
            timeout=300,
        )
        .raise_for_status()
        .json()
    )
    words = body["results"]["channels"][0]["alternatives"][0]["words"]
    speakers = {w["speaker"] for w in words}
    assert len(speakers) >= 2, speakers
    assert corpus.wer([clip.reference], [transcript(body)]) < 25

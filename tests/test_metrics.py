"""`/metrics` moves by the right amounts under real traffic, and logs say what they should.

Traffic goes to the shared live server (tiny.en + base); each test scrapes before and after and
checks exact deltas where the amount is known (requests, audio seconds, one RTF sample per
request, one queue-wait sample per decoded window, one inference sample per batch...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import corpus
from tests.conftest import Server

Samples = dict[tuple[str, frozenset], float]

REST_CLIPS = ["en_librispeech_1272-128104-0000.wav", "en_librispeech_1089-134686-0001.wav"]
LOG_KEY = "log-test-key-7f3a9c1e"


def scrape(server: Server, headers: dict[str, str] | None = None) -> Samples:
    reply = httpx.get(f"{server.url}/metrics", headers=headers or {}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """Sum over every label set (e.g. queue waits of all priorities)."""
    return sum(v for (n, _), v in samples.items() if n == name)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture(scope="module")
def clips() -> list[tuple[bytes, float]]:
    out = []
    for name in REST_CLIPS:
        path = corpus.CORPUS / name
        if not path.is_file():
            pytest.skip(corpus.MISSING)
        out.append((path.read_bytes(), corpus.by_name(name).duration))
    return out


def test_rest_traffic_moves_the_metrics(server: Server, clips: list[tuple[bytes, float]]) -> None:
    before = scrape(server)
    durations = []
    for data, _ in clips:
        reply = httpx.post(f"{server.url}/v1/listen", content=data, timeout=120)
        assert reply.status_code == 200, reply.text
        durations.append(reply.json()["metadata"]["duration"])
    bad = httpx.post(f"{server.url}/v1/listen", content=b"", timeout=30)
    assert bad.status_code == 400
    after = scrape(server)
    n = len(clips)

    route = "/v1/listen"
    assert delta(before, after, "openlisten_requests_total", route=route, status="200") == n
    assert delta(before, after, "openlisten_requests_total", route=route, status="400") == 1
    assert delta(before, after, "openlisten_request_seconds_count", route=route) == n + 1

    audio = delta(before, after, "openlisten_audio_seconds_total", kind="rest")
    assert audio == pytest.approx(sum(durations), abs=0.01)
    assert audio == pytest.approx(sum(d for _, d in clips), abs=0.05)  # the corpus' own durations

    assert delta(before, after, "openlisten_real_time_factor_count") == n
    assert delta(before, after, "openlisten_real_time_factor_sum") > 0

    batches = delta(before, after, "openlisten_batch_size_count")
    windows = delta(before, after, "openlisten_batch_size_sum")
    assert batches >= 1 and windows >= n  # every clip is at least one window
    # One inference sample per batch, one queue-wait sample per window.
    assert delta(before, after, "openlisten_inference_seconds_count", model="tiny.en") == batches
    assert delta(before, after, "openlisten_inference_seconds_sum", model="tiny.en") > 0
    waits = total(after, "openlisten_queue_wait_seconds_count") - total(
        before, "openlisten_queue_wait_seconds_count"
    )
    assert waits == windows
    assert value(after, "openlisten_queue_depth") == 0


def test_model_state_and_idle_gauges(server: Server) -> None:
    samples = scrape(server)
    assert value(samples, "openlisten_model_loaded", model="tiny.en") == 1
    assert value(samples, "openlisten_model_loaded", model="base") == 1
    assert value(samples, "openlisten_active_streams") == 0
    # No GPU here: the gauge is declared but has no device sample (it is set only on CUDA).
    assert not [key for key in samples if key[0] == "openlisten_gpu_memory_used_bytes"]


def test_unmatched_and_probe_routes_are_labelled(server: Server) -> None:
    before = scrape(server)
    assert httpx.get(f"{server.url}/no/such/path", timeout=10).status_code == 404
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    after = scrape(server)
    assert delta(before, after, "openlisten_requests_total", route="unmatched", status="404") == 1
    assert delta(before, after, "openlisten_requests_total", route="/healthz", status="200") == 1
    # The raw path never becomes a label value (unbounded cardinality).
    assert not any(dict(labels).get("route") == "/no/such/path" for _, labels in after)


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    path = corpus.extra("en_jfk_16k_mono.wav")
    if not path.is_file():
        pytest.skip(corpus.MISSING)
    from tests.ws_helpers import samples16k

    return samples16k(path)


def test_stream_traffic_moves_the_metrics(server: Server, jfk: np.ndarray) -> None:
    ws_helpers = pytest.importorskip("tests.ws_helpers")
    before = scrape(server)
    url = f"{server.ws_url}/v1/listen?{ws_helpers.RAW16}&interim_results=true&endpointing=300"
    result = ws_helpers.stream(url, ws_helpers.audio_frames(jfk, 0.1), pace_s=0.02)
    assert result.close_code == 1000
    after = scrape(server)

    route = "/v1/listen"
    assert delta(before, after, "openlisten_requests_total", route=route, status="101") == 1
    streamed = delta(before, after, "openlisten_audio_seconds_total", kind="stream")
    assert streamed == pytest.approx(len(jfk) / 16000, abs=0.01)
    assert delta(before, after, "openlisten_audio_seconds_total", kind="rest") == 0
    # Exactly one latency sample per interim sent and per speech_final with words.
    interims = len(result.interims)
    assert delta(before, after, "openlisten_stream_interim_latency_seconds_count") == interims
    endpoints = sum(
        1 for m in result.finals if m["speech_final"] and m["channel"]["alternatives"][0]["words"]
    )
    assert endpoints >= 1
    assert delta(before, after, "openlisten_stream_endpoint_latency_seconds_count") == endpoints
    assert value(after, "openlisten_active_streams") == 0
    waits = total(after, "openlisten_queue_wait_seconds_count") - total(
        before, "openlisten_queue_wait_seconds_count"
    )
    assert waits > 0


def test_active_streams_gauge_counts_open_streams(server: Server, jfk: np.ndarray) -> None:
    websockets = pytest.importorskip("websockets.sync.client")
    url = f"{server.ws_url}/v1/listen?encoding=linear16&sample_rate=16000"
    with websockets.connect(url) as first, websockets.connect(url) as second:
        first.send((jfk[:16000] * 32767).astype("<i2").tobytes())
        second.send((jfk[:16000] * 32767).astype("<i2").tobytes())
        assert value(scrape(server), "openlisten_active_streams") == 2
        first.send(json.dumps({"type": "CloseStream"}))
        for _ in first:  # until the server closes
            pass
        assert value(scrape(server), "openlisten_active_streams") == 1
        second.send(json.dumps({"type": "CloseStream"}))
        for _ in second:
            pass
    assert value(scrape(server), "openlisten_active_streams") == 0


# --- logs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(server_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    yield server_factory("--api-key", LOG_KEY)


def _json_lines(server: Server) -> list[dict]:
    lines = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))  # every structured line must be valid JSON
    return lines


def test_logs_are_json_with_request_fields_and_no_secrets(keyed_server: Server) -> None:
    path = corpus.CORPUS / REST_CLIPS[0]
    if not path.is_file():
        pytest.skip(corpus.MISSING)
    reply = httpx.post(
        f"{keyed_server.url}/v1/listen?model=tiny.en",
        content=path.read_bytes(),
        headers={"Authorization": f"Token {LOG_KEY}"},
        timeout=120,
    )
    assert reply.status_code == 200
    request_id = reply.headers["dg-request-id"]
    transcript = reply.json()["results"]["channels"][0]["alternatives"][0]["transcript"]
    words = {w for w in re.findall(r"[a-z]+", transcript.lower()) if len(w) >= 5}
    assert len(words) >= 3, transcript
    # A rejected key must not be logged either.
    bad_key = "wrong-key-5e8d2b7a"
    bad = httpx.get(f"{keyed_server.url}/v1/models", headers={"Authorization": f"Token {bad_key}"})
    assert bad.status_code == 401

    text = keyed_server.logs()
    assert LOG_KEY not in text and bad_key not in text
    assert not [w for w in words if w in text.lower()], "transcript text leaked into the log"

    access = [
        line
        for line in _json_lines(keyed_server)
        if line.get("request_id") == request_id and line.get("msg") == "request"
    ]
    assert len(access) == 1
    (line,) = access
    assert line["route"] == "/v1/listen"
    assert line["status"] == 200
    assert line["model"] == "tiny.en"
    assert line["audio_seconds"] == pytest.approx(corpus.by_name(REST_CLIPS[0]).duration, abs=0.05)
    assert line["seconds"] > 0
    assert {"ts", "level", "logger"} <= line.keys()


def test_secrets_are_masked_even_in_unexpected_places(tmp_path: Path) -> None:
    """The formatter's safety net: a key that reaches a message is replaced, not printed."""
    import logging

    from server.logs import REDACTED, JsonFormatter, TextFormatter

    record = logging.makeLogRecord(
        {"msg": "callback to https://x.example/?token=%s failed", "args": (LOG_KEY,)}
    )
    record.extra_field = f"Token {LOG_KEY}"
    for formatter in (JsonFormatter([LOG_KEY]), TextFormatter([LOG_KEY])):
        line = formatter.format(record)
        assert LOG_KEY not in line and REDACTED in line
    assert json.loads(JsonFormatter([LOG_KEY]).format(record))["extra_field"] == (
        f"Token {REDACTED}"
    )


def test_refused_requests_count_under_their_route(keyed_server: Server) -> None:
    """Auth refusals happen before routing; they must still be labelled /v1/listen."""
    headers = {"Authorization": f"Token {LOG_KEY}"}
    before = scrape(keyed_server, headers)
    for _ in range(2):
        reply = httpx.post(f"{keyed_server.url}/v1/listen", content=b"x", timeout=10)
        assert reply.status_code == 401
    after = scrape(keyed_server, headers)
    labels = {"route": "/v1/listen", "status": "401"}
    assert delta(before, after, "openlisten_requests_total", **labels) == 2

"""A REST client that hangs up takes its queued windows with it (live server).

The long LJSpeech file is cut into 10 windows; with batches of 2 the server is still on the
first batch when the client gives up, so at most the batch already running (and possibly the
one after it, if the worker took it before the disconnect landed) is decoded, never all 10.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests import corpus

LONG = "en_ljspeech_LJ001-0001_to_0032_long.wav"
SHORT = "en_librispeech_1995-1837-0001.wav"


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_disconnected_client_work_is_cancelled(server_factory) -> None:
    if not (corpus.CORPUS / LONG).is_file():
        pytest.skip(corpus.MISSING)
    srv = server_factory("--batch-size", "2")
    before = metric(srv.url, "openlisten_batch_size_sum")
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(f"{srv.url}/v1/listen", content=(corpus.CORPUS / LONG).read_bytes(), timeout=3)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if metric(srv.url, "openlisten_queue_depth") == 0:
            break
        time.sleep(0.1)
    assert metric(srv.url, "openlisten_queue_depth") == 0
    # The server is free for the next client, which gets its answer.
    reply = httpx.post(
        f"{srv.url}/v1/listen", content=(corpus.CORPUS / SHORT).read_bytes(), timeout=120
    )
    assert reply.status_code == 200
    assert reply.json()["results"]["channels"][0]["alternatives"][0]["transcript"]
    decoded = metric(srv.url, "openlisten_batch_size_sum") - before - 1  # minus the short one
    assert decoded <= 4, f"{decoded} of the gone client's 10 windows were decoded"
    assert "client disconnected" in srv.logs()

"""A REST client that hangs up takes its queued windows with it (live server).

The long LJSpeech file is cut into 10 windows. One worker decodes one window at a time, and the
client hangs up as soon as its windows are queued, so at most the window already running (and
possibly the one after it, if the worker took it before the disconnect landed) is decoded,
never all 10. The hang-up is driven by the queue, not a clock, so machine speed cannot move it.
"""

from __future__ import annotations

import socket
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
    srv = server_factory("--batch-size", "1", "--workers", "1")
    before = metric(srv.url, "openlisten_batch_size_sum")
    body = (corpus.CORPUS / LONG).read_bytes()
    with socket.create_connection(("127.0.0.1", srv.port)) as conn:
        conn.sendall(
            b"POST /v1/listen HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        queued = time.monotonic() + 60
        while metric(srv.url, "openlisten_queue_depth") == 0 and time.monotonic() < queued:
            time.sleep(0.02)
        assert metric(srv.url, "openlisten_queue_depth") > 0, "the long file was never queued"
    # the socket is closed here: the client is gone while its windows wait
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
    assert decoded <= 3, f"{decoded} of the gone client's 10 windows were decoded"
    assert "client disconnected" in srv.logs()

"""Graceful shutdown on SIGTERM, against a real `openlisten serve` process.

While draining: readiness fails, new requests and new streams get 503, the in-flight REST
request is answered in full, the open stream gets its final Results, Metadata and close 1000,
and the process exits 0 within `shutdown_deadline_s`. A request that never finishes cannot hold
the process past the deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import corpus
from tests.conftest import Server, start_server

REST_CLIP = "en_librispeech_1995-1837-0001.wav"
STREAM_CLIP = "en_jfk_16k_mono.wav"


def _clip(path: Path) -> bytes:
    if not path.is_file():
        pytest.skip(corpus.MISSING)
    return path.read_bytes()


async def _wait_draining(server: Server, client: httpx.AsyncClient, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = await client.get(f"{server.url}/readyz")
        if reply.status_code == 503:
            return reply.json()
        await asyncio.sleep(0.05)
    raise AssertionError("readyz never turned 503 after SIGTERM")


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def test_sigterm_drains_rest_and_streams_then_exits_0(tmp_path: Path) -> None:
    websockets = pytest.importorskip("websockets")
    from tests.ws_helpers import samples16k

    rest_audio = _clip(corpus.CORPUS / REST_CLIP)
    stream_path = corpus.extra(STREAM_CLIP)
    _clip(stream_path)
    stream_audio = _pcm16(samples16k(stream_path)[: 16000 * 4])  # "And so my fellow Americans"
    deadline_s = 20.0
    server = start_server(
        tmp_path, env={"OPENLISTEN_SHUTDOWN_DEADLINE_S": str(deadline_s)}, ready_timeout=90
    )
    listen = f"{server.url}/v1/listen"
    ws_url = f"{server.ws_url}/v1/listen?encoding=linear16&sample_rate=16000"

    async def scenario() -> tuple[httpx.Response, list[dict], int | None, float]:
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            """Half the upload now, the rest only after SIGTERM: surely in flight."""
            yield rest_audio[: len(rest_audio) // 2]
            await release.wait()
            yield rest_audio[len(rest_audio) // 2 :]

        async with httpx.AsyncClient(timeout=60) as client:
            rest = asyncio.create_task(client.post(listen, content=slow_body()))
            ws = await websockets.connect(ws_url)
            messages: list[dict] = []

            async def collect() -> None:
                try:
                    async for message in ws:
                        messages.append(json.loads(message))
                except websockets.ConnectionClosed:
                    pass

            receiver = asyncio.create_task(collect())
            for start in range(0, len(stream_audio), 3200):  # 100 ms frames
                await ws.send(stream_audio[start : start + 3200])
            await asyncio.sleep(1.0)  # both requests are now inside the server

            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert (await _wait_draining(server, client))["status"] == "draining"

            refused = await client.post(listen, content=rest_audio)
            assert refused.status_code == 503
            assert refused.json()["err_code"] == "SERVER_DRAINING"
            assert "retry-after" in refused.headers
            with pytest.raises(websockets.InvalidStatus) as denied:
                await websockets.connect(ws_url)
            assert denied.value.response.status_code == 503

            await asyncio.wait_for(receiver, 30)  # the server flushes and closes the stream
            release.set()
            reply = await asyncio.wait_for(rest, 60)
            return reply, messages, ws.close_code, signalled

    try:
        reply, messages, close_code, signalled = asyncio.run(scenario())
        returncode = server.process.wait(timeout=deadline_s + 10)
        elapsed = time.monotonic() - signalled
    finally:
        server.stop()

    # The in-flight REST request got its whole answer.
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "sorrow" in body["results"]["channels"][0]["alternatives"][0]["transcript"].lower()
    assert body["metadata"]["duration"] == pytest.approx(
        corpus.by_name(REST_CLIP).duration, abs=0.05
    )

    # The stream got its final words, then Metadata last, then a normal close.
    assert close_code == 1000
    finals = [m for m in messages if m.get("type") == "Results" and m["is_final"]]
    text = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals).lower()
    assert "fellow americans" in text, messages
    assert messages[-1]["type"] == "Metadata"
    assert messages[-1]["duration"] == pytest.approx(4.0, abs=0.01)

    # And the process left cleanly, within the deadline.
    assert returncode == 0, server.logs()[-3000:]
    assert elapsed < deadline_s
    log = server.logs()
    assert '"msg": "draining"' in log


def test_deadline_bounds_a_request_that_never_finishes(tmp_path: Path) -> None:
    deadline_s = 3.0
    server = start_server(
        tmp_path, env={"OPENLISTEN_SHUTDOWN_DEADLINE_S": str(deadline_s)}, ready_timeout=90
    )

    async def scenario() -> tuple[float, int | None]:
        never = asyncio.Event()

        async def stalled_body() -> AsyncIterator[bytes]:
            yield b"RIFF" + b"\0" * 4096
            await never.wait()
            yield b""

        async with httpx.AsyncClient(timeout=60) as client:
            stalled = asyncio.create_task(
                client.post(f"{server.url}/v1/listen", content=stalled_body())
            )
            await asyncio.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            while server.process.poll() is None and time.monotonic() - signalled < 30:
                await asyncio.sleep(0.05)
            stalled.cancel()
            return time.monotonic() - signalled, server.process.returncode

    try:
        elapsed, returncode = asyncio.run(scenario())
    finally:
        server.stop()
    assert returncode == 0, server.logs()[-3000:]
    # The drain gives up at the deadline; stopping the engine and exiting take a moment more.
    assert deadline_s - 0.5 < elapsed < deadline_s + 2, elapsed

"""Slow and idle clients cannot hold the server: header and body deadlines, slow uploads,
KeepAlive-only streams, and bounded concurrent decodes. One server with short deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import websockets

from server.admission import Slots
from server.errors import Busy
from tests import corpus
from tests.test_rest_support import assert_deepgram_error
from tests.ws_helpers import encode

DEADLINE_S = 2.0


@pytest.fixture(scope="module")
def slow(server_factory):
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return server_factory(
        env={
            "OPENLISTEN_HEADER_TIMEOUT_S": str(DEADLINE_S),
            "OPENLISTEN_BODY_READ_TIMEOUT_S": str(DEADLINE_S),
            "OPENLISTEN_UPLOAD_MIN_BYTES_PER_S": "8192",
            "OPENLISTEN_UPLOAD_GRACE_S": str(DEADLINE_S),
            "OPENLISTEN_WS_KEEPALIVE_ONLY_TIMEOUT_S": "3",
            "OPENLISTEN_DECODE_MAX_CONCURRENT": "1",
            "OPENLISTEN_DECODE_MAX_WAITING": "0",
        }
    )


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.settimeout(30)
    return sock


def _closed_after(sock: socket.socket, send_every: float | None = None, line: bytes = b"") -> float:
    """Seconds until the server closes the connection (reading whatever it sends)."""
    started = time.monotonic()
    sock.settimeout(send_every or 30)
    while time.monotonic() - started < 30:
        try:
            if not sock.recv(4096):
                return time.monotonic() - started
        except TimeoutError:
            try:
                sock.sendall(line)
            except OSError:
                return time.monotonic() - started
        except OSError:
            return time.monotonic() - started
    return 30.0


def test_a_silent_connection_is_closed(slow):
    with _connect(slow) as sock:
        assert _closed_after(sock) < DEADLINE_S + 3


def test_headers_sent_byte_by_byte_are_cut_off(slow):
    with _connect(slow) as sock:
        sock.sendall(b"POST /v1/listen HTTP/1.1\r\nHost: x\r\n")
        assert _closed_after(sock, send_every=0.3, line=b"X-Slow: 1\r\n") < DEADLINE_S + 3


def test_a_slow_websocket_handshake_is_cut_off(slow):
    with _connect(slow) as sock:
        sock.sendall(b"GET /v1/listen HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        assert _closed_after(sock, send_every=0.3, line=b"X-Slow: 1\r\n") < DEADLINE_S + 3


def _response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), json.loads(rest[:length])


def test_a_stalled_body_gets_408(slow):
    with _connect(slow) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/listen HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        sock.sendall(b"\0" * 1000)
        status, body = _response(sock)
        assert status == 408 and body["err_code"] == "REQUEST_TIMEOUT", body
        assert time.monotonic() - started < DEADLINE_S + 3


def test_a_trickling_upload_gets_408(slow):
    """1 KB/s, well below the floor of 8 KB/s once the grace period is over."""
    with _connect(slow) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/listen HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        sock.settimeout(0.5)
        while True:
            try:
                sock.sendall(b"\0" * 512)
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        sock.settimeout(30)
        status, body = _response(sock)
        assert status == 408 and "slower than" in body["err_msg"], body
        assert time.monotonic() - started < DEADLINE_S + 4


def test_a_keepalive_only_stream_is_closed(slow):
    async def run() -> tuple[int | None, list[dict]]:
        messages = []
        async with websockets.connect(f"{slow.ws_url}/v1/listen") as ws:
            try:
                while True:
                    await ws.send(json.dumps({"type": "KeepAlive"}))
                    with contextlib.suppress(asyncio.TimeoutError):
                        messages.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None, messages
        return None, messages

    started = time.monotonic()
    code, messages = asyncio.run(asyncio.wait_for(run(), 30))
    assert 3 <= time.monotonic() - started < 10
    assert code == 1011
    assert any(m.get("type") == "Error" and "KeepAlive" in m["description"] for m in messages)


def test_decodes_beyond_the_slots_get_503(slow):
    """One decode slot, no waiting place: of simultaneous uploads, some are refused."""
    noise = np.random.default_rng(0).normal(0, 0.001, 120 * 16000).astype(np.float32)
    audio = encode(noise, "mp3", "libmp3lame", 16000)  # seconds to decode, no speech after

    def post() -> httpx.Response:
        return httpx.post(f"{slow.url}/v1/listen", content=audio, timeout=600)

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: post(), range(4)))
    refused = [r for r in replies if r.status_code == 503]
    assert refused, [r.status_code for r in replies]
    for reply in refused:
        body = assert_deepgram_error(reply, 503)
        assert "decode" in body["err_msg"] and int(reply.headers["Retry-After"]) >= 1
    assert any(r.status_code == 200 for r in replies)


def test_slots_admit_limit_plus_waiting_then_refuse():
    async def run() -> None:
        slots = Slots("decode", limit=1, waiting=1)
        release = asyncio.Event()

        async def hold() -> None:
            async with slots.take():
                await release.wait()

        first = asyncio.create_task(hold())
        second = asyncio.create_task(hold())
        await asyncio.sleep(0.01)
        assert (slots.active, slots.queued) == (1, 1)
        with pytest.raises(Busy):
            async with slots.take():
                pass
        release.set()
        await asyncio.gather(first, second)
        assert (slots.active, slots.queued) == (0, 0)

    asyncio.run(run())

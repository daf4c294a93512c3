"""WebSocket handshake: every auth form Deepgram clients use, and real HTTP refusals.

A refused handshake must be an HTTP status with a Deepgram JSON body (never the 403 that a
close-before-accept produces), and an accepted one carries `dg-request-id` and echoes the
browser's auth subprotocol.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import websockets

from tests import corpus
from tests.ws_helpers import CLOSE, RAW16, audio_frames, pcm16, samples16k, stream

KEY = "sekrit-key"


@pytest.fixture(scope="module")
def authed(server_factory):
    return server_factory(
        "--api-key",
        KEY,
        env={"OPENLISTEN_WS_MAX_STREAMS": "2", "OPENLISTEN_WS_IDLE_TIMEOUT_S": "1.5"},
    )


@pytest.fixture(scope="module")
def speech() -> list:
    path = corpus.extra("en_jfk_16k_mono.wav")
    if not path.is_file():
        pytest.skip(corpus.MISSING)
    return audio_frames(samples16k(path)[: int(16000 * 2.5)])


def _refusal(url: str, **kwargs) -> tuple[int, dict, dict]:
    async def go():
        try:
            async with websockets.connect(url, open_timeout=20, **kwargs):
                pass
        except websockets.InvalidStatus as exc:
            response = exc.response
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status_code, headers, json.loads(response.body)
        raise AssertionError("the handshake was accepted")

    return asyncio.run(go())


@pytest.mark.parametrize("scheme", ["Token", "token", "Bearer", "bearer", "TOKEN"])
def test_authorization_header_schemes(authed, speech, scheme):
    result = stream(
        f"{authed.ws_url}/v1/listen?{RAW16}",
        speech,
        headers={"Authorization": f"{scheme} {KEY}"},
    )
    assert result.close_code == 1000
    assert "americans" in result.final_text().lower()
    assert len(result.headers["dg-request-id"]) == 36
    assert result.subprotocol is None


@pytest.mark.parametrize(
    "protocols",
    [
        ["token", KEY],
        ["bearer", KEY],
        ["token", KEY, "x-deepgram-session-id", "3f2a6c1e-1b7d-4c55-9d61-4a0b1f6e2c10"],
    ],
)
def test_browser_subprotocol_auth_is_echoed(authed, speech, protocols):
    result = stream(f"{authed.ws_url}/v1/listen?{RAW16}", speech, subprotocols=protocols)
    assert result.subprotocol == protocols[0]
    assert result.headers["sec-websocket-protocol"] == protocols[0]
    assert "americans" in result.final_text().lower()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"additional_headers": {"Authorization": "Token wrong"}},
        {"additional_headers": {"Authorization": "Basic " + KEY}},
        {"subprotocols": ["token", "wrong"]},
    ],
)
def test_missing_or_wrong_key_is_http_401_json(authed, kwargs):
    status, headers, body = _refusal(f"{authed.ws_url}/v1/listen?{RAW16}", **kwargs)
    assert status == 401
    assert body["err_code"] == "INVALID_AUTH" and body["err_msg"]
    assert body["request_id"] == headers["dg-request-id"]


@pytest.mark.parametrize(
    "query", ["encoding=linear16", "sample_rate=abc", "interim_results=maybe", "encoding=g723"]
)
def test_bad_parameter_is_http_400_json(authed, query):
    status, headers, body = _refusal(
        f"{authed.ws_url}/v1/listen?{query}",
        additional_headers={"Authorization": f"Token {KEY}"},
    )
    assert status == 400
    assert body["err_msg"] and body["request_id"] == headers["dg-request-id"]
    assert headers.get("dg-error")


def test_stream_limit_refuses_with_503_retry_after(authed):
    auth = {"Authorization": f"Token {KEY}"}
    url = f"{authed.ws_url}/v1/listen?{RAW16}"

    async def go():
        async with (
            websockets.connect(url, additional_headers=auth) as a,
            websockets.connect(url, additional_headers=auth) as b,
        ):
            await a.send(pcm16(np.zeros(1600, np.float32)))
            await b.send(pcm16(np.zeros(1600, np.float32)))
            try:
                async with websockets.connect(url, additional_headers=auth):
                    raise AssertionError("a third stream was accepted")
            except websockets.InvalidStatus as exc:
                refused = exc.response
            await a.send(CLOSE)
            await b.send(CLOSE)
            async for _ in a:
                pass
            async for _ in b:
                pass
        return refused

    refused = asyncio.run(go())
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert json.loads(refused.body)["err_code"] == "TOO_MANY_REQUESTS"


def test_idle_timeout_closes_1011_and_keepalive_resets_it(authed, speech):
    keepalive = json.dumps({"type": "KeepAlive"})
    auth = {"Authorization": f"Token {KEY}"}
    url = f"{authed.ws_url}/v1/listen?{RAW16}"
    # KeepAlive every 0.5 s for 3 s (twice the 1.5 s timeout), then CloseStream: still open.
    kept = stream(url, [x for _ in range(6) for x in (keepalive, 0.5)] + [CLOSE], headers=auth)
    assert kept.close_code == 1000 and kept.messages[-1]["type"] == "Metadata"
    # Audio, then nothing: the server closes with NET-0001 after the timeout.
    idle = stream(url, [*speech[:-1], 4.0], headers=auth)
    assert idle.close_code == 1011
    assert idle.close_reason == (
        "Deepgram did not receive audio data or a text message within the timeout window. "
        "See https://dpgr.am/net0001"
    )
    assert "americans" in idle.final_text().lower()  # what was heard was still delivered

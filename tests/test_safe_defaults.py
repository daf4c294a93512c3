"""Safe defaults: loopback unless told, and no key or query string in any log line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import websockets

from server.settings import Settings
from tests import corpus

ROOT = Path(__file__).resolve().parents[1]
SHORT_KEY = "k9"  # shorter than any key a formatter would mask by plain substitution
LONG_KEY = "4f1c9e2d7b6a4c3e9f0a1b2c3d4e5f60"
SECRET_WORD = "zebraquartz"  # a query value that must not reach the log either


def test_serve_binds_loopback_unless_told(monkeypatch):
    monkeypatch.delenv("OPENLISTEN_HOST", raising=False)
    assert Settings().host == "127.0.0.1"
    for image in ("Dockerfile", "docker/Dockerfile.cpu", "docker/Dockerfile.cuda"):
        assert "OPENLISTEN_HOST=0.0.0.0" in (ROOT / image).read_text(), image


@pytest.fixture(scope="module")
def keyed(server_factory):
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return server_factory(
        env={"OPENLISTEN_API_KEY": f"{SHORT_KEY},{LONG_KEY}", "OPENLISTEN_LOG_LEVEL": "debug"}
    )


def test_no_key_or_query_string_in_any_log_line(keyed):
    clip = corpus.by_name("en_timit_LDC93S1.wav").path.read_bytes()
    query = f"token={SHORT_KEY}&keyterm={SECRET_WORD}&model=nova-3"
    reply = httpx.post(
        f"{keyed.url}/v1/listen?{query}",
        content=clip,
        headers={"Authorization": f"Token {SHORT_KEY}"},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    bad = httpx.post(
        f"{keyed.url}/v1/listen?{query}", content=clip, headers={"Authorization": "Token k8"}
    )
    assert bad.status_code == 401

    async def stream(key: str) -> None:
        url = f"{keyed.ws_url}/v1/listen?{query}&encoding=linear16&sample_rate=16000"
        headers = {"Authorization": f"Token {key}"}
        try:
            async with websockets.connect(url, additional_headers=headers) as ws:
                await ws.send(b"\0" * 3200)
                await ws.send(json.dumps({"type": "CloseStream"}))
                async for _ in ws:
                    pass
        except websockets.InvalidStatus:
            pass

    asyncio.run(stream(LONG_KEY))
    asyncio.run(stream(SHORT_KEY))
    asyncio.run(stream("k8"))  # refused at the handshake: logged too

    log = keyed.logs()
    assert "WebSocket /v1/listen" in log, "uvicorn's WebSocket lines are kept (redacted)"
    assert LONG_KEY not in log
    assert SECRET_WORD not in log
    assert "token=" not in log
    for line in log.splitlines():
        if line.startswith("{"):
            json.loads(line)  # redaction never breaks a JSON line
        words = line.replace('"', " ").replace(",", " ").split()
        assert SHORT_KEY not in words, line


def test_short_keys_are_masked_as_whole_tokens():
    import logging

    from server.logs import REDACTED, JsonFormatter

    record = logging.makeLogRecord({"msg": f"Token {SHORT_KEY} and k99 and ak9 and {SHORT_KEY}."})
    msg = json.loads(JsonFormatter([SHORT_KEY]).format(record))["msg"]
    assert msg == f"Token {REDACTED} and k99 and ak9 and {REDACTED}."

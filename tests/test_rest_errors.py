"""Bad input: every case gets its status and a Deepgram error body, and the server keeps serving.

One server with small limits (body, duration, url size, url timeout, queue) and API keys, so
limit cases are cheap; each case names what it sends and what must come back.
"""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from tests import corpus
from tests.test_rest_support import (
    assert_deepgram_error,
    encode,
    load_pcm,
    local_host,
    transcript,
)

KEY = "s3cret"
AUTH = {"Authorization": f"Token {KEY}"}
MAX_BODY = 3_000_000
URL_MAX = 200_000


@pytest.fixture(scope="module")
def limited(server_factory):
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return server_factory(
        env={
            "OPENLISTEN_API_KEY": KEY,
            "OPENLISTEN_MAX_BODY_BYTES": str(MAX_BODY),
            "OPENLISTEN_MAX_DURATION_S": "100",
            "OPENLISTEN_URL_MAX_BYTES": str(URL_MAX),
            "OPENLISTEN_URL_TIMEOUT_S": "2",
            "OPENLISTEN_QUEUE_MAX": "1",
            "OPENLISTEN_BATCH_SIZE": "1",  # windows leave the queue one by one
        }
    )


@pytest.fixture(scope="module")
def host():
    clip = corpus.by_name("en_timit_LDC93S1.wav")
    big = corpus.by_name("en_jfk_inaugural_1961.flac")
    with local_host({"/ok.wav": clip.path.read_bytes(), "/big.flac": big.path.read_bytes()}) as h:
        yield h


def _speech_seconds(seconds: float) -> np.ndarray:
    """Real speech repeated to a length: long enough to need several 30 s windows."""
    pcm = load_pcm(corpus.by_name("en_jfk_inaugural_1961.flac").path, 16000)
    reps = int(np.ceil(seconds * 16000 / len(pcm)))
    return np.tile(pcm, reps)[: int(seconds * 16000)]


def _wav(pcm: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _flac_of(pcm: np.ndarray, tmp_path) -> bytes:
    path = tmp_path / "long.wav"
    path.write_bytes(_wav(pcm))
    return encode(path, "flac")


@dataclass
class Case:
    name: str
    status: int
    send: Callable[[str, object, object], httpx.Response]  # (base url, host, tmp_path)
    code: str | None = None
    says: str | None = None  # a word the message must contain


def post(path: str = "/v1/listen", **options) -> Callable:
    def send(base: str, host, tmp_path) -> httpx.Response:
        kwargs = dict(options)
        headers = {**AUTH, **kwargs.pop("headers", {})}
        params = kwargs.get("params")
        if callable(params):
            kwargs["params"] = params(host)
        content = kwargs.get("content")
        if callable(content):
            kwargs["content"] = content(tmp_path)
        body_json = kwargs.get("json")
        if callable(body_json):
            kwargs["json"] = body_json(host)
        return httpx.post(base + path, headers=headers, timeout=60, **kwargs)

    return send


TIMIT = corpus.CORPUS / "en_timit_LDC93S1.wav"
FLAC = corpus.CORPUS / "en_jfk_inaugural_1961.flac"


def _bytes(path, count: int | None = None) -> Callable:
    return lambda tmp: path.read_bytes()[:count]


CASES = [
    Case("empty body", 400, post(content=b""), says="empty"),
    Case("garbage text", 400, post(content=b"hello, this is not audio"), says="corrupt"),
    Case("random bytes", 400, post(content=lambda t: np.random.default_rng(1).bytes(65536))),
    Case("html page", 400, post(content=b"<html><body>404</body></html>" * 50)),
    Case("wav header cut at 20 bytes", 400, post(content=_bytes(TIMIT, 20))),
    Case("flac header cut at 60 bytes", 400, post(content=_bytes(FLAC, 60))),
    Case("wav header with no samples", 400, post(content=lambda t: _wav(np.zeros(0, np.int16)))),
    Case(
        "json without url",
        400,
        post(content=b'{"nope": 1}', headers={"Content-Type": "application/json"}),
        "INVALID_JSON",
    ),
    Case(
        "malformed json",
        400,
        post(content=b'{"url": ', headers={"Content-Type": "application/json"}),
        "INVALID_JSON",
    ),
    Case("json url not a string", 400, post(json={"url": 42}), "INVALID_JSON"),
    Case("url not http", 400, post(json={"url": "file:///etc/passwd"}), says="http"),
    # Every fetch failure reads the same (the server is no port scanner): tests/test_ssrf.py.
    Case(
        "url answers 404",
        400,
        post(json=lambda h: {"url": f"{h.url}/missing.wav"}),
        "REMOTE_CONTENT_ERROR",
        "could not fetch",
    ),
    Case(
        "url never answers",
        400,
        post(json=lambda h: {"url": f"{h.url}/stall"}),
        "REMOTE_CONTENT_ERROR",
        "could not fetch",
    ),
    Case(
        "url refuses connections",
        400,
        post(json={"url": "http://127.0.0.1:9/x.wav"}),
        "REMOTE_CONTENT_ERROR",
    ),
    Case("url over url_max_bytes", 413, post(json=lambda h: {"url": f"{h.url}/big.flac"})),
    Case(
        "listen/url without url",
        400,
        post("/v1/listen/url", content=b""),
        "INVALID_QUERY_PARAMETER",
    ),
    Case(
        "unknown encoding",
        400,
        post(params={"encoding": "banana", "sample_rate": "16000"}, content=_bytes(TIMIT)),
        "INVALID_QUERY_PARAMETER",
    ),
    Case(
        "unsupported encoding",
        400,
        post(params={"encoding": "aptx", "sample_rate": "8000"}, content=_bytes(TIMIT)),
        "INVALID_QUERY_PARAMETER",
    ),
    Case(
        "raw encoding without sample_rate",
        400,
        post(params={"encoding": "linear16"}, content=_bytes(TIMIT)),
        "INVALID_QUERY_PARAMETER",
        "sample_rate",
    ),
    Case(
        "sample_rate not a number",
        400,
        post(params={"encoding": "linear16", "sample_rate": "fast"}, content=_bytes(TIMIT)),
        "INVALID_QUERY_PARAMETER",
    ),
    Case(
        "channels zero",
        400,
        post(
            params={"encoding": "linear16", "sample_rate": "16000", "channels": "0"},
            content=_bytes(TIMIT),
        ),
        "INVALID_QUERY_PARAMETER",
    ),
    Case(
        "boolean not a boolean",
        400,
        post(params={"punctuate": "maybe"}, content=_bytes(TIMIT)),
        "INVALID_QUERY_PARAMETER",
        "punctuate",
    ),
    Case(
        "negative utt_split",
        400,
        post(params={"utterances": "true", "utt_split": "-1"}, content=_bytes(TIMIT)),
        "INVALID_QUERY_PARAMETER",
    ),
    Case(
        "bad language code",
        400,
        post(params={"language": "en;rm -rf"}, content=_bytes(TIMIT)),
        "INVALID_QUERY_PARAMETER",
    ),
    Case(
        "callback not http",
        400,
        post(params={"callback": "javascript:alert(1)"}, content=_bytes(TIMIT)),
        "INVALID_QUERY_PARAMETER",
    ),
    Case(
        "callback_method GET",
        400,
        post(
            params=lambda h: {"callback": f"{h.url}/cb", "callback_method": "GET"},
            content=_bytes(TIMIT),
        ),
        "INVALID_QUERY_PARAMETER",
    ),
    Case(
        "body over max_body_bytes",
        413,
        post(content=lambda t: b"\0" * (MAX_BODY + 1)),
        "PAYLOAD_TOO_LARGE",
    ),
    Case(
        "chunked body over max_body_bytes",
        413,
        post(content=lambda t: (b"\0" * 65536 for _ in range(MAX_BODY // 65536 + 2))),
        "PAYLOAD_TOO_LARGE",
    ),
    Case(
        "audio over max_duration_s",
        413,
        post(content=lambda t: encode_long(t, 130)),
        "PAYLOAD_TOO_LARGE",
        "100",
    ),
    # The router's own refusals once answered FastAPI's {"detail": ...} (405) or an empty body.
    Case(
        "GET on /v1/listen",
        405,
        lambda base, h, t: httpx.get(base + "/v1/listen", headers=AUTH, timeout=60),
        "METHOD_NOT_ALLOWED",
    ),
    Case(
        "no such route",
        404,
        lambda base, h, t: httpx.post(base + "/v2/listen", content=b"x", timeout=60),
        "NOT_FOUND",
    ),
    Case(
        "no Authorization header",
        401,
        lambda base, h, t: httpx.post(base + "/v1/listen", content=TIMIT.read_bytes(), timeout=60),
        "INVALID_AUTH",
    ),
    Case(
        "wrong key",
        401,
        lambda base, h, t: httpx.post(
            base + "/v1/listen",
            content=TIMIT.read_bytes(),
            headers={"Authorization": "Token wrong"},
            timeout=60,
        ),
        "INVALID_AUTH",
    ),
    Case(
        "unknown auth scheme",
        401,
        lambda base, h, t: httpx.post(
            base + "/v1/listen",
            content=TIMIT.read_bytes(),
            headers={"Authorization": f"Basic {KEY}"},
            timeout=60,
        ),
        "INVALID_AUTH",
    ),
]


def encode_long(tmp_path, seconds: float, fmt: str = "ogg-opus") -> bytes:
    path = tmp_path / f"long-{seconds}.wav"
    path.write_bytes(_wav(_speech_seconds(seconds)))
    return encode(path, fmt)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(limited, host, tmp_path, case: Case):
    started = time.monotonic()
    response = case.send(limited.url, host, tmp_path)
    body = assert_deepgram_error(response, case.status)
    assert time.monotonic() - started < 30, "errors must come back promptly"
    if case.code:
        assert body["err_code"] == case.code, body
    if case.says:
        assert case.says.lower() in body["err_msg"].lower(), body
    if case.status == 503:
        assert int(response.headers["Retry-After"]) >= 1
    assert limited.process.poll() is None, "the server must survive every bad input"


def test_queue_full_answers_503_with_retry_after(limited, tmp_path):
    """An idle queue admits any one request; a second one arriving while the first's windows
    still wait (queue_max=1, batch_size=1) is refused at once with Retry-After."""
    long_audio = encode_long(tmp_path, 95)
    short = corpus.by_name("en_timit_LDC93S1.wav").path.read_bytes()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            httpx.post, f"{limited.url}/v1/listen", content=long_audio, headers=AUTH, timeout=300
        )
        refused = None
        while not first.done() and refused is None:
            response = httpx.post(
                f"{limited.url}/v1/listen", content=short, headers=AUTH, timeout=60
            )
            if response.status_code == 503:
                refused = response
            time.sleep(0.1)
        assert first.result().status_code == 200
    assert refused is not None, "no request was refused while the queue was full"
    body = assert_deepgram_error(refused, 503)
    assert body["err_code"] == "TOO_MANY_REQUESTS"
    assert int(refused.headers["Retry-After"]) >= 1


def test_truncated_audio_transcribes_what_arrived_and_warns(limited):
    clip = corpus.by_name("en_jfk_inaugural_1961.flac")
    data = clip.path.read_bytes()
    response = httpx.post(
        f"{limited.url}/v1/listen", content=data[: len(data) // 2], headers=AUTH, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["duration"] < clip.duration - 2
    warning = [w for w in body["metadata"]["warnings"] if w["type"] == "truncated_audio"]
    assert warning and "11.00" in warning[0]["message"]
    assert "fellow americans" in transcript(body).lower()


def test_still_serves_after_the_bad_inputs(limited):
    """Runs after the suite above (file order): the same server answers a good request."""
    clip = corpus.by_name("en_timit_LDC93S1.wav")
    response = httpx.post(
        f"{limited.url}/v1/listen", content=clip.path.read_bytes(), headers=AUTH, timeout=60
    )
    assert response.status_code == 200
    assert corpus.wer([clip.reference], [transcript(response.json())]) < 30
    assert httpx.get(f"{limited.url}/healthz", timeout=5).status_code == 200

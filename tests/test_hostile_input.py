"""Hostile input: each case the hardening issue found is a 4xx with a Deepgram body now, never a
500, a reset, a crash or unbounded memory. One server of its own, so its peak memory is ours."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from tests import corpus
from tests.test_rest_support import assert_deepgram_error, transcript

TIMIT = "en_timit_LDC93S1.wav"
MAX_DURATION_S = 600


@pytest.fixture(scope="module")
def srv(server_factory):
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return server_factory(
        env={
            "OPENLISTEN_MAX_DURATION_S": str(MAX_DURATION_S),
            "OPENLISTEN_MAX_CHANNELS": "8",
        }
    )


@pytest.fixture(scope="module")
def timit() -> bytes:
    return corpus.by_name(TIMIT).path.read_bytes()


def peak_rss_mb(server) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def wav_header(rate: int, channels: int, bits: int, data: bytes) -> bytes:
    block = channels * bits // 8
    return (
        struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            b"RIFF",
            36 + len(data),
            b"WAVE",
            b"fmt ",
            16,
            1,
            channels,
            rate,
            rate * block,
            block,
            bits,
            b"data",
            len(data),
        )
        + data
    )


def flac_claiming(seconds_claimed: float, seconds_real: float = 2.0) -> bytes:
    """A real FLAC whose STREAMINFO says it is `seconds_claimed` long."""
    rate = 16000
    pcm = np.zeros(int(seconds_real * rate), np.int16)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"fLaC"
    # STREAMINFO: 18 bytes in, 64 bits = rate(20) | channels-1(3) | bps-1(5) | total samples(36)
    (packed,) = struct.unpack(">Q", data[18:26])
    packed = (packed & ~((1 << 36) - 1)) | int(seconds_claimed * rate)
    data[18:26] = struct.pack(">Q", packed)
    return bytes(data)


def post(srv, content: bytes = b"", params=None, headers=None, **kw) -> httpx.Response:
    return httpx.post(
        f"{srv.url}/v1/listen", content=content, params=params, headers=headers, timeout=60, **kw
    )


@pytest.mark.parametrize(
    "params",
    [
        {"punctuate": "maybe\r\nX-Injected: yes"},
        {"language": "en\r\n\r\n<html>"},
        {"punctuate": "日本語のテキスト"},
        {"model": "nova-3", "callback_method": "ПОСТ"},
    ],
)
def test_raw_input_never_reaches_a_header(srv, timit, params):
    reply = post(srv, timit, params)
    body = assert_deepgram_error(reply, 400)
    assert "x-injected" not in reply.headers
    header = reply.headers["dg-error"]
    assert "\r" not in header and "\n" not in header
    header.encode("ascii")
    assert body["err_code"] == "INVALID_QUERY_PARAMETER"


@pytest.mark.parametrize(
    "params",
    [
        {"encoding": "linear16", "sample_rate": "inf"},
        {"encoding": "linear16", "sample_rate": "nan"},
        {"endpointing": "1e400"},
        {"utt_split": "nan"},
        {"utt_split": "inf"},
        {"utterance_end_ms": "-inf"},
    ],
)
def test_numbers_must_be_finite(srv, timit, params):
    body = assert_deepgram_error(post(srv, timit, params), 400)
    assert body["err_code"] == "INVALID_QUERY_PARAMETER"


def test_deep_json_is_a_400(srv):
    deep = b"[" * 100_000 + b"]" * 100_000
    body = assert_deepgram_error(
        post(srv, deep, headers={"Content-Type": "application/json"}), 413
    )  # over json_max_bytes before any parsing
    assert body["err_code"] == "PAYLOAD_TOO_LARGE"
    nested = b'{"url": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    body = assert_deepgram_error(
        post(srv, nested, headers={"Content-Type": "application/json"}), 400
    )
    assert body["err_code"] == "INVALID_JSON"


def test_chunked_json_body_is_bounded(srv):
    def chunks():
        yield b'{"url": "'
        for _ in range(10_000):  # 640 MB if it were all read
            yield b"a" * 65536

    body = assert_deepgram_error(
        post(srv, chunks(), headers={"Content-Type": "application/json"}), 413
    )
    assert body["err_code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("bits", [0, 255])
def test_impossible_bit_depths_are_refused(srv, bits):
    """A 0-bit WAV answered 500 once."""
    body = assert_deepgram_error(post(srv, wav_header(16000, 1, bits, b"\0" * 4096)), 400)
    assert body["err_code"] == "Bad Request"


@pytest.mark.parametrize("bits", [1, 7, 12, 64])
def test_odd_bit_depths_are_decoded_or_refused(srv, bits):
    reply = post(srv, wav_header(16000, 1, bits, b"\0" * 4096))
    if reply.status_code != 200:
        assert_deepgram_error(reply, 400)


def test_decompression_bombs_are_refused_before_decoding(srv):
    before = peak_rss_mb(srv)
    # 28 KB of samples at 1 Hz: hours of audio once resampled.
    one_hz = assert_deepgram_error(post(srv, wav_header(1, 1, 16, b"\0" * 28000)), 400)
    assert "sample rate" in one_hz["err_msg"]
    # 8 bit at 1 kHz: 14 hours in a 50 MB body would be caught by its header too; 2 hours here.
    long_8k = wav_header(1000, 1, 8, b"\x80" * 7_200_000)
    assert assert_deepgram_error(post(srv, long_8k), 413)["err_code"] == "PAYLOAD_TOO_LARGE"
    # A FLAC whose header claims ten hours.
    claimed = assert_deepgram_error(post(srv, flac_claiming(36000)), 413)
    assert "header declares 36000 s" in claimed["err_msg"]
    # Three at once.
    with httpx.Client(timeout=60) as client:
        for _ in range(3):
            assert client.post(f"{srv.url}/v1/listen", content=long_8k).status_code == 413
    assert peak_rss_mb(srv) - before < 150, "a bomb must not cost memory"


def test_channels_over_the_limit_are_413(srv):
    rng = np.random.default_rng(0)
    tracks = (rng.uniform(-0.1, 0.1, (9, 1600)) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(9)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(tracks.T.tobytes())
    body = assert_deepgram_error(post(srv, buffer.getvalue()), 413)
    assert "9 channels" in body["err_msg"]


def test_thousands_of_unknown_parameters(srv, timit):
    many = [(f"p{i}", "1") for i in range(7000)]
    reply = post(srv, timit, many)
    body = assert_deepgram_error(reply, 400)
    assert "Too many query parameters" in body["err_msg"] and len(reply.content) < 1000
    some = post(srv, timit, [(f"p{i}", "1") for i in range(200)])
    assert some.status_code == 200, some.text
    warnings = some.json()["metadata"]["warnings"]
    assert len(warnings) == 21 and warnings[-1]["type"] == "warnings_truncated"
    assert len(some.content) < 20_000


def test_repeated_keyterms_count_once_and_steer_nothing(srv, timit):
    """4,000 repeats of `keyterm=hello` once steered the text to "hello hello ...": now so
    many parameters are a 400, and repeats within the limit count once."""
    clip = corpus.by_name(TIMIT)
    flood = post(srv, timit, [("keyterm", "hello")] * 4000)
    assert assert_deepgram_error(flood, 400)["err_code"] == "INVALID_QUERY_PARAMETER"
    reply = post(srv, timit, [("keyterm", "hello"), ("keyterm", "HELLO ")] * 120)
    assert reply.status_code == 200, reply.text
    text = transcript(reply.json())
    assert text.lower().count("hello") <= 1, text
    assert corpus.wer([clip.reference], [text]) < 30, text
    too_many = post(srv, timit, [("keyterm", f"term{i}") for i in range(101)])
    assert assert_deepgram_error(too_many, 400)["err_code"] == "INVALID_QUERY_PARAMETER"


def test_still_transcribes_afterwards(srv, timit):
    clip = corpus.by_name(TIMIT)
    reply = post(srv, timit)
    assert reply.status_code == 200
    assert corpus.wer([clip.reference], [transcript(reply.json())]) < 30
    assert srv.process.poll() is None

"""Pure parts of streaming, without a server: G.711 tables, chunk-size independence of the raw
decoder, the endpointing floor, and the message builders. (The state machine's seams:
tests/test_ws_seams.py.)"""

from __future__ import annotations

import asyncio
import json

import av
import numpy as np
import pytest

from server.audio.decode import RawFormat
from server.audio.stream import RawStreamDecoder, raw_to_float
from server.deepgram import live
from server.deepgram.text import TextOptions
from server.engine import ModelInfo
from server.streaming import policy
from server.streaming.results import SpeechStarted, StreamResult, StreamWord, UtteranceEnd
from server.streaming.session import NET_0001, close_reason


@pytest.mark.parametrize("codec", ["pcm_mulaw", "pcm_alaw"])
def test_g711_tables_match_ffmpeg(codec):
    """Every one of the 256 code words expands exactly as FFmpeg's decoder does."""
    payload = bytes(range(256))
    context = av.CodecContext.create(codec, "r")
    context.sample_rate, context.layout = 8000, "mono"
    frames = context.decode(av.Packet(payload))
    expected = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) / 32768.0
    ours = raw_to_float(payload, "mulaw" if codec == "pcm_mulaw" else "alaw")
    np.testing.assert_array_equal(ours, expected.astype(np.float32))


@pytest.mark.parametrize("encoding,rate", [("linear16", 16000), ("linear32", 8000)])
def test_raw_decoder_is_independent_of_chunk_size(encoding, rate):
    rng = np.random.default_rng(1)
    if encoding == "linear16":
        data = rng.integers(-(2**14), 2**14, 2 * 4000).astype("<i2")
    else:  # Deepgram's linear32 is float PCM
        data = rng.uniform(-0.5, 0.5, 2 * 4000).astype("<f4")
    blob = data.tobytes()  # stereo interleaved

    def run(size: int) -> np.ndarray:
        out: list[np.ndarray] = []
        decoder = RawStreamDecoder(RawFormat(encoding, rate, 2), out.append)
        for i in range(0, len(blob), size):
            decoder.feed(blob[i : i + size])
        asyncio.run(decoder.finish())
        return np.concatenate(out, axis=1)

    whole, odd = run(len(blob)), run(333)  # 333 bytes splits samples and frames
    assert whole.shape[0] == 2
    np.testing.assert_allclose(odd, whole, atol=1e-6)
    assert abs(whole.shape[1] - 4000 * 16000 / rate) <= 64


def test_endpoint_floor():
    assert policy.endpoint_silence_ms(10, 300, 500) == 300  # Deepgram's default 10 ms
    assert policy.endpoint_silence_ms(800, 300, 500) == 800
    assert policy.endpoint_silence_ms(None, 300, 500) == 500  # endpointing=false


def test_messages_are_known_types_with_required_fields():
    info = ModelInfo("tiny.en", "whisper-tiny.en", "2022", False)
    empty = StreamResult(0, 1.0, 2.5, (), is_final=True, from_finalize=True)
    messages = [
        live.results(empty, channels=1, text=TextOptions(), request_id="r", model=info),
        live.metadata(request_id="r", sha256="x", duration=0, channels=0, model=info),
        live.speech_started(0, 2, 1.23456),
        live.utterance_end(1, 2, 2.0),
        live.error("bad", "{"),
    ]
    assert {m["type"] for m in messages} <= live.KNOWN_TYPES
    results = messages[0]
    assert results["duration"] == 1.5 and results["channel_index"] == [0, 1]
    assert results["channel"]["alternatives"][0] == {
        "transcript": "",
        "confidence": 0.0,
        "words": [],
    }
    assert set(results["metadata"]) == {"request_id", "model_uuid", "model_info"}
    assert "models" not in messages[1]  # no audio: no model fields, as Deepgram does
    assert messages[2]["timestamp"] == 1.235
    json.dumps(messages)


def test_stream_events_become_deepgram_messages():
    info = ModelInfo("tiny.en", "whisper-tiny.en", "2022", False)
    words = (StreamWord(" Hello,", 1.0, 1.4, 0.9, -0.1), StreamWord(" world.", 1.5, 1.9, 0.8, -0.3))
    result = StreamResult(1, 0.5, 2.0, words, is_final=True, speech_final=True)
    context = {
        "channels": 2,
        "text": TextOptions(punctuate=True),
        "request_id": "r",
        "model": info,
    }
    message = live.message(result, **context)
    alt = message["channel"]["alternatives"][0]
    assert message["channel_index"] == [1, 2] and message["speech_final"]
    assert alt["transcript"] == "Hello, world."
    assert [w["word"] for w in alt["words"]] == ["hello", "world"]
    assert alt["confidence"] == result.confidence == pytest.approx(0.8187, abs=1e-4)
    assert live.message(SpeechStarted(1, 0.25), **context) == live.speech_started(1, 2, 0.25)
    assert live.message(UtteranceEnd(0, 1.9), **context) == live.utterance_end(0, 2, 1.9)


def test_close_reasons_fit_the_frame():
    assert len(NET_0001.encode()) == 108 and close_reason(NET_0001) == NET_0001
    assert len(close_reason("é" * 200).encode()) <= 123

"""Pure parts of streaming, without a server: G.711 tables, chunk-size independence of the raw
decoder, the commit policy, and the message builders."""

from __future__ import annotations

import asyncio
import json

import av
import numpy as np
import pytest

from server.audio.decode import RawFormat
from server.audio.stream import RawStreamDecoder, raw_to_float
from server.deepgram import live
from server.engine import ModelInfo, Word
from server.streaming import policy
from server.streaming.policy import TimedWord
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
    width = 2 if encoding == "linear16" else 4
    dtype = "<i2" if width == 2 else "<i4"
    data = rng.integers(-(2 ** (8 * width - 2)), 2 ** (8 * width - 2), 2 * 4000).astype(dtype)
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


def _words(*items: tuple[str, float, float]) -> list[TimedWord]:
    return [TimedWord(Word(f" {t}", s, e, 0.9), -0.2, 3) for t, s, e in items]


def test_local_agreement_commits_only_stable_words_clear_of_the_edge():
    before = _words(
        ("Hello", 0.0, 0.4), ("there,", 0.5, 0.9), ("my", 1.0, 1.2), ("fiend", 5.0, 5.3)
    )
    now = _words(("hello", 0.0, 0.4), ("there", 0.5, 0.9), ("my", 1.0, 1.2), ("friend", 5.0, 5.4))
    assert policy.agreed_prefix(before, now) == 3  # case and punctuation do not matter
    committed = policy.stable_commit(before, now, audio_end=6.0)
    assert [w.key for w in committed] == ["hello", "there", "my"]
    # The same agreement near the audio edge waits.
    assert policy.stable_commit(before, now, audio_end=1.5) == now[:1]


def test_after_drops_echoes_of_committed_words():
    words = _words(("country", 9.80, 10.30), ("ask", 10.6, 10.9))
    assert [w.key for w in policy.after(words, committed_until=10.2)] == ["ask"]
    assert [w.key for w in policy.after(words, committed_until=9.9)] == ["country", "ask"]


def test_cut_point_lies_in_the_gap():
    committed = _words(("a", 0.0, 1.0))
    assert policy.cut_point(committed, _words(("b", 1.4, 2.0))) == pytest.approx(1.2)
    assert policy.cut_point(committed, []) == 1.0


def test_forced_commit_keeps_the_edge_words_open():
    words = _words(("a", 0, 1), ("b", 10, 11), ("c", 20, 21), ("d", 27, 27.5))
    assert [w.key for w in policy.forced_commit(words, audio_end=28)] == ["a", "b", "c"]


def test_endpoint_floor():
    assert policy.endpoint_silence_ms(10, 300, 500) == 300  # Deepgram's default 10 ms
    assert policy.endpoint_silence_ms(800, 300, 500) == 800
    assert policy.endpoint_silence_ms(None, 300, 500) == 500  # endpointing=false


def test_messages_are_known_types_with_required_fields():
    info = ModelInfo("tiny.en", "whisper-tiny.en", "2022", False)
    messages = [
        live.results(
            segments=[],
            channel=0,
            channels=1,
            start=1.0,
            end=2.5,
            is_final=True,
            speech_final=False,
            from_finalize=True,
            punctuate=False,
            request_id="r",
            model=info,
        ),
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


def test_close_reasons_fit_the_frame():
    assert len(NET_0001.encode()) == 108 and close_reason(NET_0001) == NET_0001
    assert len(close_reason("é" * 200).encode()) <= 123


def test_channel_buffer_stays_bounded_over_long_silence():
    """An hour of silence must not grow the channel's audio buffer (or open an utterance)."""
    from server.settings import Settings
    from server.streaming.channel import Channel, ChannelConfig

    async def go() -> tuple[int, int]:
        info = ModelInfo("tiny.en", "whisper-tiny.en", "2022", False)
        config = ChannelConfig(
            index=0,
            count=1,
            model="tiny.en",
            model_info=info,
            request_id="r",
            interim_results=True,
            punctuate=False,
            endpoint_ms=300,
            speech_final=True,
            utterance_end_ms=None,
            vad_events=True,
            vad_threshold=Settings().vad_threshold,
            interim_step_s=0.5,
            max_utterance_s=12,
            final_options=live_options(),
            interim_options=live_options(),
        )
        sent: list[dict] = []
        channel = Channel(config, engine=None, emit=sent.append, wall_at=lambda _: 0.0)  # type: ignore[arg-type]
        chunk = np.zeros(16000 * 10, np.float32)
        for _ in range(60):  # 10 minutes
            channel.feed(chunk)
        size = len(channel._audio)
        await channel.close()
        return size, len(sent)

    size, sent = asyncio.run(go())
    assert size <= 16000 * 25
    assert sent == 0


def live_options():
    from server.engine import DecodeOptions

    return DecodeOptions()

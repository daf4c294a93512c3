"""WebSocket /v1/listen: message shapes, control messages, close sequence, VAD gating.

Real server, real tiny.en, real corpus audio; assertions are on content, not just status.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

from tests import corpus
from tests.ws_helpers import (
    CLOSE,
    KNOWN_TYPES,
    RAW16,
    audio_frames,
    chunks,
    pcm16,
    samples16k,
    stream,
)

JFK = "en_jfk_16k_mono.wav"


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    path = corpus.extra(JFK)
    if not path.is_file():
        pytest.skip(corpus.MISSING)
    return samples16k(path)


def _check_results_shape(message: dict, punctuate: bool = False) -> None:
    """Every field the SDKs require (contract §2.4), with the right types."""
    assert message["type"] == "Results"
    assert isinstance(message["channel_index"], list) and len(message["channel_index"]) == 2
    for key in ("duration", "start"):
        assert isinstance(message[key], float | int) and message[key] >= 0
    for key in ("is_final", "speech_final", "from_finalize"):
        assert isinstance(message[key], bool)
    alt = message["channel"]["alternatives"][0]
    assert isinstance(alt["transcript"], str)
    assert 0 <= alt["confidence"] <= 1
    for word in alt["words"]:
        assert set(word) >= {"word", "start", "end", "confidence"}
        assert word["start"] <= word["end"]
        assert message["start"] - 0.05 <= word["start"] <= message["start"] + message["duration"]
        if punctuate:
            assert "punctuated_word" in word
    meta = message["metadata"]
    assert meta["request_id"] and meta["model_uuid"]
    assert set(meta["model_info"]) == {"name", "version", "arch"}


def test_results_then_metadata_then_close_1000(server, jfk):
    frames = audio_frames(jfk)
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}&punctuate=true", frames)
    types = [m["type"] for m in result.messages]
    assert set(types) <= KNOWN_TYPES
    assert types[-1] == "Metadata" and types.count("Metadata") == 1
    assert "Results" in types and types.index("Results") < types.index("Metadata")
    assert result.close_code == 1000
    for message in result.of("Results"):
        _check_results_shape(message, punctuate=True)
        assert message["is_final"]  # interim_results defaults to false
    text = result.final_text()
    assert corpus.wer([corpus.by_name("en_jfk_inaugural_1961.flac").reference], [text]) < 25
    meta = result.messages[-1]
    sent = b"".join(f for f in frames if isinstance(f, bytes))
    assert meta["sha256"] == hashlib.sha256(sent).hexdigest()
    assert meta["duration"] == pytest.approx(len(jfk) / 16000, abs=0.05)
    assert meta["channels"] == 1
    assert meta["request_id"] == result.headers["dg-request-id"]
    assert meta["models"] == [result.finals[0]["metadata"]["model_uuid"]]
    # Word times are absolute and finals never overlap or repeat.
    words = result.final_words()
    assert words[-1]["end"] > 8.0
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    finals = result.finals
    for before, after in itertools.pairwise(finals):
        assert after["start"] >= before["start"] + before["duration"] - 1e-3


def test_empty_binary_frame_closes_like_closestream(server, jfk):
    frames = [*audio_frames(jfk[: 16000 * 4], close=False), b""]
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}", frames)
    assert [m["type"] for m in result.messages][-1] == "Metadata"
    assert result.close_code == 1000
    assert "fellow americans" in result.final_text().lower()


def test_no_audio_gives_empty_metadata(server):
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}", [CLOSE])
    assert result.close_code == 1000
    (meta,) = result.messages
    assert meta["type"] == "Metadata"
    assert meta["duration"] == 0 and meta["channels"] == 0
    assert meta["sha256"] == hashlib.sha256(b"").hexdigest()


def test_finalize_flushes_and_stream_goes_on(server, jfk):
    cut = int(16000 * 2.3)  # "and so my fellow americans" then mid-pause
    frames = [
        *audio_frames(jfk[:cut], close=False),
        json.dumps({"type": "Finalize"}),
        3.0,
        *audio_frames(jfk[cut:]),
    ]
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}&endpointing=false", frames)
    flushed = [m for m in result.finals if m["from_finalize"]]
    # The open utterance itself comes back marked from_finalize: one final, not a normal final
    # followed by an empty from_finalize one.
    assert len(flushed) == 1, result.finals
    assert "americans" in flushed[0]["channel"]["alternatives"][0]["transcript"].lower()
    assert result.finals[0] is flushed[0]
    later = [m for m in result.finals if not m["from_finalize"]]
    assert "country" in " ".join(m["channel"]["alternatives"][0]["transcript"] for m in later)
    assert result.close_code == 1000
    # endpointing=false: no final claims an endpoint.
    assert not any(m["speech_final"] for m in result.finals)


def test_finalize_over_silence_answers_empty(server):
    silence = pcm16(np.zeros(16000, np.float32))
    frames = [silence, json.dumps({"type": "Finalize"}), 1.5, CLOSE]
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}", frames)
    flushed = [m for m in result.finals if m["from_finalize"]]
    assert len(flushed) == 1
    assert flushed[0]["channel"]["alternatives"][0]["words"] == []
    assert result.messages[-1]["type"] == "Metadata"


def _stereo(left: str, right: str) -> bytes:
    """Two corpus clips as one interleaved 16 kHz linear16 stream, channel 0 and channel 1."""
    clips = []
    for name in (left, right):
        path = corpus.CORPUS / name
        if not path.is_file():
            pytest.skip(corpus.MISSING)
        clips.append(samples16k(path))
    pair = np.zeros((max(map(len, clips)) + 8000, 2), np.float32)
    for index, clip in enumerate(clips):
        pair[: len(clip), index] = clip
    return pcm16(pair.reshape(-1))


def test_finalize_with_a_channel_flushes_that_channel_only(server):
    """Deepgram's `{"type": "Finalize", "channel": N}` finalises channel N alone: the other
    channel's utterance is not cut, and exactly one from_finalize final answers. A channel
    the stream lacks gets an Error and the stream goes on."""
    data = _stereo("en_harvard_speechbrain_spk1_snt1.wav", "en_harvard_speechbrain_spk2_snt2.wav")
    frames = chunks(data, 6400)  # 100 ms of two channels
    mid = 12  # 1.2 s in: both speakers are mid-sentence
    query = f"{RAW16}&channels=2&multichannel=true&endpointing=300"
    result = stream(
        f"{server.ws_url}/v1/listen?{query}",
        [
            *frames[:mid],
            json.dumps({"type": "Finalize", "channel": 1}),
            json.dumps({"type": "Finalize", "channel": 2}),
            *frames[mid:],
            CLOSE,
        ],
        pace_s=0.1,
    )
    flushed = [m for m in result.finals if m["from_finalize"]]
    assert [m["channel_index"] for m in flushed] == [[1, 2]], result.finals
    assert 0.0 < flushed[0]["start"] + flushed[0]["duration"] <= 1.3
    # Channel 0 was never finalised: its sentence is one final, ended by its own endpoint.
    left = [
        m
        for m in result.finals
        if m["channel_index"] == [0, 2] and m["channel"]["alternatives"][0]["words"]
    ]
    assert len(left) == 1 and left[0]["speech_final"], left
    assert corpus.wer(["The child almost hurt the small dog."], [result.final_text(0)]) <= 15
    assert "joy" in result.final_text(1) and "living" in result.final_text(1)
    (error,) = result.of("Error")
    assert "out of range" in error["description"] and '"channel": 2' in error["message"]
    assert result.messages[-1]["type"] == "Metadata" and result.close_code == 1000


def test_keepalive_gets_no_reply(server, jfk):
    frames = [
        json.dumps({"type": "KeepAlive"}),
        '{"type": "KeepAlive"}',
        *audio_frames(jfk[: 16000 * 3]),
    ]
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}", frames)
    assert not result.of("Error")
    assert {m["type"] for m in result.messages} == {"Results", "Metadata"}


@pytest.mark.parametrize("text", ["not json at all", '{"type": "Bogus"}', "[1, 2]"])
def test_unparseable_text_gets_error_and_stream_goes_on(server, jfk, text):
    frames = [text, *audio_frames(jfk[: 16000 * 3])]
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}", frames)
    (error,) = result.of("Error")
    assert error["variant"] == "SchemaError"
    assert error["message"] == text and error["description"]
    assert "americans" in result.final_text().lower()
    assert result.close_code == 1000 and result.messages[-1]["type"] == "Metadata"


def test_undecodable_audio_closes_with_reason(server):
    garbage = b"this is certainly not audio, just text bytes. " * 2000
    frames = [*chunks(garbage, 8192), CLOSE]
    result = stream(f"{server.ws_url}/v1/listen", frames)
    assert result.close_code == 1008  # Deepgram's troubleshooting page: 1008 DATA-0000
    assert "DATA-0000" in result.close_reason and len(result.close_reason.encode()) <= 123
    assert result.of("Error")
    assert not result.of("Results")


def test_configure_updates_keyterms(server, jfk):
    frames = [json.dumps({"type": "Configure", "keyterms": ["Americans"]}), *audio_frames(jfk)]
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}", frames)
    (ok,) = result.of("ConfigureSuccess")
    assert ok["keyterms"] == ["Americans"]
    assert "country" in result.final_text()


def test_interim_results_then_finals(server, jfk):
    result = stream(
        f"{server.ws_url}/v1/listen?{RAW16}&interim_results=true&punctuate=true",
        audio_frames(jfk),
        pace_s=0.1,  # real time: interims need time to happen
    )
    assert result.interims and result.finals
    for message in result.of("Results"):
        _check_results_shape(message, punctuate=True)
    # Interims for a window share its start with the final that replaces them.
    final_starts = {m["start"] for m in result.finals}
    assert all(m["start"] in final_starts for m in result.interims)
    # An interim never comes after the final of the same window.
    seen_final_starts: set[float] = set()
    for message in result.of("Results"):
        if message["is_final"]:
            seen_final_starts.add(message["start"])
        else:
            assert message["start"] not in seen_final_starts
    assert any(m["speech_final"] for m in result.finals)
    assert (
        corpus.wer([corpus.by_name("en_jfk_inaugural_1961.flac").reference], [result.final_text()])
        < 25
    )


def test_vad_events_and_utterance_end(server, jfk):
    tail = np.zeros(16000 * 2, np.float32)  # 2 s of silence after the speech
    audio = np.concatenate([np.zeros(16000, np.float32), jfk[: int(16000 * 2.3)], tail])
    result = stream(
        f"{server.ws_url}/v1/listen?{RAW16}&vad_events=true&utterance_end_ms=1000"
        "&interim_results=true",
        audio_frames(audio),
        pace_s=0.05,
    )
    started = result.of("SpeechStarted")
    assert started and started[0]["channel"] == [0, 1]
    assert 0.9 <= started[0]["timestamp"] <= 1.6  # speech starts ~1.3 s in
    ends = result.of("UtteranceEnd")
    assert ends, result.messages
    last_word_end = result.final_words()[-1]["end"]
    assert ends[0]["last_word_end"] == pytest.approx(last_word_end, abs=0.01)
    types = [m["type"] for m in result.messages]
    assert types.index("SpeechStarted") < types.index("Results")


@pytest.mark.parametrize("kind", ["silence", "white_noise", "clicks"])
def test_no_words_from_silence_or_noise(server, kind):
    rng = np.random.default_rng(7)
    n = 16000 * 8
    if kind == "silence":
        audio = np.zeros(n, np.float32)
    elif kind == "white_noise":
        audio = rng.normal(0, 0.1, n).astype(np.float32)
    else:  # keyboard-like: short decaying bursts at random intervals
        audio = rng.normal(0, 0.002, n).astype(np.float32)
        for at in np.sort(rng.integers(0, n - 800, 60)):
            burst = rng.normal(0, 0.5, 800) * np.exp(-np.arange(800) / 120)
            audio[at : at + 800] += burst.astype(np.float32)
    frames = [*audio_frames(audio, close=False), json.dumps({"type": "Finalize"}), 1.0, CLOSE]
    result = stream(
        f"{server.ws_url}/v1/listen?{RAW16}&interim_results=true&vad_events=true", frames
    )
    assert result.close_code == 1000
    words = [w for m in result.of("Results") for w in m["channel"]["alternatives"][0]["words"]]
    assert words == []


def test_stream_metrics_are_observed(server, jfk):
    import httpx

    def scrape() -> dict[str, float]:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        out = {}
        for line in text.splitlines():
            if line.startswith(
                (
                    "openlisten_stream_interim_latency_seconds_count",
                    "openlisten_stream_endpoint_latency_seconds_count",
                    'openlisten_audio_seconds_total{kind="stream"}',
                )
            ):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    before = scrape()
    stream(
        f"{server.ws_url}/v1/listen?{RAW16}&interim_results=true",
        audio_frames(jfk),
        pace_s=0.1,  # real time: an interim is shown before its final on any machine
    )
    after = scrape()
    for name, value in after.items():
        assert value > before.get(name, 0.0), name
    assert after['openlisten_audio_seconds_total{kind="stream"}'] - before.get(
        'openlisten_audio_seconds_total{kind="stream"}', 0.0
    ) == pytest.approx(len(jfk) / 16000, abs=0.05)
    assert len(after) == 3


def test_deeply_nested_json_text_gets_error_and_stream_goes_on(server, jfk):
    """`[[[[…` recursed past Python's limit in json.loads: the RecursionError killed the
    stream with no close frame (1006) and no final results."""
    deep = "[" * 200_000 + "]" * 200_000
    configure = '{"type": "Configure", "features": ' + "[" * 100_000 + "]" * 100_000 + "}"
    frames = [deep, configure, *audio_frames(jfk[: 16000 * 3])]
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}", frames)
    errors = result.of("Error")
    assert len(errors) == 2 and all(e["variant"] == "SchemaError" for e in errors), errors
    assert "americans" in result.final_text().lower()
    assert result.close_code == 1000 and result.messages[-1]["type"] == "Metadata"


def test_configure_keyterms_are_held_to_the_query_limits(server, jfk):
    """Configure once took 100,000 keyterms or one of 100 KB (which slowed every later decode
    of the stream by seconds) where `keyterm=` refuses more than 100 or longer than 100
    characters."""
    frames = [
        json.dumps({"type": "Configure", "keyterms": [f"term{i}" for i in range(101)]}),
        json.dumps({"type": "Configure", "keyterms": ["x" * 101]}),
        json.dumps({"type": "Configure", "keyterms": [" Americans ", "americans", ""] * 500}),
        *audio_frames(jfk[: 16000 * 3]),
    ]
    result = stream(f"{server.ws_url}/v1/listen?{RAW16}", frames)
    too_many, too_long = result.of("ConfigureFailure")
    assert too_many["code"] == too_long["code"] == "CONFIGURE_KEYTERM_LIMIT_EXCEEDED"
    assert "101" in too_many["description"] and "100 characters" in too_long["description"]
    (ok,) = result.of("ConfigureSuccess")
    assert ok["keyterms"] == ["Americans"]  # repeats count once, as in the query string
    assert "americans" in result.final_text().lower()
    assert result.close_code == 1000

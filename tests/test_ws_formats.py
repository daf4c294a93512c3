"""Streaming audio formats: raw encodings, containers sniffed from the first bytes, multichannel,
and a long monologue committed piecewise. Every case checks the transcript, not just a status."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

from tests import corpus
from tests.ws_helpers import CLOSE, chunks, encode, samples16k, stream, webm_opus

ARCTIC = "en_cmuarctic_a0010.wav"
MULAW = "en_deepgram_testing_123_8k_mulaw.wav"


def _raw(samples: np.ndarray, codec: str, rate: int, sample_fmt: str = "s16") -> bytes:
    """Headerless bytes in a G.711/PCM codec, via PyAV's own encoders (not our tables)."""
    context = av.CodecContext.create(codec, "w")
    context.sample_rate, context.layout, context.format = rate, "mono", sample_fmt
    resampler = av.AudioResampler(format=sample_fmt, layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(
        (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None], format="s16", layout="mono"
    )
    frame.sample_rate = 16000
    data = b""
    for piece in resampler.resample(frame):
        data += b"".join(bytes(p) for p in context.encode(piece))
    return data + b"".join(bytes(p) for p in context.encode(None))


@pytest.fixture(scope="module")
def arctic() -> tuple[np.ndarray, str]:
    corpus_clip = corpus.by_name(ARCTIC) if corpus.clips() else None
    if corpus_clip is None:
        pytest.skip(corpus.MISSING)
    return samples16k(corpus_clip.path), corpus_clip.reference


CASES = {
    "linear16@44100": lambda a: (
        "encoding=linear16&sample_rate=44100",
        _raw(a, "pcm_s16le", 44100),
    ),
    "linear32@16000": lambda a: (
        "encoding=linear32&sample_rate=16000",
        _raw(a, "pcm_f32le", 16000, "flt"),  # Deepgram's linear32 is float PCM
    ),
    "alaw@8000": lambda a: ("encoding=alaw&sample_rate=8000", _raw(a, "pcm_alaw", 8000)),
    "webm-opus (browser)": lambda a: ("", webm_opus(a)),
    "ogg-opus": lambda a: ("", encode(a, "ogg", "libopus", 48000, "s16")),
    "ogg-opus encoding=opus": lambda a: (
        "encoding=opus",
        encode(a, "ogg", "libopus", 48000, "s16"),
    ),
    "mp3 (radio)": lambda a: ("", encode(a, "mp3", "libmp3lame", 44100, "s16p")),
    "flac": lambda a: ("encoding=flac", encode(a, "flac", "flac", 16000, "s16")),
    "wav with header": lambda a: ("", encode(a, "wav", "pcm_s16le", 22050, "s16")),
}


@pytest.mark.parametrize("chunk", [1024, 16000])
@pytest.mark.parametrize("case", list(CASES))
def test_formats_transcribe(server, arctic, case, chunk):
    samples, reference = arctic
    query, data = CASES[case](samples)
    result = stream(f"{server.ws_url}/v1/listen?{query}", [*chunks(data, chunk), CLOSE])
    assert result.close_code == 1000, result.close_reason
    assert corpus.wer([reference], [result.final_text()]) <= 20, result.final_text()
    assert result.messages[-1]["duration"] == pytest.approx(len(samples) / 16000, abs=0.15)


def test_mulaw_8k_telephone_stream(server):
    clip = corpus.by_name(MULAW)
    with av.open(str(clip.path)) as container:
        payload = b"".join(bytes(p) for p in container.demux(audio=0))  # the raw G.711 bytes
    result = stream(
        f"{server.ws_url}/v1/listen?encoding=mulaw&sample_rate=8000&channels=1",
        [*chunks(payload, 160), CLOSE],  # 20 ms telephony packets
    )
    assert corpus.wer([clip.reference], [result.final_text()]) <= 20, result.final_text()
    # The clip ends in 0.65 s of silence after its endpoint: the last final still reaches the
    # end of the audio, as Deepgram's does, so the finals tile all of what the client sent.
    last, meta = result.finals[-1], result.messages[-1]
    assert last["start"] + last["duration"] == pytest.approx(len(payload) / 8000, abs=0.002)
    assert meta["type"] == "Metadata" and meta["duration"] == pytest.approx(len(payload) / 8000)
    # The same file with its WAV header and no parameters is sniffed.
    sniffed = stream(f"{server.ws_url}/v1/listen", [*chunks(clip.path.read_bytes(), 4096), CLOSE])
    assert corpus.wer([clip.reference], [sniffed.final_text()]) <= 20


def test_multichannel_transcribes_each_channel(server):
    path = corpus.extra("en_stereo_2spk_per_channel.wav")
    if not path.is_file():
        pytest.skip(corpus.MISSING)
    refs = {}
    for line in (path.parent / "extras.tsv").read_text().splitlines():
        name, _, text = line.split("\t")[:3]
        if name.startswith(path.name + "#ch"):
            refs[int(name[-1])] = text
    data = path.read_bytes()
    result = stream(f"{server.ws_url}/v1/listen?multichannel=true", [*chunks(data, 8192), CLOSE])
    indexes = {tuple(m["channel_index"]) for m in result.finals}
    assert indexes == {(0, 2), (1, 2)}
    for channel, reference in refs.items():
        assert corpus.wer([reference], [result.final_text(channel)]) <= 25, result.final_text(
            channel
        )
    assert result.messages[-1]["channels"] == 2


def test_long_monologue_commits_piecewise(server_factory):
    """No pause long enough to endpoint: finals must still come, bounded, never repeated."""
    long = corpus.CORPUS / "en_ljspeech_LJ001-0001_to_0032_long.wav"
    segments = long.with_name("en_ljspeech_LJ001-0001_to_0032_long.segments.tsv")
    if not long.is_file():
        pytest.skip(corpus.MISSING)
    srv = server_factory(
        env={"OPENLISTEN_WS_MAX_UTTERANCE_S": "6", "OPENLISTEN_WS_MIN_ENDPOINTING_MS": "3000"}
    )
    seconds = 45.0
    audio = samples16k(long)[: int(16000 * seconds)]
    rows = [r.split("\t") for r in segments.read_text().splitlines()]
    rows = [r for r in rows if r[0].replace(".", "").isdigit()]
    reference = " ".join(r[2] for r in rows if float(r[1]) <= seconds)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    result = stream(
        f"{srv.ws_url}/v1/listen?encoding=linear16&sample_rate=16000&interim_results=true",
        [*chunks(pcm, 6400), CLOSE],
        pace_s=0.05,  # 4x real time
        timeout=300,
    )
    finals = result.finals
    piecewise = [m for m in finals if not m["speech_final"]]
    assert len(piecewise) >= 4, [m["duration"] for m in finals]
    assert max(m["duration"] for m in finals) <= 30
    words = result.final_words()
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    for before, after in itertools.pairwise(finals):
        assert after["start"] == pytest.approx(before["start"] + before["duration"], abs=0.002)
    # The last reference clip may be cut at `seconds`; score on what overlaps.
    assert corpus.wer([reference], [result.final_text()]) <= 20, result.final_text()


@pytest.mark.parametrize(
    "query",
    ["model=base&language=fr", "model=base&detect_language=true", "model=base&language=multi"],
)
def test_language_and_model_as_in_rest(server, query):
    """A multilingual model, a chosen or detected language: the stream reads like REST."""
    import httpx
    import jiwer

    clip = corpus.by_name("fr_picovoice_leopard_test_fr.wav")
    data = clip.path.read_bytes()
    rest = httpx.post(f"{server.url}/v1/listen?{query}", content=data, timeout=300).json()
    rest_text = rest["results"]["channels"][0]["alternatives"][0]["transcript"]
    result = stream(f"{server.ws_url}/v1/listen?{query}", [*chunks(data, 8192), CLOSE])
    assert result.finals[0]["metadata"]["model_info"]["name"] == "base"
    text = result.final_text()
    assert rest_text and jiwer.wer(rest_text.lower(), text.lower()) <= 0.3, (rest_text, text)
    # A detected language is said as Deepgram's multilingual Results say it: the alternative's
    # `languages` and each word's `language`; a language the client chose is not repeated.
    alternatives = [m["channel"]["alternatives"][0] for m in result.finals]
    spoken = [a for a in alternatives if a["words"]]
    assert spoken
    if "language=fr" in query:
        assert not any("languages" in a for a in alternatives)
    else:
        assert all(a["languages"] == ["fr"] for a in spoken)
        assert {w["language"] for a in spoken for w in a["words"]} == {"fr"}

"""Bounded fuzzing: the decoders and the query parser in-process (hypothesis, shrinking to a
minimal failing input), then thousands of mutated requests against a live server, which must
answer each with a 4xx (or a 200, or 503 under load), never another 5xx or a reset, and still
transcribe correctly afterwards.

Seeds are one second of faint noise in every container the server sniffs, plus raw PCM:
mutations reach the demuxers and codecs, and what still decodes costs no inference (the VAD
finds no speech), so thousands of requests fit in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import httpx
import numpy as np
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.api.body import json_object
from server.audio.decode import AudioError, DecodeLimits, RawFormat, decode
from server.audio.stream import ContainerStreamDecoder, RawStreamDecoder
from server.deepgram.params import ParamError, ParamLimits, parse
from server.errors import InvalidJson
from server.notices import MAX_NOTICES
from tests import corpus
from tests.test_rest_support import FORMATS, transcript
from tests.ws_helpers import encode

# Every container the REST tests sniff, and 8-bit WAV: name -> (format, codec, rate).
CONTAINERS = {**FORMATS, "wav8": ("wav", "pcm_u8", 8000)}
LIMITS = DecodeLimits(max_duration_s=60, max_channels=16)
FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same inputs every run: CI is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@cache
def seeds() -> dict[str, bytes]:
    noise = np.random.default_rng(7).normal(0, 0.01, 16000).astype(np.float32)
    out = {name: encode(noise, *spec) for name, spec in CONTAINERS.items()}
    out["raw"] = (noise[:4000] * 32767).astype("<i2").tobytes()
    return out


def mutate(data: bytes, ops: list[tuple[int, float, int]]) -> bytes:
    """Bit flips, byte overwrites, cuts, insertions and duplications at fractional positions."""
    buf = bytearray(data)
    for kind, where, value in ops:
        if not buf:
            break
        at = min(int(where * len(buf)), len(buf) - 1)
        if kind == 0:
            buf[at] ^= 1 << (value % 8)
        elif kind == 1:
            buf[at] = value % 256
        elif kind == 2:
            del buf[at:]
        elif kind == 3:
            buf[at:at] = bytes([value % 256]) * (1 + value % 64)
        elif kind == 4:
            buf[at:at] = buf[at : at + 1 + value % 512]
        else:  # the header region: where most demuxer decisions are made
            buf[at % min(len(buf), 64)] = value % 256
    return bytes(buf)


OPS = st.lists(
    st.tuples(st.integers(0, 5), st.floats(0, 1), st.integers(0, 1 << 16)), min_size=1, max_size=8
)


def check_decoded(samples: np.ndarray) -> None:
    assert samples.dtype == np.float32 and samples.ndim == 2
    assert samples.shape[1] <= LIMITS.max_duration_s * 16000 + 16000
    assert np.isfinite(samples).all()


@settings(FUZZ, max_examples=400)
@given(name=st.sampled_from(sorted(CONTAINERS)), ops=OPS, mono=st.booleans())
def test_file_decoder_only_raises_audio_errors(name, ops, mono):
    try:
        audio = decode(mutate(seeds()[name], ops), limits=LIMITS, mono=mono)
    except AudioError:
        return
    check_decoded(audio.samples)


@settings(FUZZ, max_examples=80)
@given(
    ops=OPS,
    encoding=st.sampled_from(["linear16", "linear32", "mulaw", "alaw", "float32"]),
    rate=st.sampled_from([8000, 16000, 44100, 48000]),
    channels=st.integers(1, 6),
    chunk=st.integers(7, 16384),
)
def test_raw_decoders_take_any_bytes(ops, encoding, rate, channels, chunk):
    data = mutate(seeds()["raw"], ops)
    raw = RawFormat(encoding, rate, channels)
    try:
        audio = decode(data, raw, limits=LIMITS)
    except AudioError:
        pass
    else:
        check_decoded(audio.samples)
    got: list[np.ndarray] = []
    stream = RawStreamDecoder(raw, got.append)
    for start in range(0, len(data), chunk):
        stream.feed(data[start : start + chunk])
    asyncio.run(stream.finish())
    for piece in got:
        check_decoded(piece)


@settings(FUZZ, max_examples=200)
@given(name=st.sampled_from(sorted(CONTAINERS)), ops=OPS, chunk=st.integers(64, 8192))
def test_stream_decoder_reports_errors_never_raises(name, ops, chunk):
    data = mutate(seeds()[name], ops)

    async def run() -> None:
        got: list[np.ndarray] = []
        errors: list[AudioError] = []
        decoder = ContainerStreamDecoder(got.append, errors.append)
        for start in range(0, len(data), chunk):
            decoder.feed(data[start : start + chunk])
        await decoder.finish(timeout=10)
        decoder.close()
        for piece in got:
            check_decoded(piece)
        assert all(isinstance(e, AudioError) for e in errors)

    asyncio.run(run())


NAMES = st.sampled_from(
    [
        "model",
        "language",
        "detect_language",
        "punctuate",
        "smart_format",
        "utterances",
        "utt_split",
        "paragraphs",
        "multichannel",
        "encoding",
        "sample_rate",
        "channels",
        "callback",
        "callback_method",
        "endpointing",
        "utterance_end_ms",
        "interim_results",
        "keyterm",
        "keywords",
        "tag",
        "extra",
        "numerals",
        "redact",
        "replace",
        "search",
        "diarize",
        "version",
    ]
) | st.text(max_size=12)
VALUES = st.sampled_from(
    ["true", "false", "1", "0", "inf", "-inf", "nan", "1e400", "-1", "16000", "", "en", "multi"]
) | st.text(max_size=40)


@settings(FUZZ, max_examples=500)
@given(items=st.lists(st.tuples(NAMES, VALUES), max_size=30))
def test_query_parser_gives_params_or_a_400(items):
    limits = ParamLimits(max_params=32, max_keyterms=5)
    try:
        params = parse(items, limits)
    except ParamError:
        return
    for value in (params.utt_split, params.sample_rate, params.endpointing_ms):
        assert value is None or np.isfinite(value)
    assert len(params.keyterms) <= limits.max_keyterms
    assert len(list(params.warnings)) <= MAX_NOTICES + 1


@settings(FUZZ, max_examples=200)
@given(
    raw=st.binary(max_size=300)
    | st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=40,
    ).map(lambda v: json.dumps(v).encode())
)
def test_json_bodies_give_an_object_or_a_400(raw):
    with contextlib.suppress(InvalidJson):
        assert isinstance(json_object(raw), dict)


# --- against a live server ------------------------------------------------------------------


def _requests(count: int, rng: random.Random) -> list[tuple[dict, bytes]]:
    """Mutated bodies (most) and mutated query strings on a valid body (the rest)."""
    names = sorted(CONTAINERS)
    out = []
    for index in range(count):
        if index % 4 == 3:
            items = [
                (rng.choice(["punctuate", "sample_rate", "utt_split", "language", "keyterm"]),
                 rng.choice(["inf", "nan", "x\r\ny", "日本", "1e400", "-5", "true", ""]))
                for _ in range(rng.randint(1, 5))
            ]  # fmt: skip
            out.append((dict(items), seeds()["wav"]))
            continue
        name = rng.choice(names)
        ops = [(rng.randint(0, 5), rng.random(), rng.randint(0, 1 << 16)) for _ in range(4)]
        params = {} if name != "raw" else {"encoding": "linear16", "sample_rate": "16000"}
        out.append((params, mutate(seeds()[name], ops)))
    return out


def test_live_server_survives_thousands_of_mutated_requests(server):
    rng = random.Random(11)
    work = _requests(2000, rng)

    def send(item: tuple[dict, bytes]) -> tuple[int, str]:
        params, body = item
        reply = client.post(f"{server.url}/v1/listen", params=params, content=body)
        return reply.status_code, reply.text[:200]

    with (
        httpx.Client(timeout=120, limits=httpx.Limits(max_connections=8)) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        outcomes = list(pool.map(send, work))
    server_errors = [(s, t) for s, t in outcomes if s >= 500 and s != 503]
    assert not server_errors, server_errors[:5]
    statuses = {s for s, _ in outcomes}
    assert statuses <= {200, 400, 413, 503}, statuses
    assert server.process.poll() is None


def test_live_streams_survive_mutated_audio(server):
    rng = random.Random(12)
    names = ["webm", "ogg-opus", "mp3", "flac", "wav"]

    async def one(index: int) -> int | None:
        name = names[index % len(names)]
        data = mutate(seeds()[name], [(rng.randint(0, 5), rng.random(), rng.randint(0, 999))])
        async with websockets.connect(f"{server.ws_url}/v1/listen", open_timeout=30) as ws:
            try:
                for start in range(0, len(data), 4096):
                    await ws.send(data[start : start + 4096])
                await ws.send(json.dumps({"type": "CloseStream"}))
                async for _ in ws:
                    pass
            except websockets.ConnectionClosed:
                pass
            return ws.close_code

    async def run() -> list[int | None]:
        codes = []
        for batch in range(0, 60, 12):
            codes += await asyncio.gather(*(one(i) for i in range(batch, batch + 12)))
        return codes

    codes = asyncio.run(asyncio.wait_for(run(), 120))
    assert set(codes) <= {1000, 1002, 1008, 1011}, codes  # never 1006: the process lives
    assert server.process.poll() is None


def test_transcribes_correctly_after_the_fuzzing(server):
    clip = corpus.by_name("en_timit_LDC93S1.wav")
    reply = httpx.post(f"{server.url}/v1/listen", content=clip.path.read_bytes(), timeout=60)
    assert reply.status_code == 200
    assert corpus.wer([clip.reference], [transcript(reply.json())]) < 30

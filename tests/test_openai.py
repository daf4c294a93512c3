"""OpenAI's audio API through the official `openai` Python client against a live server.

Content is checked, not only shapes: corpus WER for text, verbose_json (words), srt, vtt and
the server-sent-event stream; subtitle cues obey the line and duration rules; a German and a
French clip translate to English; keys, errors and metrics behave as on `/v1/listen`.
"""

from __future__ import annotations

import itertools
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import corpus
from tests.subtitle_check import check_cue_rules, parse_cues

openai = pytest.importorskip("openai", reason="the openai client is a test dependency")
# The client marks `audio.translations` deprecated; the route is what is under test.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

CLIPS = [
    "en_jfk_inaugural_1961.flac",
    "en_librispeech_1272-128104-0000.wav",
    "en_timit_LDC93S1.wav",
    "en_cmuarctic_a0010.wav",
]
CALL = "en_multispeaker_pyannote_sample_telephone.wav"  # 21 s of dialogue: many cues


def client(server, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=300)


def transcribe(server, name: str, **options):
    with corpus.by_name(name).path.open("rb") as audio:
        return client(server).audio.transcriptions.create(file=audio, model="whisper-1", **options)


def many(server, names: list[str], **options) -> list:
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(lambda n: transcribe(server, n, **options), names))


@pytest.fixture(scope="module", autouse=True)
def _corpus():
    if not corpus.clips():
        pytest.skip(corpus.MISSING)


def test_text_wer_on_corpus(server):
    texts = many(server, CLIPS, response_format="text")
    assert all(isinstance(t, str) for t in texts)
    references = [corpus.by_name(n).reference for n in CLIPS]
    assert corpus.wer(references, texts) <= 12, texts


def test_json_default_has_text_and_duration_usage(server):
    result = transcribe(server, CLIPS[0])
    assert isinstance(result, openai.types.audio.Transcription)
    assert corpus.wer([corpus.by_name(CLIPS[0]).reference], [result.text]) <= 10
    assert result.usage is not None and result.usage.seconds == pytest.approx(11.0, abs=0.1)


def test_verbose_json_words_and_segments(server):
    results = many(
        server, [*CLIPS[:2], CALL], response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )  # fmt: skip
    for name, result in zip([*CLIPS[:2], CALL], results, strict=True):
        clip = corpus.by_name(name)
        assert result.language == "en" and result.duration == pytest.approx(clip.duration, abs=0.2)
        words = result.words
        assert words and result.segments
        assert corpus.wer([clip.reference], [" ".join(w.word for w in words)]) <= 25, result.text
        starts = [w.start for w in words]
        assert starts == sorted(starts)
        assert all(0 <= w.start <= w.end <= result.duration + 0.05 for w in words)
        for segment in result.segments:
            assert segment.tokens and segment.avg_logprob < 0 and segment.text.strip()
            assert segment.start <= segment.end
        assert result.text == "".join(s.text for s in result.segments).strip()


def test_verbose_json_words_only(server):
    result = transcribe(
        server, CLIPS[1], response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert result.words and not result.segments


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_follow_the_rules(server, fmt):
    jfk, call = many(server, [CLIPS[0], CALL], response_format=fmt)
    if fmt == "vtt":
        assert jfk.startswith("WEBVTT\n\n")
    else:
        assert jfk.startswith("1\n00:00:00,")
    for name, text in ((CLIPS[0], jfk), (CALL, call)):
        cues = parse_cues(text)
        check_cue_rules(cues)
        spoken = " ".join(" ".join(lines) for _, _, lines in cues)
        limit = 10 if name == CLIPS[0] else 35  # dialogue over a phone line, tiny.en
        assert corpus.wer([corpus.by_name(name).reference], [spoken]) <= limit, text
    # 21 s of dialogue (75 words) is many cues, not one.
    assert len(parse_cues(call)) >= 4


def test_stream_sends_deltas_then_the_full_text(server):
    with corpus.by_name(CALL).path.open("rb") as audio:
        events = list(
            client(server).audio.transcriptions.create(file=audio, model="whisper-1", stream=True)
        )
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}
    joined = "".join(e.delta for e in events[:-1]).strip()
    assert joined == events[-1].text
    assert corpus.wer([corpus.by_name(CALL).reference], [joined]) <= 35


@pytest.mark.parametrize(
    "name,source_words,english",
    [
        ("de_picovoice_leopard_test_de.wav", {"der", "diesem", "wurde", "als"}, {"portal"}),
        ("fr_picovoice_leopard_test_fr.wav", {"sous", "le", "il", "des", "et"}, {"and"}),
    ],
)
def test_translation_comes_back_in_english(server, name, source_words, english):
    with corpus.by_name(name).path.open("rb") as audio:
        result = client(server).audio.translations.create(file=audio, model="whisper-1")
    words = set(re.findall(r"[a-zà-ÿ']+", result.text.lower()))
    assert english <= words, result.text
    assert len(words & {"the", "of", "was", "as", "and", "he", "in", "this", "a"}) >= 2, result
    assert not words & source_words, result.text


def test_translation_verbose_json_reports_source_language(server):
    with corpus.by_name("de_picovoice_leopard_test_de.wav").path.open("rb") as audio:
        result = client(server).audio.translations.create(
            file=audio, model="whisper-1", response_format="verbose_json"
        )
    assert result.language == "de" and result.segments


def test_language_picks_the_multilingual_model(server):
    result = transcribe(server, "de_picovoice_leopard_test_de.wav", language="de")
    reference = corpus.by_name("de_picovoice_leopard_test_de.wav").reference
    assert corpus.wer([reference], [result.text]) <= 40, result.text


def test_errors_have_openai_shape(server):
    with pytest.raises(openai.BadRequestError) as info:
        transcribe(server, CLIPS[0], response_format="json", timestamp_granularities=["word"])
    assert info.value.body["param"] == "timestamp_granularities"
    assert info.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        transcribe(server, CLIPS[0], temperature=3)
    assert info.value.body["param"] == "temperature"
    # Not audio: refused with a message, never a 500.
    bad = client(server).audio.transcriptions.with_raw_response
    with pytest.raises(openai.BadRequestError) as info:
        bad.create(file=("notes.txt", b"hello, I am text"), model="whisper-1")
    assert "audio" in info.value.body["message"]
    reply = httpx.post(f"{server.url}/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "file"
    # chunking_strategy: both of OpenAI's forms are what the server does anyway; not a typo.
    for strategy in ("auto", {"type": "server_vad", "silence_duration_ms": 500}):
        assert transcribe(server, CLIPS[0], chunking_strategy=strategy).text
    with pytest.raises(openai.BadRequestError) as info:
        transcribe(server, CLIPS[0], chunking_strategy="bogus")
    assert info.value.body["param"] == "chunking_strategy"


def test_metrics_count_openai_routes(server):
    transcribe(server, CLIPS[2], response_format="text")
    text = httpx.get(f"{server.url}/metrics").text
    assert re.search(
        r'openlisten_requests_total\{route="/v1/audio/transcriptions",status="200"\}', text
    )
    assert re.search(r'openlisten_audio_seconds_total\{kind="openai"\} [1-9]', text)


def test_bearer_keys_and_body_limit(keyed_server):
    with pytest.raises(openai.AuthenticationError) as info:
        transcribe(keyed_server, CLIPS[0])
    assert info.value.body["code"] == "invalid_api_key"
    with corpus.by_name(CLIPS[0]).path.open("rb") as audio:
        result = client(keyed_server, keyed_server.key).audio.transcriptions.create(
            file=audio, model="whisper-1"
        )
    assert "country" in result.text
    too_big = b"\0" * (keyed_server.max_body_bytes + 1)
    with pytest.raises(openai.APIStatusError) as info:
        client(keyed_server, keyed_server.key).audio.transcriptions.create(
            file=("big.wav", too_big), model="whisper-1"
        )
    assert info.value.status_code == 413


def test_chunked_upload_over_the_limit_is_refused(keyed_server):
    """No Content-Length to check up front: the limit holds while the body streams in."""
    boundary = "openlisten-test"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        for _ in range(keyed_server.max_body_bytes // (1 << 20) + 2):
            yield b"\0" * (1 << 20)
        yield f"\r\n--{boundary}--\r\n".encode()

    reply = httpx.post(
        f"{keyed_server.url}/v1/audio/transcriptions",
        content=body(),
        headers={
            "Authorization": f"Bearer {keyed_server.key}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        timeout=60,
    )
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "file_too_large"


def test_diarized_json_labels_the_speakers_of_a_conversation(server):
    """Speakers on a held-out assembled conversation (tests/conversations.py); words on the
    call."""
    from tests.conversations import held_out_no_pause_pairs

    conversation = held_out_no_pause_pairs(1)[0]
    result = client(server).audio.transcriptions.create(
        file=("conversation.wav", conversation.wav()),
        model="whisper-1",
        response_format="diarized_json",
    )
    assert isinstance(result, openai.types.audio.TranscriptionDiarized)
    speakers = [s.speaker for s in result.segments]
    assert set(speakers) == {"A", "B"}, speakers
    assert all(a != b for a, b in itertools.pairwise(speakers))  # turns
    assert all(s.start <= s.end for s in result.segments)
    call = transcribe(server, CALL, response_format="diarized_json")
    spoken = " ".join(s.text for s in call.segments)
    assert corpus.wer([corpus.by_name(CALL).reference], [spoken]) <= 35

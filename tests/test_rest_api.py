"""`POST /v1/listen` against a live server: response shape, parameters, formats, url sources,
callbacks, multichannel, language detection, models and auth. Assertions are on content."""

from __future__ import annotations

import hashlib
import re
import uuid

import httpx
import pytest

from tests import corpus
from tests.test_rest_support import (
    FORMATS,
    assert_deepgram_error,
    encode,
    g711,
    load_pcm,
    local_host,
    transcript,
)

JFK = "en_jfk_inaugural_1961.flac"
TIMIT = "en_timit_LDC93S1.wav"


@pytest.fixture(scope="module")
def jfk() -> corpus.Clip:
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return corpus.by_name(JFK)


def listen(server, data: bytes, timeout: float = 120, headers=None, **params) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/listen", params=params, content=data, headers=headers, timeout=timeout
    )


def ok_body(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_full_shape_and_request_id(server, jfk):
    data = jfk.path.read_bytes()
    response = listen(server, data, smart_format="true")
    body = ok_body(response)
    meta = body["metadata"]
    assert set(meta) >= {
        "transaction_key",
        "request_id",
        "sha256",
        "created",
        "duration",
        "channels",
        "models",
        "model_info",
    }
    assert meta["request_id"] == response.headers["dg-request-id"]
    assert uuid.UUID(meta["request_id"])
    assert "request_id" not in body  # a sync body never carries a top-level request_id
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", meta["created"])
    assert meta["duration"] == pytest.approx(jfk.duration, abs=0.05)
    assert meta["channels"] == 2  # the flac is stereo; mixed down without multichannel
    assert meta["models"][0] in meta["model_info"]
    assert response.headers["dg-model-uuid"] == meta["models"][0]
    alt = body["results"]["channels"][0]["alternatives"][0]
    assert corpus.wer([jfk.reference], [alt["transcript"]]) < 15
    assert 0 < alt["confidence"] <= 1
    assert alt["words"] and all(w["word"] == w["word"].lower() for w in alt["words"])
    assert all("punctuated_word" in w for w in alt["words"])
    # smart_format implies paragraphs
    paragraphs = alt["paragraphs"]
    assert paragraphs["transcript"].startswith("\n")
    assert paragraphs["paragraphs"][0]["sentences"][0]["text"]
    assert sum(p["num_words"] for p in paragraphs["paragraphs"]) == len(alt["words"])


def test_plain_request_is_lower_case_without_punctuation(server, jfk):
    body = ok_body(listen(server, jfk.path.read_bytes()))
    alt = body["results"]["channels"][0]["alternatives"][0]
    assert alt["transcript"] == alt["transcript"].lower()
    assert not re.search(r"[.,!?]", alt["transcript"])
    assert "punctuated_word" not in alt["words"][0]
    assert "paragraphs" not in alt
    assert alt["transcript"] == " ".join(w["word"] for w in alt["words"])


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1"])
def test_booleans_are_case_insensitive(server, jfk, value):
    body = ok_body(listen(server, jfk.path.read_bytes(), punctuate=value))
    text = transcript(body)
    assert re.search(r"[.,]", text) and text[0].isupper()


def test_utterances_words_and_timing(server):
    clip = corpus.by_name("en_multispeaker_picovoice_diarization_3spk.wav")
    body = ok_body(listen(server, clip.path.read_bytes(), utterances="true", punctuate="true"))
    utterances = body["results"]["utterances"]
    assert len(utterances) >= 2  # three speakers with pauses between turns
    for utt in utterances:
        assert utt["channel"] == 0 and uuid.UUID(utt["id"])
        assert utt["start"] <= utt["end"] and utt["words"]
        assert all("punctuated_word" in w for w in utt["words"])
    words = body["results"]["channels"][0]["alternatives"][0]["words"]
    assert sum(len(u["words"]) for u in utterances) == len(words)
    # a huge utt_split keeps everything in one utterance
    one = ok_body(listen(server, clip.path.read_bytes(), utterances="true", utt_split="1000"))[
        "results"
    ]["utterances"]
    assert len(one) == 1


def test_tags_extra_keyterms_and_warnings(server, jfk):
    response = httpx.post(
        f"{server.url}/v1/listen",
        params=[
            ("tag", "alpha"),
            ("tag", "beta"),
            ("extra", "team:blue"),
            ("keyterm", "Americans"),
            ("keywords", "country:2"),
            ("summarize", "v2"),
            ("no_such_param", "x"),
        ],
        content=jfk.path.read_bytes(),
        timeout=120,
    )
    meta = ok_body(response)["metadata"]
    assert meta["tags"] == ["alpha", "beta"]
    assert meta["extra"] == {"team": "blue"}
    flagged = {w["parameter"] for w in meta["warnings"]}
    assert {"summarize", "no_such_param"} <= flagged
    assert all(w["message"] for w in meta["warnings"])
    assert corpus.wer([jfk.reference], [transcript(ok_body(response))]) < 15


@pytest.mark.parametrize("name", ["nova-3", "nova-2", "nova-2-general", "enhanced", "general", ""])
def test_deepgram_model_names_map_to_the_default(server, name):
    clip = corpus.by_name(TIMIT)
    body = ok_body(listen(server, clip.path.read_bytes(), model=name))
    info = next(iter(body["metadata"]["model_info"].values()))
    assert info["name"] == "tiny.en"
    assert not [w for w in body["metadata"].get("warnings", []) if w["parameter"] == "model"]


@pytest.mark.parametrize(
    "name", ["/etc", "../../x", "/etc/passwd", "~", "Systran/faster-whisper-x"]
)
def test_unknown_models_fall_back_with_a_warning(server, name):
    clip = corpus.by_name(TIMIT)
    body = ok_body(listen(server, clip.path.read_bytes(), model=name))
    info = next(iter(body["metadata"]["model_info"].values()))
    assert info["name"] == "tiny.en"
    warnings = [w for w in body["metadata"]["warnings"] if w["parameter"] == "model"]
    assert warnings and "tiny.en" in warnings[0]["message"]
    assert corpus.wer([clip.reference], [transcript(body)]) < 30


def test_base_alias_and_models_endpoint(server):
    listing = httpx.get(f"{server.url}/v1/models", timeout=10).json()
    names = {m["name"] for m in listing["models"]}
    assert {"tiny.en", "base"} <= names and listing["default"] == "tiny.en"
    clip = corpus.by_name(TIMIT)
    body = ok_body(listen(server, clip.path.read_bytes(), model="whisper-base"))
    assert next(iter(body["metadata"]["model_info"].values()))["name"] == "base"


SNIFF_CASES = (
    [(fmt, "application/octet-stream") for fmt in sorted(FORMATS)]
    + [(fmt, "deepgram/audio+video") for fmt in sorted(FORMATS)]
    + [("mp3", "audio/wav"), ("ogg-opus", "audio/mpeg"), ("webm", None), ("aiff", None)]
    + [("m4a", None), ("flac", "text/plain")]
)


@pytest.mark.parametrize("fmt,content_type", SNIFF_CASES)
def test_containers_are_sniffed_whatever_the_content_type(server, fmt, content_type):
    clip = corpus.by_name(JFK)
    headers = {"Content-Type": content_type} if content_type else {}
    data = encode(clip.path, fmt)
    body = ok_body(listen(server, data, headers=headers))
    assert body["metadata"]["duration"] == pytest.approx(clip.duration, abs=0.15)
    assert corpus.wer([clip.reference], [transcript(body)]) < 20


def test_raw_linear16_and_linear32(server):
    clip = corpus.by_name(TIMIT)
    pcm = load_pcm(clip.path, 16000)
    body = ok_body(listen(server, pcm.tobytes(), encoding="linear16", sample_rate="16000"))
    assert body["metadata"]["duration"] == pytest.approx(len(pcm) / 16000, abs=0.01)
    assert corpus.wer([clip.reference], [transcript(body)]) < 30
    # Deepgram's linear32 is 32-bit float PCM: the float twin reads as the linear16 one.
    floats = (pcm.astype("<f4") / 32768.0).tobytes()
    twin = ok_body(listen(server, floats, encoding="linear32", sample_rate="16000"))
    assert transcript(twin) == transcript(body)


def test_raw_stereo_linear16_with_channels(server):
    clip = corpus.by_name(TIMIT)
    stereo = load_pcm(clip.path, 16000, layout="stereo")
    body = ok_body(
        listen(
            server,
            stereo.tobytes(),
            encoding="linear16",
            sample_rate="16000",
            channels="2",
            multichannel="true",
        )
    )
    assert body["metadata"]["channels"] == 2
    assert len(body["results"]["channels"]) == 2
    for index in range(2):
        assert corpus.wer([clip.reference], [transcript(body, index)]) < 30


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_raw_g711(server, law):
    clip = corpus.by_name(TIMIT)
    data = g711(load_pcm(clip.path, 8000), law)
    body = ok_body(listen(server, data, encoding=law, sample_rate="8000"))
    assert body["metadata"]["duration"] == pytest.approx(clip.duration, abs=0.05)
    assert corpus.wer([clip.reference], [transcript(body)]) < 35


@pytest.mark.parametrize(
    "encoding,fmt", [("flac", "flac"), ("opus", "ogg-opus"), ("ogg-opus", "ogg-opus")]
)
def test_container_encodings_declared(server, encoding, fmt):
    clip = corpus.by_name(TIMIT)
    body = ok_body(listen(server, encode(clip.path, fmt), encoding=encoding, sample_rate="16000"))
    assert corpus.wer([clip.reference], [transcript(body)]) < 30


def test_chunked_upload_without_content_length(server, jfk):
    data = jfk.path.read_bytes()

    def chunks():
        for start in range(0, len(data), 7919):
            yield data[start : start + 7919]

    request = httpx.Request("POST", f"{server.url}/v1/listen", content=chunks())
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    with httpx.Client(timeout=120) as client:
        body = ok_body(client.send(request))
    assert body["metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert corpus.wer([jfk.reference], [transcript(body)]) < 15


def test_url_body_and_url_route_agree(server, jfk):
    with local_host({"/jfk.flac": jfk.path.read_bytes()}) as host:
        url = f"{host.url}/jfk.flac"
        by_json = ok_body(
            httpx.post(
                f"{server.url}/v1/listen",
                params={"punctuate": "true"},
                json={"url": url},
                timeout=120,
            )
        )
        by_query = ok_body(
            httpx.post(
                f"{server.url}/v1/listen/url",
                params={"url": url, "punctuate": "true"},
                timeout=120,
            )
        )
    assert transcript(by_json) == transcript(by_query)
    assert by_json["metadata"]["sha256"] == by_query["metadata"]["sha256"]
    assert corpus.wer([jfk.reference], [transcript(by_json)]) < 15


def test_url_sent_without_json_content_type_is_audio(server):
    response = listen(server, b'{"url": "http://127.0.0.1:9/x.wav"}')
    body = assert_deepgram_error(response, 400)
    assert "corrupt or unsupported" in body["err_msg"]


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_callback_delivers_the_full_body(server_factory, method):
    srv = server_factory(env={"OPENLISTEN_CALLBACK_RETRY_DELAY_S": "0.2"})
    clip = corpus.by_name(TIMIT)
    with local_host(fail_first=2) as host:
        response = httpx.post(
            f"{srv.url}/v1/listen",
            params={"callback": f"{host.url}/hook", "callback_method": method, "tag": "cb"},
            content=clip.path.read_bytes(),
            timeout=30,
        )
        assert response.status_code == 200
        accepted = response.json()
        assert list(accepted) == ["request_id"]
        assert accepted["request_id"] == response.headers["dg-request-id"]
        received = host.wait_for(3, timeout=120)
    assert [r.get("failed") for r in received[:2]] == [True, True]  # retried after 500s
    delivered = received[2]
    assert delivered["method"] == method and delivered["path"] == "/hook"
    body = delivered["body"]
    assert body["metadata"]["request_id"] == accepted["request_id"]
    assert body["metadata"]["tags"] == ["cb"]
    assert corpus.wer([clip.reference], [transcript(body)]) < 30


def test_multichannel_stereo_file_one_entry_per_channel(server):
    path = corpus.extra("en_stereo_2spk_per_channel.wav")
    refs = {}
    for line in (corpus.CORPUS / "extras" / "extras.tsv").read_text().splitlines()[1:]:
        name, _, ref = line.split("\t")[:3]
        refs[name] = ref
    body = ok_body(listen(server, path.read_bytes(), multichannel="true", utterances="true"))
    channels = body["results"]["channels"]
    assert body["metadata"]["channels"] == 2 and len(channels) == 2
    for index in range(2):
        ref = refs[f"en_stereo_2spk_per_channel.wav#ch{index}"]
        assert corpus.wer([ref], [transcript(body, index)]) < 20, transcript(body, index)
    assert {u["channel"] for u in body["results"]["utterances"]} == {0, 1}
    mixed = ok_body(listen(server, path.read_bytes()))
    assert len(mixed["results"]["channels"]) == 1


def test_detect_language_with_base(server):
    clip = corpus.by_name("de_picovoice_leopard_test_de.wav")
    body = ok_body(listen(server, clip.path.read_bytes(), model="base", detect_language="true"))
    channel = body["results"]["channels"][0]
    assert channel["detected_language"] == "de"
    assert 0.5 < channel["language_confidence"] <= 1
    assert "raum" in transcript(body).lower()


def test_detect_language_on_english_only_model_says_en(server):
    clip = corpus.by_name(TIMIT)
    body = ok_body(listen(server, clip.path.read_bytes(), detect_language="true"))
    assert body["results"]["channels"][0]["detected_language"] == "en"


def test_language_without_spaces_is_not_spaced_out(server):
    clip = corpus.by_name("ja_picovoice_leopard_test_ja.wav")
    body = ok_body(listen(server, clip.path.read_bytes(), model="base", language="ja"))
    text = transcript(body)
    assert text and not re.search(
        r"[\u3040-\u30ff\u4e00-\u9fff] [\u3040-\u30ff\u4e00-\u9fff]", text
    )


def test_auth_token_and_bearer_any_case(server_factory):
    srv = server_factory(env={"OPENLISTEN_API_KEY": "k1,k2"})
    clip = corpus.by_name(TIMIT)
    data = clip.path.read_bytes()
    for header in ["Token k1", "token k2", "Bearer k1", "bearer k2", "TOKEN k1"]:
        response = listen(srv, data, headers={"Authorization": header})
        assert response.status_code == 200, header
    assert_deepgram_error(listen(srv, data), 401)
    assert_deepgram_error(listen(srv, data, headers={"Authorization": "Token nope"}), 401)
    assert_deepgram_error(listen(srv, data, headers={"Authorization": "Basic k1"}), 401)
    assert httpx.get(f"{srv.url}/v1/models", timeout=10).status_code == 401

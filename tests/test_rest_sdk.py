"""The real Deepgram SDKs against a live server: Python deepgram-sdk (v7) and the JS SDK v4
and v5 through node. The client code has the README's shape, so the README stays true."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import corpus
from tests.test_rest_support import local_host

JS = Path(__file__).parent / "js"
KEY = "sdk-test-key"
CLIP = "en_jfk_inaugural_1961.flac"
URL_CLIP = "en_librispeech_1272-128104-0000.wav"


@pytest.fixture(scope="module")
def keyed(server_factory):
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return server_factory("--preload", "base", env={"OPENLISTEN_API_KEY": KEY})


@pytest.fixture(scope="module")
def audio_host():
    files = {
        f"/{name}": corpus.by_name(name).path.read_bytes()
        for name in [URL_CLIP, "fr_picovoice_leopard_test_fr.wav"]
    }
    with local_host(files) as host:
        yield host


def client_for(url: str):
    """The README's Python snippet: a v7 client pointed at openlisten (agent_rest since 7.2)."""
    from deepgram import DeepgramClient, DeepgramClientEnvironment

    ws = url.replace("http", "ws", 1)
    return DeepgramClient(
        api_key=KEY,
        environment=DeepgramClientEnvironment(base=url, production=ws, agent=ws, agent_rest=url),
    )


def test_python_sdk_transcribe_file(keyed):
    clip = corpus.by_name(CLIP)
    client = client_for(keyed.url)
    response = client.listen.v1.media.transcribe_file(
        request=clip.path.read_bytes(),
        model="nova-3",
        smart_format=True,
        utterances=True,
        paragraphs=True,
    )
    alt = response.results.channels[0].alternatives[0]
    assert corpus.wer([clip.reference], [alt.transcript]) < 15
    assert alt.paragraphs.paragraphs[0].sentences
    assert response.results.utterances and response.results.utterances[0].words
    assert response.metadata.duration == pytest.approx(clip.duration, abs=0.05)


def test_python_sdk_transcribe_url_with_language_detection(keyed, audio_host):
    client = client_for(keyed.url)
    clip = corpus.by_name(URL_CLIP)
    response = client.listen.v1.media.transcribe_url(
        url=f"{audio_host.url}/{URL_CLIP}", model="nova-3", smart_format=True
    )
    assert (
        corpus.wer([clip.reference], [response.results.channels[0].alternatives[0].transcript]) < 25
    )

    french = client.listen.v1.media.transcribe_url(
        url=f"{audio_host.url}/fr_picovoice_leopard_test_fr.wav", model="base", detect_language=True
    )
    assert french.results.channels[0].detected_language == "fr"


def test_python_sdk_surfaces_errors(keyed):
    from deepgram import DeepgramClient, DeepgramClientEnvironment
    from deepgram.core.api_error import ApiError

    with pytest.raises(ApiError) as raised:
        client_for(keyed.url).listen.v1.media.transcribe_file(request=b"not audio at all")
    assert raised.value.status_code == 400
    assert raised.value.body["err_code"]
    wrong = DeepgramClient(
        api_key="wrong",
        environment=DeepgramClientEnvironment(
            base=keyed.url, production=keyed.ws_url, agent=keyed.ws_url, agent_rest=keyed.url
        ),
    )
    with pytest.raises(ApiError) as raised:
        wrong.listen.v1.media.transcribe_file(request=corpus.by_name(CLIP).path.read_bytes())
    assert raised.value.status_code == 401


@pytest.mark.parametrize("script", ["rest_v4.mjs", "rest_v5.mjs"])
def test_js_sdk(keyed, audio_host, script):
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "dg4").is_dir():
        pytest.skip("node or tests/js/node_modules missing (run `make test` to install)")
    clip = corpus.by_name(CLIP)
    url_clip = corpus.by_name(URL_CLIP)
    run = subprocess.run(
        [node, script, keyed.url, KEY, str(clip.path), f"{audio_host.url}/{URL_CLIP}"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    file_alt = out["file"]["results"]["channels"][0]["alternatives"][0]
    assert corpus.wer([clip.reference], [file_alt["transcript"]]) < 15
    assert file_alt["paragraphs"]["paragraphs"] and out["file"]["results"]["utterances"]
    (search,) = out["file"]["results"]["channels"][0]["search"]  # the SDK keeps the new fields
    assert search["query"] == "country" and search["hits"][0]["snippet"] == "country"
    url_alt = out["url"]["results"]["channels"][0]["alternatives"][0]
    assert corpus.wer([url_clip.reference], [url_alt["transcript"]]) < 25
    assert url_alt["paragraphs"]["transcript"].startswith("\n")

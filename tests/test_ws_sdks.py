"""Real Deepgram SDKs stream corpus audio to a live server and get the transcript back.

Python `deepgram-sdk` 7.x (sync client, `start_listening` in a thread), the seed guide's raw
`websockets` client, and the JS SDKs v4 (`createClient` + `listen.live`) and v5
(`new DeepgramClient` + `listen.v1.connect`) through node scripts in tests/js.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import websockets

from tests import corpus
from tests.ws_helpers import pcm16, samples16k

ROOT = Path(__file__).resolve().parent
JS = ROOT / "js"
KEY = "sdk-test-key"
CLIP = "en_librispeech_1272-128104-0000.wav"


@pytest.fixture(scope="module")
def keyed(server_factory):
    return server_factory("--api-key", KEY)


@pytest.fixture(scope="module")
def clip() -> corpus.Clip:
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return corpus.by_name(CLIP)


def test_seed_guide_websockets_client(keyed, clip):
    """The guide's stream.py, verbatim in spirit: Bearer header, 4096-byte reads of the WAV
    file itself (header included) as linear16, then CloseStream; print finals."""
    url = f"{keyed.ws_url}/v1/listen?encoding=linear16&sample_rate=16000"
    printed: list[str] = []

    async def stream() -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with websockets.connect(url, additional_headers=headers) as ws:

            async def send_audio() -> None:
                with clip.path.open("rb") as f:
                    while chunk := f.read(4096):
                        await ws.send(chunk)
                await ws.send(json.dumps({"type": "CloseStream"}))

            async def receive_transcripts() -> None:
                async for message in ws:
                    data = json.loads(message)
                    if data.get("type") == "Results" and data.get("is_final"):
                        transcript = data["channel"]["alternatives"][0]["transcript"]
                        if transcript:
                            printed.append(transcript)

            await asyncio.gather(send_audio(), receive_transcripts())

    asyncio.run(asyncio.wait_for(stream(), 120))
    assert corpus.wer([clip.reference], [" ".join(printed)]) <= 15, printed


def test_python_sdk_v7_live(keyed, clip):
    from deepgram import DeepgramClient, DeepgramClientEnvironment
    from deepgram.core.events import EventType

    env = DeepgramClientEnvironment(
        base=keyed.url, production=keyed.ws_url, agent=keyed.ws_url, agent_rest=keyed.url
    )
    client = DeepgramClient(api_key=KEY, environment=env)
    audio = pcm16(samples16k(clip.path))
    messages: list = []
    errors: list = []
    closed = threading.Event()
    with client.listen.v1.connect(
        model="nova-3",
        encoding="linear16",
        sample_rate=16000,
        interim_results=True,
        punctuate=True,
        vad_events=True,
    ) as connection:
        connection.on(EventType.MESSAGE, messages.append)
        connection.on(EventType.ERROR, errors.append)
        connection.on(EventType.CLOSE, lambda _: closed.set())
        listener = threading.Thread(target=connection.start_listening, daemon=True)
        listener.start()
        for i in range(0, len(audio), 3200):
            connection.send_media(audio[i : i + 3200])
            time.sleep(0.025)
        connection.send_close_stream()
        assert closed.wait(60), "the server never closed after CloseStream"
    assert not errors, errors  # a 1000 close raises nothing
    assert None not in messages  # every message parsed as a known type
    kinds = [type(m).__name__ for m in messages]
    assert kinds[-1].endswith("Metadata"), kinds
    finals = [m for m in messages if getattr(m, "type", None) == "Results" and m.is_final]
    text = " ".join(m.channel.alternatives[0].transcript for m in finals)
    assert corpus.wer([clip.reference], [text]) <= 15, text
    assert finals[0].metadata.model_info.name
    assert any(getattr(m, "type", None) == "SpeechStarted" for m in messages)


def _node(script: str, *args: str) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (JS / "node_modules" / "dg4").is_dir() or not (JS / "node_modules" / "dg5").is_dir():
        pytest.skip("JS SDKs are not installed (cd tests/js && npm install)")
    run = subprocess.run(
        [node, str(JS / script), *args], capture_output=True, text=True, timeout=150, cwd=JS
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no output from {script}: {run.stdout[-2000:]} {run.stderr[-2000:]}"
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def pcm_file(tmp_path_factory, clip) -> Path:
    path = tmp_path_factory.mktemp("js") / "clip.pcm"
    path.write_bytes(pcm16(samples16k(clip.path)))
    return path


def _text(finals: list[dict]) -> str:
    return " ".join(f["channel"]["alternatives"][0]["transcript"] for f in finals)


def test_js_sdk_v4_live(keyed, clip, pcm_file):
    out = _node("live_v4.mjs", keyed.url, KEY, str(pcm_file))
    assert corpus.wer([clip.reference], [_text(out["finals"])]) <= 15, out
    assert out["metadata"] and out["metadata"]["duration"] == pytest.approx(clip.duration, abs=0.1)
    assert out["closed"] == 1000 and not out["unhandled"], out
    words = [w for f in out["finals"] for w in f["channel"]["alternatives"][0]["words"]]
    assert all("punctuated_word" in w for w in words)


def test_js_sdk_v5_live(keyed, clip, pcm_file):
    out = _node("live_v5.mjs", keyed.url, KEY, str(pcm_file))
    assert corpus.wer([clip.reference], [_text(out["finals"])]) <= 15, out
    assert out["metadata"] and out["metadata"]["channels"] == 1
    assert out["closeCode"] == 1000
    assert out["opens"] == 1, "v5 reconnected: the server closed with a code other than 1000"


def readme_live_example() -> str:
    """The Python block of the README's live-transcription section, as a user copies it."""
    text = (ROOT.parent / "README.md").read_text()
    section = text[text.index("## Live transcription") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_readme_live_example_prints_every_final(server):
    """Run the README's example as written (only the URLs and the audio source filled in):
    audio sent as fast as it goes, so the last finals are still being decoded at CloseStream;
    the example must wait for them and print every one before it leaves."""
    jfk = corpus.by_name("en_jfk_inaugural_1961.flac")
    audio = pcm16(samples16k(jfk.path))
    code = readme_live_example()
    assert "localhost:8000" in code and "pcm16_chunks()" in code
    code = code.replace("http://localhost:8000", server.url).replace(
        "ws://localhost:8000", server.ws_url
    )
    printed = io.StringIO()

    def pcm16_chunks():
        return (audio[i : i + 3200] for i in range(0, len(audio), 3200))

    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {"pcm16_chunks": pcm16_chunks})
    text = " ".join(printed.getvalue().split())
    assert corpus.wer([jfk.reference], [text]) <= 15, text
    assert text.rstrip(".").lower().endswith("what you can do for your country"), text

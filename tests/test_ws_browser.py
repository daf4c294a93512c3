"""The seed guide's browser page (`live.html`) transcribes a microphone in headless Chromium.

Chromium's fake microphone plays a corpus file; the page records it with MediaRecorder
(`audio/webm` Opus, 250 ms chunks), authenticates with the `token, KEY` subprotocol, and shows
the final transcripts. Needs Debian's `chromium` + `chromium-driver`; skips cleanly without.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests import corpus
from tests.ws_helpers import pcm16, samples16k

PAGE_DIR = Path(__file__).resolve().parent / "browser"
KEY = "browser-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def page_server():
    """Serve tests/browser over http://127.0.0.1 (getUserMedia needs a secure-ish origin)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(PAGE_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _wav(path: Path, samples: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm16(samples))


def test_seed_live_html_shows_transcript(server_factory, page_server, tmp_path):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip(
            "chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
        )
    selenium = pytest.importorskip("selenium", reason="selenium not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    source = corpus.extra("en_jfk_16k_mono.wav")
    if not source.is_file():
        pytest.skip(corpus.MISSING)
    # The fake microphone loops its file: give each loop a clear pause so utterances end.
    audio = np.concatenate([samples16k(source), np.zeros(16000 * 2, np.float32)])
    mic = tmp_path / "mic.wav"
    _wav(mic, audio)

    api = server_factory("--api-key", KEY)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    del selenium
    try:
        driver.get(f"{page_server}/live.html?ws={api.ws_url}/v1/listen&key={KEY}")
        driver.find_element(By.ID, "start").click()
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            text = driver.find_element(By.ID, "transcript").text
            if "country" in text.lower() and "americans" in text.lower():
                break
            time.sleep(0.5)
        logs = driver.execute_script("return document.getElementById('stop').disabled")
        assert logs is False, "the page never opened its socket"
        assert "country" in text.lower() and "americans" in text.lower(), text
        first_loop = " ".join(text.splitlines()[:4])
        reference = corpus.by_name("en_jfk_inaugural_1961.flac").reference
        assert corpus.wer([reference], [first_loop]) <= 40, text
    finally:
        driver.quit()

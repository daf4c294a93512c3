"""The seed guide's browser page (`live.html`) transcribes a microphone in headless Chromium.

Chromium's fake microphone plays a corpus file; the page records it with MediaRecorder
(`audio/webm` Opus, 250 ms chunks), authenticates with the `token, KEY` subprotocol, and shows
the final transcripts. Needs Debian's `chromium` + `chromium-driver`; skips cleanly without.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests import corpus
from tests.browser_helpers import chrome, write_wav
from tests.ws_helpers import samples16k

PAGE_DIR = Path(__file__).resolve().parent / "browser"


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


def test_seed_live_html_shows_transcript(keyed_server, page_server, tmp_path):
    source = corpus.extra("en_jfk_16k_mono.wav")
    if not source.is_file():
        pytest.skip(corpus.MISSING)
    # The fake microphone loops its file: give each loop a clear pause so utterances end.
    audio = np.concatenate([samples16k(source), np.zeros(16000 * 2, np.float32)])
    mic = write_wav(tmp_path / "mic.wav", audio)
    driver = chrome(tmp_path, mic=mic)
    api = keyed_server
    from selenium.webdriver.common.by import By

    try:
        driver.get(f"{page_server}/live.html?ws={api.ws_url}/v1/listen&key={api.key}")
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

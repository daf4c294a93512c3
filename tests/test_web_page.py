"""The page at `/` in headless Chromium, against live servers.

- Live: Chromium's fake microphone plays a corpus file; the page streams it over the WebSocket
  with the API key as the `token` subprotocol; its finals are scored against the reference,
  and interims never land among them.
- File: a corpus file goes in through the file input and through a real `drop` event; the
  page uploads it over REST with progress, shows a word timeline, highlights the word at the
  player's position, colours the two speakers of a call (diarize), and its SRT and JSON
  downloads hold the transcript within the cue rules.
- The screenshot in the README is the one this test takes (OPENLISTEN_SCREENSHOT=path).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests import corpus
from tests.browser_helpers import chrome, write_wav
from tests.subtitle_check import check_cue_rules, parse_cues
from tests.ws_helpers import samples16k

JFK = "en_jfk_inaugural_1961.flac"
CALL = "en_multispeaker_pyannote_sample_telephone.wav"


def wait_for(driver, script: str, timeout: float = 90):
    """Poll a JS expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {script!r} (last: {value!r})")


def open_page(driver, server) -> None:
    driver.get(f"{server.url}/")
    if server.key:
        field = driver.find_element("id", "key")
        field.send_keys(server.key)
        driver.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")
    wait_for(driver, "document.getElementById('status').classList.contains('ready')", 30)


@pytest.fixture(scope="module", autouse=True)
def _corpus():
    if not corpus.clips():
        pytest.skip(corpus.MISSING)


def test_live_microphone_with_a_key(keyed_server, tmp_path):
    source = corpus.extra("en_jfk_16k_mono.wav")
    if not source.is_file():
        pytest.skip(corpus.MISSING)
    # The fake microphone loops its file: a pause after each loop ends the utterance.
    mic = write_wav(
        tmp_path / "mic.wav",
        np.concatenate([samples16k(source), np.zeros(16000 * 3, np.float32)]),
    )
    driver = chrome(tmp_path, mic=mic)
    try:
        open_page(driver, keyed_server)
        # Keep a handle on the page's socket, to count what arrives and to replay an interim.
        driver.execute_script(
            """
            const Native = WebSocket;
            window.received = {interim: 0, final: 0};
            window.WebSocket = function (url, protocols) {
              const socket = new Native(url, protocols);
              window.pageSocket = socket;
              socket.addEventListener('message', (e) => {
                const m = JSON.parse(e.data);
                if (m.type === 'Results') window.received[m.is_final ? 'final' : 'interim']++;
              });
              return socket;
            };
            window.WebSocket.OPEN = Native.OPEN;
            """
        )
        driver.find_element("id", "start").click()
        finals = wait_for(
            driver,
            "(t => /country.*country/is.test(t) && t)(document.getElementById('finals').innerText)",
            120,
        )
        # An interim shows in its own place and never among the finals; a final replaces it.
        shown = driver.execute_script(
            """
            const say = (final, text) => window.pageSocket.dispatchEvent(new MessageEvent(
              'message', {data: JSON.stringify({type: 'Results', is_final: final,
                channel: {alternatives: [{transcript: text, words: []}]}})}));
            say(false, 'an interim guess');
            const during = [document.getElementById('interim').textContent,
                            document.getElementById('finals').innerText];
            say(true, 'the final words');
            return [...during, document.getElementById('interim').textContent,
                    document.getElementById('finals').innerText, window.received];
            """
        )
        driver.find_element("id", "stop").click()
        wait_for(driver, "!document.getElementById('start').disabled", 30)
    finally:
        driver.quit()
    interim, finals_during, interim_after, finals_after, received = shown
    assert interim == "an interim guess" and "interim guess" not in finals_during
    assert interim_after == "" and finals_after.rstrip().endswith("the final words")
    assert received["final"] >= 2
    lines = [line for line in finals.splitlines() if line.strip()]
    # The first loop's finals: everything up to the first mention of the last words.
    first_loop = []
    for line in lines:
        first_loop.append(line)
        if "for your country" in line.lower():
            break
    reference = corpus.by_name(JFK).reference
    assert corpus.wer([reference], [" ".join(first_loop)]) <= 25, finals


def test_file_timeline_player_and_downloads_with_a_key(keyed_server, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chrome(tmp_path, downloads=downloads)
    clip = corpus.by_name(CALL)
    try:
        driver.set_window_size(1280, 900)
        open_page(driver, keyed_server)
        driver.find_element("id", "diarize").click()  # a two-person call: speaker colours
        driver.find_element("id", "file-input").send_keys(str(clip.path))
        wait_for(driver, "document.getElementById('progress').value === 100", 120)
        words = wait_for(
            driver,
            "[...document.querySelectorAll('#timeline .word')].map(w => w.textContent)",
            30,
        )
        assert "done" in driver.find_element("id", "progress-text").text
        speakers = driver.execute_script(
            "return [...new Set([...document.querySelectorAll('#timeline .word')]"
            ".map(w => [...w.classList].find(c => c.startsWith('spk-'))))]"
        )
        assert sorted(speakers) == ["spk-0", "spk-1"], speakers  # a two-person call
        assert corpus.wer([clip.reference], [" ".join(words)]) <= 35, words
        # The player highlights the word being spoken at its position.
        highlighted = driver.execute_script(
            """
            const player = document.getElementById('player');
            const spans = [...document.querySelectorAll('#timeline .word')];
            const target = spans[Math.floor(spans.length / 2)];
            player.currentTime = parseFloat(target.dataset.start) + 0.01;
            player.dispatchEvent(new Event('timeupdate'));
            const current = document.querySelector('#timeline .word.current');
            return [target.dataset.index, current && current.dataset.index];
            """
        )
        assert highlighted[0] == highlighted[1]
        for kind in ("srt", "json"):
            driver.find_element("css selector", f"[data-download={kind}]").click()
        srt = wait_for_file(downloads / f"{clip.path.stem}.srt")
        body = json.loads(wait_for_file(downloads / f"{clip.path.stem}.json"))
        screenshot = os.environ.get("OPENLISTEN_SCREENSHOT")
        if screenshot:
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(screenshot)
    finally:
        driver.quit()
    cues = parse_cues(srt)
    check_cue_rules(cues)
    assert len(cues) >= 4
    spoken = " ".join(" ".join(lines) for _, _, lines in cues)
    assert corpus.wer([clip.reference], [spoken]) <= 35, srt
    transcript = body["results"]["channels"][0]["alternatives"][0]["transcript"]
    assert corpus.wer([clip.reference], [transcript]) <= 35


def wait_for_file(path: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_size:
            return path.read_text()
        time.sleep(0.2)
    raise AssertionError(f"{path.name} was never downloaded: {list(path.parent.iterdir())}")


def test_dropped_file_without_a_key(server, tmp_path):
    """A real `drop` event (the file read back from the input into a DataTransfer)."""
    driver = chrome(tmp_path)
    clip = corpus.by_name(JFK)
    try:
        open_page(driver, server)
        driver.execute_script("document.getElementById('file-input').id = 'picker-off'")
        hidden = driver.execute_script(
            "const i = document.createElement('input'); i.type = 'file'; i.id = 'spare';"
            "document.body.append(i); return i;"
        )
        hidden.send_keys(str(clip.path))
        driver.execute_script(
            """
            const dt = new DataTransfer();
            dt.items.add(document.getElementById('spare').files[0]);
            document.getElementById('drop').dispatchEvent(
              new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
            """
        )
        words = wait_for(
            driver,
            "document.getElementById('progress').value === 100 && "
            "[...document.querySelectorAll('#timeline .word')].map(w => w.textContent)",
            120,
        )
    finally:
        driver.quit()
    assert corpus.wer([clip.reference], [" ".join(words)]) <= 15, words


def test_page_reports_a_missing_key(keyed_server, tmp_path):
    driver = chrome(tmp_path)
    try:
        driver.get(f"{keyed_server.url}/")
        status = wait_for(
            driver,
            "(s => s.classList.contains('error') && s.textContent)"
            "(document.getElementById('status'))",
            30,
        )
    finally:
        driver.quit()
    assert "API key" in status

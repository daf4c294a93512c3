"""Headless Chromium for the page tests: a fake microphone that plays a file, downloads to a
folder. Needs Debian's `chromium` and `chromium-driver`; tests skip with that message without."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.ws_helpers import pcm16

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = "chromium/chromedriver not installed (apt-get install chromium chromium-driver)"


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """16 kHz mono 16-bit WAV, the form Chromium's fake audio capture reads."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm16(samples))
    return path


def chrome(tmp_path: Path, mic: Path | None = None, downloads: Path | None = None):
    """A headless Chromium driven by selenium; skips the test when either is missing."""
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip(MISSING)
    pytest.importorskip("selenium", reason="selenium not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(arg)
    if mic is not None:
        options.add_argument(f"--use-file-for-fake-audio-capture={mic}")
    if downloads is not None:
        options.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    if downloads is not None:
        driver.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
    return driver

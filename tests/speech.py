"""Speech generated at test time with espeak-ng (Debian package `espeak-ng`), never committed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

MISSING = "espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)"


def say(text: str, directory: Path, voice: str = "en-us", speed: int = 140) -> Path:
    """A WAV file of `text` spoken by espeak-ng (cached per text in `directory`)."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        pytest.skip(MISSING)
    name = hashlib.sha1(f"{voice}|{speed}|{text}".encode()).hexdigest()[:12]
    path = directory / f"{name}.wav"
    if not path.exists():
        subprocess.run(
            [binary, "-v", voice, "-s", str(speed), "-w", str(path), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return path

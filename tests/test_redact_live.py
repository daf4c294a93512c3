"""Numbers read the way people read them on the phone, in groups with pauses, streamed at real
time with redaction: no message, interim or final, shows a digit or a spelled digit.

Each group is its own espeak-ng clip (tests/speech.py) with silence between, so the stream's
endpoint fires inside the numbers; which interims and finals the server cuts depends on the
machine's speed, and none may leak.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.speech import say
from tests.ws_helpers import RAW16, Stream, audio_frames, run_stream, samples16k

PAUSE_S = 1.0  # between the groups of a number: past the default endpoint (300 ms)
# Each line is one clip; the pieces of a number are said in groups, a pause after each.
CALLS = {
    "card": [
        "Please charge my credit card. The number is",
        "four five three nine,",
        "one four eight eight,",
        "zero three four three,",
        "six four six seven.",
        "The expiration date is",
        "zero eight,",
        "twenty seven.",
        "The security code is",
        "three four five.",
        "Thank you very much.",
    ],
    "ssn-phone": [
        "My social security number is",
        "one two three,",
        "four five,",
        "six seven eight nine.",
        "You can call me back at",
        "four one five,",
        "five five five,",
        "two three eight seven.",
        "Thanks, goodbye.",
    ],
}
REDACT = "redact=pci&redact=ssn&redact=numbers"
NUMBER_WORDS = (
    r"zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|"
    r"eighty|ninety|hundred|thousand"
)


def numbers_in(text: str) -> list[str]:
    """Digits and number words in a text (a redaction's own `_1]` aside)."""
    text = re.sub(r"\[[A-Z_]+_\d+\]", "", text)
    return re.findall(rf"\d+|\b(?:{NUMBER_WORDS})\b", text, re.I)


def shown_numbers(message: dict[str, Any]) -> list[str]:
    """Digits and number words a Results message shows."""
    alternative = message["channel"]["alternatives"][0]
    return numbers_in(
        alternative["transcript"] + " " + " ".join(w["word"] for w in alternative["words"])
    )


def call_audio(lines: list[str], directory: Path) -> np.ndarray:
    pause = np.zeros(int(PAUSE_S * 16000), np.float32)
    parts = []
    for line in lines:
        parts += [samples16k(say(line, directory)), pause]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def calls(server, tmp_path_factory) -> dict[str, Stream]:
    directory = tmp_path_factory.mktemp("calls")
    audio = {name: call_audio(lines, directory) for name, lines in CALLS.items()}

    async def both():
        url = f"{server.ws_url}/v1/listen?{RAW16}&{REDACT}&interim_results=true&punctuate=true"
        return await asyncio.gather(
            *(run_stream(url, audio_frames(a, 0.1), pace_s=0.1) for a in audio.values())
        )

    done = asyncio.run(both())
    for name, result in zip(CALLS, done, strict=True):
        assert result.close_code == 1000, (name, result.close_code, result.close_reason)
    return dict(zip(CALLS, done, strict=True))


@pytest.mark.parametrize("name", list(CALLS))
def test_numbers_read_in_groups_leak_in_no_message(calls, name):
    results = calls[name].of("Results")
    assert any(not m["is_final"] for m in results)  # interims were sent, and checked
    for message in results:
        assert not shown_numbers(message), message["channel"]["alternatives"][0]
    finals = calls[name].final_text()
    # Each number became one redaction (its type is as the words around it were heard).
    first, count = {"card": ("[CREDIT_CARD_1]", 3), "ssn-phone": ("[SSN_1]", 2)}[name]
    assert first in finals and len(re.findall(r"\[[A-Z_]+_1\]", finals)) == count, finals
    last = {"card": "thank", "ssn-phone": "goodbye"}[name]
    assert last in finals.lower()  # the words after the numbers are there too

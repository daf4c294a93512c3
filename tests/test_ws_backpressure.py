"""Senders faster than real time: the server reads only as fast as it transcribes (the socket
pushes back), holds a bounded backlog, and transcribes everything it read; when a stream must
end before that is done, the client is told so, never left with silently missing audio."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from tests import corpus
from tests.ws_helpers import CLOSE, RAW16, audio_frames, samples16k, stream

LONG = "en_ljspeech_LJ001-0001_to_0032_long.wav"
MAX_BACKLOG_S = 3.0
MAX_UTTERANCE_S = 6.0


@pytest.fixture(scope="module")
def reading() -> tuple[np.ndarray, str]:
    """The LJ clips that end within the first 40 s: continuous read speech, with reference."""
    path = corpus.CORPUS / LONG
    if not path.is_file():
        pytest.skip(corpus.MISSING)
    rows = [r.split("\t") for r in path.with_suffix(".segments.tsv").read_text().splitlines()]
    rows = [r for r in rows[1:] if float(r[2]) <= 40.0]
    audio = samples16k(path)[: int(float(rows[-1][2]) * 16000)]
    return audio, " ".join(r[3] for r in rows)


def _closed_line(server, request_id: str) -> dict:
    """The stream's 'stream closed' log line (written just after the close frame is sent)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in server.logs().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("msg") == "stream closed" and entry.get("request_id") == request_id:
                    return entry
        time.sleep(0.1)
    raise AssertionError(f"no 'stream closed' log line for {request_id}")


def test_fast_sender_is_slowed_and_every_word_is_transcribed(server_factory, reading):
    audio, reference = reading
    srv = server_factory(
        env={
            "OPENLISTEN_WS_MAX_BACKLOG_S": str(MAX_BACKLOG_S),
            "OPENLISTEN_WS_MAX_UTTERANCE_S": str(MAX_UTTERANCE_S),
        }
    )
    # All 40 s at once, as fast as the socket takes it.
    result = stream(f"{srv.ws_url}/v1/listen?{RAW16}", audio_frames(audio), timeout=300)
    assert result.close_code == 1000, result.close_reason
    assert result.messages[-1]["type"] == "Metadata"
    duration = len(audio) / 16000
    assert result.messages[-1]["duration"] == pytest.approx(duration, abs=0.01)
    finals = result.finals
    for before, after in itertools.pairwise(finals):
        assert after["start"] == pytest.approx(before["start"] + before["duration"], abs=0.002)
    assert finals[-1]["start"] + finals[-1]["duration"] == pytest.approx(duration, abs=0.05)
    assert corpus.wer([reference], [result.final_text()]) <= 10, result.final_text()
    # The server never held more than the limit plus the one cut that crossed it (and a frame):
    # without the pushback all 40 s would have been waiting at once.
    closed = _closed_line(srv, result.headers["dg-request-id"])
    assert closed["audio_seconds"] == pytest.approx(duration, abs=0.01)
    assert closed["peak_backlog_s"] <= MAX_BACKLOG_S + MAX_UTTERANCE_S + 0.5, closed


def test_stream_ending_before_its_audio_is_transcribed_says_so(server_factory, reading):
    audio, _ = reading
    srv = server_factory(
        env={"OPENLISTEN_SHUTDOWN_DEADLINE_S": "0.05", "OPENLISTEN_WS_MAX_BACKLOG_S": "60"}
    )
    frames = [*audio_frames(audio[: 16000 * 20], close=False), CLOSE]
    result = stream(f"{srv.ws_url}/v1/listen?{RAW16}", frames, timeout=120)
    (error,) = result.of("Error")
    assert error["variant"] == "INCOMPLETE" and "not transcribed" in error["description"]
    assert result.close_code == 1011 and "transcribed" in result.close_reason
    assert not result.of("Metadata")  # the stream did not complete

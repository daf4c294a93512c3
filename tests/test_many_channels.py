"""Files and streams with many channels: each decodes (or is refused) cleanly, never kills the
process. PyAV's planar `to_ndarray` read past its buffers on 8+ channels (a segfault that took
every live stream down with it), so these run the decoders in-process as well as on a server."""

from __future__ import annotations

import io
import wave

import httpx
import numpy as np
import pytest

from server.audio.decode import decode
from tests import corpus
from tests.ws_helpers import CLOSE, chunks, pcm16, samples16k, stream

CLIP = "en_timit_LDC93S1.wav"


def _wav(tracks: np.ndarray, rate: int = 16000) -> bytes:
    """A PCM16 WAV of (channels, n) float tracks."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(tracks.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm16(tracks.T.reshape(-1)))
    return buf.getvalue()


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, str]:
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    clip = corpus.by_name(CLIP)
    return samples16k(clip.path), clip.reference


def _spread(samples: np.ndarray, channels: int) -> np.ndarray:
    """Speech on channel 0, faint distinct noise on the others (so channels stay apart)."""
    rng = np.random.default_rng(channels)
    tracks = rng.normal(0, 0.001, (channels, len(samples))).astype(np.float32)
    tracks[0] = samples
    return tracks


@pytest.mark.parametrize("channels", [8, 9, 64])
def test_decode_keeps_every_channel_apart(channels):
    rng = np.random.default_rng(0)
    tracks = rng.uniform(-0.5, 0.5, (channels, 1600)).astype(np.float32)
    decoded = decode(_wav(tracks))
    assert decoded.samples.shape == (channels, 1600)
    # PCM16 quantisation only: each channel is its own, in order.
    assert np.abs(decoded.samples - tracks).max() < 1e-3


@pytest.mark.parametrize("channels", [8, 64])
def test_rest_many_channels(server, speech, channels):
    samples, reference = speech
    data = _wav(_spread(samples, channels))
    mixed = httpx.post(f"{server.url}/v1/listen", content=data, timeout=120)
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["metadata"]["channels"] == channels
    split = httpx.post(f"{server.url}/v1/listen?multichannel=true", content=data, timeout=300)
    assert split.status_code == 200, split.text
    results = split.json()["results"]["channels"]
    assert len(results) == channels
    text = results[0]["alternatives"][0]["transcript"]
    assert corpus.wer([reference], [text]) <= 25, text
    assert server.process.poll() is None


def test_stream_eight_channel_wav_and_raw(server, speech):
    samples, reference = speech
    tracks = _spread(samples, 8)
    sniffed = stream(
        f"{server.ws_url}/v1/listen?multichannel=true",
        [*chunks(_wav(tracks), 8192), CLOSE],
    )
    assert sniffed.close_code == 1000, sniffed.close_reason
    assert corpus.wer([reference], [sniffed.final_text(0)]) <= 25, sniffed.final_text(0)
    assert sniffed.messages[-1]["channels"] == 8
    raw = pcm16(tracks.T.reshape(-1))
    declared = stream(
        f"{server.ws_url}/v1/listen?encoding=linear16&sample_rate=16000&channels=8"
        "&multichannel=true",
        [*chunks(raw, 16000), CLOSE],
    )
    assert declared.close_code == 1000, declared.close_reason
    assert corpus.wer([reference], [declared.final_text(0)]) <= 25, declared.final_text(0)
    assert server.process.poll() is None

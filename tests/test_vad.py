"""Silero VAD readings: live and offline alike, and speech still heard late in a long noisy
track (the model's recurrent state drifts there when one state reads it all)."""

from __future__ import annotations

import numpy as np

from server.engine import fw
from server.vad import (
    FRAME,
    FRESH_FRAMES,
    SAMPLE_RATE,
    StreamingVad,
    _State,
    speech_timestamps,
    track_probabilities,
)
from tests import corpus

SR = SAMPLE_RATE


def _pink(seconds: float, rms: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    spectrum = (rng.normal(size=len(freqs)) + 1j * rng.normal(size=len(freqs))) / np.sqrt(freqs)
    noise = np.fft.irfft(spectrum, n)
    return (noise / noise.std() * rms).astype(np.float32)


def _stream(audio: np.ndarray, chunk: int, reader: StreamingVad | None = None) -> np.ndarray:
    reader = reader or StreamingVad()
    return np.concatenate(
        [reader.feed(audio[at : at + chunk]) for at in range(0, len(audio), chunk)]
    )


def test_probabilities_do_not_depend_on_how_the_audio_arrives():
    """Chunks of any size, across the fresh state's clears, read as the whole track does."""
    audio = _pink(2.2 * FRESH_FRAMES * FRAME / SR, 0.02)
    whole = track_probabilities(audio[: len(audio) // FRAME * FRAME], piece_frames=97)
    for chunk in (333, 1600, 7777):
        np.testing.assert_array_equal(_stream(audio, chunk)[: len(whole)], whole)


def test_a_state_with_a_period_starts_afresh_on_schedule():
    rng = np.random.default_rng(0)
    rows = (rng.normal(size=(12, FRAME + 64)) * 0.05).astype(np.float32)
    periodic = _State(5).read(rows)
    expected = np.concatenate([_State(None).read(rows[at : at + 5]) for at in (0, 5, 10)])
    np.testing.assert_array_equal(periodic, expected)
    assert not np.array_equal(_State(None).read(rows)[5:], periodic[5:])


def test_speech_is_heard_to_the_end_of_a_long_noisy_conversation():
    """Development conversation 5 (64 s, one room, pink noise, three voices): read by one
    Silero state, the last half sinks below 0.5 and leaves only half the speech inside the REST
    regions; the server's two readings keep it."""
    from bench.diarize import rest_vad_options
    from tests.conversations import conversation

    corpus.by_name("en_jfk_inaugural_1961.flac")  # skips cleanly without the corpus
    conv = conversation("dev", 5)
    from server.audio.decode import decode

    audio = decode(conv.wav(), None).mono()
    steps = np.zeros(int(conv.duration * 100) + 1, bool)
    for a, b, _ in conv.turns:
        steps[int(a * 100) : int(b * 100)] = True

    def covered(regions: list[dict]) -> float:
        got = np.zeros_like(steps)
        for r in regions:
            got[r["start"] // 160 : r["end"] // 160] = True
        return float((steps & got).sum() / steps.sum())

    server = covered(speech_timestamps(audio, rest_vad_options()))
    fw.score_vad_with(lambda track: StreamingVad(fresh_frames=None).feed(track))
    try:
        one_state = covered(fw.get_speech_timestamps(audio, rest_vad_options()))
    finally:
        fw.score_vad_with(track_probabilities)
    assert one_state < 0.7, one_state  # the drift this guards against (measured 0.57)
    assert server >= 0.9, server  # measured 0.97

    last = slice(int(44 * SR) // FRAME, None)  # the last 20 s, read live
    middles = (np.arange(len(audio) // FRAME) + 0.5) * FRAME / SR
    inside = np.zeros(len(middles), bool)
    for a, b, _ in conv.turns:
        inside |= (middles > a + 0.1) & (middles < b - 0.1)
    live = _stream(audio, 1600)[: len(middles)] >= 0.5
    drifted = _stream(audio, 1600, StreamingVad(fresh_frames=None))[: len(middles)] >= 0.5
    assert drifted[last][inside[last]].mean() < 0.2  # measured 0.01
    assert live[last][inside[last]].mean() >= 0.6  # measured 0.76


def test_noise_alone_is_never_speech():
    for rms in (0.01, 0.05):
        noise = _pink(60, rms, seed=int(rms * 100))
        assert speech_timestamps(noise, fw.VadOptions()) == []
        assert _stream(noise, 1600).max() < 0.5


def test_the_region_finder_reads_the_servers_probabilities():
    audio = _pink(5, 0.02)[: 156 * FRAME]
    speech_timestamps(audio, fw.VadOptions())
    scored = fw.get_vad_model()(audio)
    np.testing.assert_array_equal(scored.reshape(-1), track_probabilities(audio))

"""smart-turn's input features: ours (numpy) against transformers' WhisperFeatureExtractor, the
extractor the model was trained with, on real speech and on the edges of the 8 s window."""

from __future__ import annotations

import numpy as np
import pytest

from server.turns.features import N_FRAMES, N_MELS, N_SAMPLES, batch_features, last_window, log_mel
from tests import corpus
from tests.ws_helpers import samples16k

TELEPHONE = "en_multispeaker_pyannote_sample_telephone.wav"


@pytest.fixture(scope="module")
def reference():
    transformers = pytest.importorskip("transformers")
    extractor = transformers.WhisperFeatureExtractor(
        feature_size=N_MELS, sampling_rate=16000, hop_length=160, chunk_length=8, n_fft=400
    )

    def features(audio: np.ndarray) -> np.ndarray:
        # smart-turn's recipe: the last 8 s, zero-padded at the front, then the extractor with
        # its waveform normalisation over the whole padded window.
        return extractor(
            last_window(audio), sampling_rate=16000, return_tensors="np",
            padding="max_length", max_length=N_SAMPLES, truncation=True, do_normalize=True,
        ).input_features[0]  # fmt: skip

    return features


@pytest.fixture(scope="module")
def call() -> np.ndarray:
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return samples16k(corpus.by_name(TELEPHONE).path)


def _cases(call: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "3 s of speech (front-padded)": call[int(8.9 * 16000) : int(11.9 * 16000)],
        "exactly 8 s": call[16000 * 10 : 16000 * 18],
        "30 s call (last 8 s kept)": call,
        "0.4 s, one word": call[int(6.7 * 16000) : int(7.1 * 16000)],
        "digital silence": np.zeros(16000, np.float32),
        "empty": np.zeros(0, np.float32),
        "100 samples": call[16000 * 12 : 16000 * 12 + 100],
        "loud clipped noise": np.clip(rng.normal(0, 2, 5 * 16000), -1, 1).astype(np.float32),
    }


def test_features_match_whisper_feature_extractor(reference, call: np.ndarray) -> None:
    for name, audio in _cases(call).items():
        ours, theirs = log_mel(audio), reference(audio)
        assert ours.shape == theirs.shape == (N_MELS, N_FRAMES), name
        assert ours.dtype == np.float32
        assert np.abs(ours - theirs).max() <= 1e-4, name


def test_features_keep_the_end_and_pad_the_front(call: np.ndarray) -> None:
    """Speech shorter than 8 s sits at the end of the window: the front frames are the
    padding's floor, the last frames are loud; a long input keeps its last 8 s."""
    short = log_mel(call[int(8.9 * 16000) : int(11.9 * 16000)])
    assert np.allclose(short[:, :400], short[0, 0])  # 5 s of padding: one flat floor value
    assert short[:, -250:].mean() > short[:, :400].mean() + 0.5
    tail = call[-N_SAMPLES:]
    assert np.array_equal(log_mel(call), log_mel(tail))
    stacked = batch_features([call, tail[: 16000 * 3]])
    assert stacked.shape == (2, N_MELS, N_FRAMES)
    assert np.array_equal(stacked[1], log_mel(tail[: 16000 * 3]))

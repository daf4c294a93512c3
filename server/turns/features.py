"""smart-turn v3.2's input: Whisper's log-mel spectrogram of the turn's last 8 s, in numpy.

The model was trained on features from `transformers`' `WhisperFeatureExtractor` (chunk
length 8 s): the last 8 s of 16 kHz mono, zero-padded at the front to exactly 8 s, the whole
padded buffer normalised to zero mean and unit variance, then Whisper's log-mel (25 ms periodic
Hann window, 10 ms hop, centred with reflection, 80 Slaney mel bands over 0-8 kHz of the power
spectrum, log10 floored at 1e-10, the last frame dropped, clamped to 8 below the peak, scaled
by (x + 4) / 4). Importing `transformers` for this would be a large dependency for one
spectrogram, so it is computed here and checked against it in tests/test_turns_features.py.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 16000
WINDOW_S = 8
N_SAMPLES = WINDOW_S * SAMPLE_RATE
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = N_SAMPLES // HOP  # 800
NORM_EPS = 1e-7


def last_window(audio: np.ndarray) -> np.ndarray:
    """The last 8 s of `audio` (float32), zero-padded at the front when shorter."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)[-N_SAMPLES:]
    if audio.size < N_SAMPLES:
        audio = np.concatenate([np.zeros(N_SAMPLES - audio.size, np.float32), audio])
    return audio


_F_SP = 200.0 / 3  # Hz per mel below 1 kHz
_LOG_HZ = 1000.0  # where Slaney's scale turns logarithmic
_LOG_MEL = _LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.atleast_1d(np.asarray(hz, dtype=np.float64))
    log_part = _LOG_MEL + np.log(np.maximum(hz, _LOG_HZ) / _LOG_HZ) / _LOG_STEP
    return np.where(hz >= _LOG_HZ, log_part, hz / _F_SP)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.atleast_1d(np.asarray(mel, dtype=np.float64))
    return np.where(mel >= _LOG_MEL, _LOG_HZ * np.exp(_LOG_STEP * (mel - _LOG_MEL)), mel * _F_SP)


@cache
def mel_filters() -> np.ndarray:
    """(N_FFT // 2 + 1, N_MELS) triangular filters, equally spaced in mel, area-normalised."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0)[0], _hz_to_mel(SAMPLE_RATE / 2)[0], N_MELS + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (fft_hz[:, None] - lower) / (centre - lower)
    falling = (upper - fft_hz[:, None]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return filters * (2.0 / (upper - lower))


@cache
def _hann() -> np.ndarray:
    """Periodic Hann (the window an FFT of that length expects), as Whisper uses."""
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """(N_MELS, N_FRAMES) float32 features of the last 8 s of 16 kHz mono `audio`."""
    x = last_window(audio)
    x = (x - x.mean()) / np.sqrt(x.var() + NORM_EPS)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP] * _hann()
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (N_FRAMES + 1, bins)
    mel = power @ mel_filters()
    spec = np.log10(np.maximum(mel, 1e-10)).T[:, :-1]
    spec = np.maximum(spec, spec.max() - 8.0)
    return ((spec + 4.0) / 4.0).astype(np.float32)


def batch_features(audios: list[np.ndarray]) -> np.ndarray:
    """(len(audios), N_MELS, N_FRAMES): the model's `input_features` for several turns."""
    return np.stack([log_mel(a) for a in audios])

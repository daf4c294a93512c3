"""Features for the speaker embedders: Kaldi fbank for CAM++, log-mel for the d-vector.

CAM++ was trained on Kaldi's 80-band fbank (torchaudio's `compliance.kaldi.fbank`, no dither),
which `kaldi-native-fbank` computes exactly, without torch; `fbank` wraps it.

The d-vector was trained on librosa's defaults (Slaney mel scale and area normalisation, a
centred Hann-window STFT with zero padding, power spectrum, log10 with a 1e-6 floor). librosa
would pull numba, scipy and scikit-learn into the server for one filterbank, so the same
arithmetic is written out here and checked against librosa by `tests/test_diarize_unit.py`
whenever librosa happens to be installed, and against stored reference values otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class MelSpec:
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    floor: float = 1e-6


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    above = hz >= 1000.0
    return np.where(above, min_log_mel + np.log(np.maximum(hz, 1e-10) / 1000.0) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(
        mels >= min_log_mel, 1000.0 * np.exp(logstep * (mels - min_log_mel)), f_sp * mels
    )


@lru_cache(maxsize=4)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters with Slaney area normalisation."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    hz = _mel_to_hz(mel_points)
    widths = np.diff(hz)
    ramps = hz[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=4)
def _window(win_length: int, n_fft: int) -> np.ndarray:
    """A periodic Hann window centred in n_fft samples (librosa's pad_center)."""
    n = np.arange(win_length)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft)
    out[left : left + win_length] = hann
    return out.astype(np.float32)


def log_mel(samples: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """(frames, n_mels) log10 mel power of 16 kHz samples; frame i is centred on i * hop."""
    x = np.asarray(samples, dtype=np.float32)
    pad = spec.n_fft // 2
    x = np.pad(x, (pad, pad))
    if len(x) < spec.n_fft:
        x = np.pad(x, (0, spec.n_fft - len(x)))
    count = 1 + (len(x) - spec.n_fft) // spec.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(x, spec.n_fft)[:: spec.hop_length][:count]
    power = np.abs(np.fft.rfft(frames * _window(spec.win_length, spec.n_fft), axis=1)) ** 2
    mel = power.astype(np.float32) @ mel_filterbank(SAMPLE_RATE, spec.n_fft, spec.n_mels).T
    return np.log10(mel + spec.floor).astype(np.float32)


def fbank(samples: np.ndarray, mels: int = 80) -> np.ndarray:
    """(frames, mels) Kaldi log-mel fbank of 16 kHz samples in [-1, 1]: 25 ms frames every
    10 ms (frame i starts at sample 160 i), Povey window, no dither."""
    import kaldi_native_fbank as knf

    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.mel_opts.num_bins = mels
    computer = knf.OnlineFbank(options)
    computer.accept_waveform(SAMPLE_RATE, np.asarray(samples, dtype=np.float32))
    computer.input_finished()
    count = computer.num_frames_ready
    if count == 0:
        return np.zeros((0, mels), np.float32)
    return np.stack([computer.get_frame(i) for i in range(count)]).astype(np.float32)

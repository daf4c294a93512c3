"""The speaker models without torch: the checkpoint reader, CAM++ built as an ONNX graph and its
Kaldi fbank, each against values the reference PyTorch code (3D-Speaker's CAM++, torchaudio's
`compliance.kaldi.fbank`) printed for the same input; and which model serves."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from server.diarize.checkpoint import CheckpointError, load_state_dict
from server.diarize.embedder import (
    CAMPPLUS_HINT,
    CamPlusEmbedder,
    EmbedderUnavailable,
    _check_campplus,
    campplus_path,
    choose_kind,
    load_embedder,
)
from server.diarize.features import fbank
from server.diarize.pipeline import DiarizeOptions, assign, embed_windows


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    path = campplus_path()
    if path is None:
        pytest.skip(f"the CAM++ checkpoint is not installed ({CAMPPLUS_HINT})")
    return path


@pytest.fixture(scope="module")
def campplus(checkpoint: Path) -> CamPlusEmbedder:
    return CamPlusEmbedder(checkpoint, threads=1)


def test_the_checkpoint_reads_as_numpy_tensors(checkpoint: Path) -> None:
    state = load_state_dict(checkpoint)
    assert state["head.conv1.weight"].shape == (32, 1, 3, 3)
    assert state["xvector.dense.linear.weight"].shape == (192, 1024, 1)
    assert state["head.conv1.weight"].dtype == np.float32
    weights = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert 6_900_000 < weights < 7_300_000  # CAM++'s 7.2 M parameters, less the classifier


def _torch_like_zip(path: Path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)


class _Hostile:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_the_checkpoint_reader_runs_nothing_a_file_names(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.pt"
    _torch_like_zip(hostile, pickle.dumps({"w": _Hostile()}))
    with pytest.raises(CheckpointError, match="tensors only"):
        load_state_dict(hostile)
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(CheckpointError, match="not a PyTorch zip"):
        load_state_dict(tmp_path / "text.pt")
    plain = tmp_path / "plain.pt"
    _torch_like_zip(plain, pickle.dumps({"w": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_state_dict(plain)


# 3D-Speaker's CAMPPlus(feat_dim=80, embedding_size=192) with this checkpoint loaded, in eval
# mode, on np.random.default_rng(7).standard_normal((1, frames, 80)): the first six dimensions
# and the norm. 333 frames crosses the CAM layers' 100-frame segments (after the stride of 2).
REFERENCE = {
    150: ([-1.09372, 0.07064, 0.54357, -1.24824, -0.50742, 0.74825], 11.20183),
    333: ([-1.0242, -0.01509, 0.44468, -1.04373, -0.43165, 0.76174], 11.11595),
}


@pytest.mark.parametrize("frames", sorted(REFERENCE))
def test_campplus_graph_matches_the_reference_network(campplus, frames: int) -> None:
    feats = np.random.default_rng(7).standard_normal((1, frames, 80)).astype(np.float32)
    out = campplus._session.run(None, {"feats": feats})[0][0]
    first, norm = REFERENCE[frames]
    np.testing.assert_allclose(out[:6], first, atol=2e-4)
    assert abs(float(np.linalg.norm(out)) - norm) < 1e-3


def test_fbank_matches_kaldi() -> None:
    """torchaudio.compliance.kaldi.fbank(num_mel_bins=80, dither=0) of a 1 s chirp."""
    t = np.arange(16000) / 16000
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t)).astype(np.float32)
    feats = fbank(chirp)
    assert feats.shape == (98, 80)  # 25 ms frames every 10 ms, Kaldi's snip_edges
    np.testing.assert_allclose(
        feats[10, :6], [-8.00472, -10.90365, -13.1181, -12.10009, -11.62116, -11.48491], atol=2e-3
    )
    np.testing.assert_allclose(
        feats[50, 40:46], [3.02497, -2.55491, -5.74885, -7.38508, -8.56392, -9.96014], atol=2e-3
    )


def test_a_track_shorter_than_a_window_is_embedded_whole(campplus) -> None:
    """A 1 s live final (a short answer) gets one CAM++ window of its own length, not none;
    under 0.5 s it gets none. The vectors are unit length."""
    rng = np.random.default_rng(1)
    one_second = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    windows = embed_windows(one_second, [(0.0, 1.0)], campplus, DiarizeOptions())
    assert len(windows) == 1 and windows.size < campplus.frames
    assert abs(float(np.linalg.norm(windows.vectors[0])) - 1) < 1e-5
    blip = one_second[:6000]
    assert len(embed_windows(blip, [(0.0, 0.375)], campplus, DiarizeOptions())) == 0


def test_voices_closer_than_max_similarity_are_one() -> None:
    """Two tight groups of windows whose centres sit at cosine 0.8: two voices to the
    silhouette, one when voices that close are one (CAM++'s bar is 0.7)."""
    rng = np.random.default_rng(2)
    a, b = np.linalg.qr(rng.normal(size=(32, 2)))[0].T
    near = 0.8 * a + 0.6 * b  # cosine 0.8 with a
    vectors = np.vstack(
        [a + 0.02 * rng.normal(size=(15, 32)), near + 0.02 * rng.normal(size=(15, 32))]
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    owner = np.zeros(len(vectors), np.int64)
    weights = np.full(len(vectors), 0.4)

    def count(**options: float) -> int:
        labels, _ = assign(vectors, owner, weights, DiarizeOptions(**options))
        return int(labels.max()) + 1

    assert count() == 2
    assert count(max_similarity=0.7) == 1
    assert count(max_similarity=0.85) == 2
    assert count(max_similarity=0.7, num_speakers=2) == 2  # a hint is the client's word


def test_which_speaker_model_serves(tmp_path: Path) -> None:
    assert choose_kind("dvector", None) == "dvector"
    assert choose_kind("campplus", None) == "campplus"
    assert choose_kind("auto", tmp_path / "model.onnx") == "dvector"
    assert choose_kind("auto", tmp_path / "campplus_voxceleb.bin") == "campplus"
    assert choose_kind("auto", None) == ("campplus" if campplus_path() else "dvector")


def test_a_changed_or_missing_campplus_file_is_refused_clearly(tmp_path: Path) -> None:
    other = tmp_path / "campplus_cn_en_common.pt"
    other.write_bytes(b"\0" * 1000)
    with pytest.raises(EmbedderUnavailable, match="has 1000 bytes"):
        _check_campplus(other)
    with pytest.raises(EmbedderUnavailable, match="does not exist"):
        load_embedder(tmp_path / "absent.pt", 1, kind="campplus")
    with pytest.raises(EmbedderUnavailable, match="not a CAM\\+\\+ checkpoint"):
        load_embedder(other, 1, kind="campplus")


def test_one_change_between_close_voices_is_one_voice_drifting() -> None:
    """Windows at cosine 0.65 between two groups: split when the groups take turns (a
    conversation), one voice when they change over once (A A A B B B: a recording that changes
    part-way), at CAM++'s bars (0.7, and 0.6 for a single change)."""
    rng = np.random.default_rng(4)
    a, b = np.linalg.qr(rng.normal(size=(32, 2)))[0].T
    near = 0.65 * a + np.sqrt(1 - 0.65**2) * b

    def group(centre: np.ndarray, n: int = 10) -> np.ndarray:
        return centre + 0.02 * rng.normal(size=(n, 32))

    def count(vectors: np.ndarray) -> int:
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        options = DiarizeOptions(max_similarity=0.7, drift_similarity=0.6)
        owner = np.arange(len(vectors)) // 10  # one speech region per group of windows
        labels, _ = assign(vectors, owner, np.full(len(vectors), 0.4), options)
        return int(labels.max()) + 1

    assert count(np.vstack([group(a), group(near), group(a), group(near)])) == 2
    assert count(np.vstack([group(a, 20), group(near, 20)])) == 1


def test_refine_moves_a_change_to_where_short_windows_hear_it() -> None:
    """Long windows blur a change (their labels put it one long window late); the short
    windows, relabelled against their own voice centroids, put it where the voice changes,
    with no voice added or lost."""
    from server.diarize.pipeline import Windows, refine

    rng = np.random.default_rng(6)
    a, b = np.linalg.qr(rng.normal(size=(32, 2)))[0].T

    def unit(rows: np.ndarray) -> np.ndarray:
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    coarse = Windows(
        np.arange(0, 400, 40), np.zeros(10, np.int64), unit(np.vstack([a] * 6 + [b] * 4)), 150
    )
    labels = np.array([0] * 6 + [1] * 4)  # the change placed late, at 2.4 s
    confidence = np.linspace(0.5, 0.9, 10)
    starts = np.arange(0, 480, 20)
    truth = (starts + 40 < 200).astype(int) ^ 1  # voice b from 2.0 s (window centres)
    voices = np.where(truth[:, None] == 0, a, b) + 0.05 * rng.normal(size=(len(starts), 32))
    fine = Windows(starts, np.zeros(len(starts), np.int64), unit(voices), 80)
    found, carried = refine(coarse, labels, confidence, fine, DiarizeOptions())
    assert found.tolist() == truth.tolist()
    assert set(found.tolist()) == {0, 1}
    # Far from the change each short window is clearly its voice: its long window's confidence.
    assert carried[0] == pytest.approx(confidence[0], rel=1e-3)
    assert carried[-1] == pytest.approx(0.9, rel=1e-3)


def test_a_short_window_between_two_voices_is_less_sure_than_its_long_one() -> None:
    """A word is only as sure as its own short window: one that sits as near the other voice
    as its own is far less sure than its long window, while its clear neighbours keep their
    long windows' confidence (0.5 would be a toss; its own vector leans its voice's centroid
    a little its way)."""
    from server.diarize.pipeline import Windows, refine

    rng = np.random.default_rng(9)
    a, b = np.linalg.qr(rng.normal(size=(32, 2)))[0].T
    coarse = Windows(np.array([0, 200]), np.zeros(2, np.int64), np.vstack([a, b]), 150)
    between = (a + b) / np.linalg.norm(a + b)
    fine = Windows(
        np.arange(0, 280, 20), np.zeros(14, np.int64), np.vstack([a] * 7 + [between] + [b] * 6), 80
    )
    found, carried = refine(coarse, np.array([0, 1]), np.array([0.8, 0.8]), fine, DiarizeOptions())
    assert found.tolist() == [0] * 8 + [1] * 6 or found.tolist() == [0] * 7 + [1] * 7
    assert carried[7] < 0.7
    assert carried[0] == pytest.approx(0.8, rel=1e-3) and carried[-1] == pytest.approx(
        0.8, rel=1e-3
    )


def test_a_stream_final_finds_a_short_turn_its_long_windows_missed() -> None:
    """On a live stream that already knows two voices, a final whose long windows all heard
    voice 0 still gives voice 1 its short turn, scored against voice 1 as heard in earlier
    finals (`OnlineSpeakers.heard`); without that memory the final has one voice to offer."""
    from server.diarize import OnlineSpeakers
    from server.diarize.pipeline import Windows, refine

    rng = np.random.default_rng(7)
    a, b = np.linalg.qr(rng.normal(size=(32, 2)))[0].T

    def unit(rows: np.ndarray) -> np.ndarray:
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    coarse = Windows(np.arange(0, 400, 40), np.zeros(10, np.int64), unit(np.vstack([a] * 10)), 150)
    labels = np.zeros(10, np.int64)
    starts = np.arange(0, 480, 20)
    truth = ((starts >= 200) & (starts < 300)).astype(int)  # voice 1 for 1 s in the middle
    voices = np.where(truth[:, None] == 0, a, b) + 0.05 * rng.normal(size=(len(starts), 32))
    fine = Windows(starts, np.zeros(len(starts), np.int64), unit(voices), 80)
    options = DiarizeOptions()
    alone, _ = refine(coarse, labels, np.ones(10), fine, options)
    assert set(alone.tolist()) == {0}

    speakers = OnlineSpeakers(options)
    earlier = unit(np.vstack([a] * 5 + [b] * 5) + 0.05 * rng.normal(size=(10, 32)))
    speakers.hear(earlier, np.array([0] * 5 + [1] * 5), 0.2)
    assert sorted(speakers.heard) == [0, 1]
    found, _ = refine(coarse, labels, np.ones(10), fine, options, speakers.heard)
    assert found.tolist() == truth.tolist()

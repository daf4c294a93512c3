"""Accuracy through the API: English WER against faster-whisper run directly, word timing sanity,
and language detection on the multilingual files with `model=base`.

The direct baseline is faster-whisper's `BatchedInferencePipeline.transcribe(vad_filter=True,
word_timestamps=True)`: like the server, it cuts speech with Silero VAD into ≤30 s windows and
decodes them without conditioning on earlier text, so the comparison isolates the server's own
plumbing (decoding, resampling, batching, timestamps) with the same model and options.
"""

from __future__ import annotations

import os

import pytest

from tests import corpus
from tests.test_rest_support import api_transcripts, transcript

MULTILINGUAL = ["de", "fr", "it", "pt", "ru", "ja", "ko", "zh"]
# Clear cases: read speech of several seconds; a sub-second clip may honestly be ambiguous.
CLEAR = {
    "de_picovoice_leopard_test_de.wav",
    "fr_picovoice_leopard_test_fr.wav",
    "it_picovoice_leopard_test_it.wav",
    "pt_picovoice_leopard_test_pt.wav",
    "ru_deepspeech_ru.wav",
    "ja_picovoice_leopard_test_ja.wav",
    "ko_picovoice_leopard_test_ko.wav",
    "zh_aishell1_BAC009S0724W0121.wav",
}


def direct_transcripts(clips) -> list[str]:
    """faster-whisper on its own: same model files, threads, beam and VAD settings as the server."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    from server.engine.catalog import Catalog
    from server.settings import Settings

    settings = Settings()
    path = Catalog.load(settings.models_dir).materialize(settings.model)
    model = WhisperModel(
        path,
        device="cpu",
        compute_type=settings.resolved_compute_type,
        cpu_threads=os.cpu_count() or 1,
    )
    pipeline = BatchedInferencePipeline(model)
    out = []
    for clip in clips:
        segments, _ = pipeline.transcribe(
            decode_audio(str(clip.path)),
            **corpus.direct_options(settings, batch_size=settings.batch_size),
        )
        out.append("".join(s.text for s in segments).strip())
    return out


def test_english_wer_matches_direct_faster_whisper(english_clips, english_rest):
    api = [transcript(b) for b in english_rest]
    direct = direct_transcripts(english_clips)
    refs = [c.reference for c in english_clips]
    api_wer, direct_wer = corpus.wer(refs, api), corpus.wer(refs, direct)
    print(f"\nEnglish WER over {len(refs)} files: API {api_wer:.2f}  direct {direct_wer:.2f}")
    for clip, a, d in zip(english_clips, api, direct, strict=True):
        if corpus.normalize(a) != corpus.normalize(d):
            print(f"  {clip.path.name}\n    api:    {a}\n    direct: {d}")
    assert api_wer <= direct_wer + 1.0
    assert api_wer < 25  # and sane in itself: tiny.en on clean read speech


def test_word_times_are_ordered_and_inside_the_audio(english_clips, english_rest):
    for clip, body in zip(english_clips, english_rest, strict=True):
        duration = body["metadata"]["duration"]
        words = body["results"]["channels"][0]["alternatives"][0]["words"]
        assert words, clip.path.name
        for word in words:
            assert 0 <= word["start"] <= word["end"] <= duration + 1e-6, (clip.path.name, word)
        starts = [w["start"] for w in words]
        assert starts == sorted(starts), clip.path.name


def test_multilingual_language_detection_with_base(server):
    clips = [c for c in corpus.clips() if c.language in MULTILINGUAL]
    if not clips:
        pytest.skip(corpus.MISSING)
    bodies = api_transcripts(server, clips, model="base", detect_language="true")
    detected = {
        c.path.name: (c.language, b["results"]["channels"][0]["detected_language"])
        for c, b in zip(clips, bodies, strict=True)
    }
    wrong = {name: pair for name, pair in detected.items() if pair[0] != pair[1]}
    print(f"\nlanguage detection: {len(clips) - len(wrong)}/{len(clips)} right; wrong: {wrong}")
    assert not wrong.keys() & CLEAR, wrong
    assert len(wrong) <= len(clips) // 5, wrong
    assert {lang for lang, _ in detected.values()} >= set(MULTILINGUAL)

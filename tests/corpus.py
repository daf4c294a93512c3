"""The shared real-speech corpus (../shared/corpus) and WER scoring for tests and benchmarks."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jiwer

CORPUS = Path(
    os.environ.get("OPENLISTEN_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)
MISSING = f"speech corpus not found at {CORPUS} (set OPENLISTEN_CORPUS)"


@dataclass(frozen=True)
class Clip:
    path: Path
    language: str
    reference: str
    tags: tuple[str, ...]
    duration: float


@cache
def clips() -> list[Clip]:
    if not (CORPUS / "refs.tsv").is_file():
        return []
    meta = {}
    with (CORPUS / "metadata.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            meta[row["filename"]] = row
    out = []
    with (CORPUS / "refs.tsv").open() as fh:
        for row in csv.reader(fh, delimiter="\t"):
            name, language, reference = row[0], row[1], row[2]
            info = meta.get(name, {})
            out.append(
                Clip(
                    CORPUS / name,
                    language,
                    reference,
                    tuple(info.get("tags", "").split(";")),
                    float(info.get("duration_s", 0) or 0),
                )
            )
    return out


def english(include_long: bool = False) -> list[Clip]:
    return [c for c in clips() if c.language == "en" and (include_long or "long" not in c.tags)]


def by_name(name: str) -> Clip:
    return next(c for c in clips() if c.path.name == name)


def extra(name: str) -> Path:
    return CORPUS / "extras" / name


@cache
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    return _normalizer()(text)


def _pairs(references: list[str], hypotheses: list[str]) -> tuple[list[str], list[str]]:
    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r.strip()]
    return [r for r, _ in pairs], [h if h.strip() else "<empty>" for _, h in pairs]


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (percent) after Whisper's English normaliser, the field's usual scoring."""
    return 100.0 * jiwer.wer(*_pairs(references, hypotheses))


def errors(references: list[str], hypotheses: list[str]) -> int:
    """Word errors (substitutions, deletions, insertions) behind `wer`."""
    out = jiwer.process_words(*_pairs(references, hypotheses))
    return out.substitutions + out.deletions + out.insertions


def direct_options(settings, **extra) -> dict:
    """faster-whisper `transcribe` options equal to the server's decoding settings.

    The comparisons against faster-whisper run directly (WER parity, bench/rest.py,
    bench/throughput.py) must all give the peer the same VAD and beam, so they share this.
    """
    return {
        "language": "en",
        "beam_size": settings.beam_size,
        "vad_filter": True,
        "vad_parameters": {
            "threshold": settings.vad_threshold,
            "min_silence_duration_ms": settings.vad_min_silence_ms,
            "speech_pad_ms": settings.vad_speech_pad_ms,
        },
        "word_timestamps": True,
        **extra,
    }

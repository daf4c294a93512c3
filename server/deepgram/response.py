"""Deepgram response shapes, built by pure functions from words on the audio clock.

REST bodies (contract §1.3) and WebSocket messages (§2.4) share the word, transcript and
confidence rules here, so a word looks the same whichever way it reaches the client.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from server.deepgram.text import SENTENCE_END, TextOptions, Token, bare, join, shape, word_of
from server.deepgram.text import search as search_words
from server.engine import ModelInfo, Segment, Word

PARAGRAPH_GAP_S = 2.0
PARAGRAPH_MAX_SENTENCES = 5


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalize(text: str) -> str:
    """Deepgram's `word` for one written token (see `bare`)."""
    return bare(text)


def word_entries(tokens: Sequence[Token], punctuate: bool) -> list[dict[str, Any]]:
    """Deepgram's word objects; `word` spoken and lower-case, `punctuated_word` as formatted."""
    out = []
    for token in tokens:
        entry: dict[str, Any] = {
            "word": word_of(token),
            "start": round(token.start, 3),
            "end": round(max(token.end, token.start), 3),
            "confidence": round(min(max(token.confidence, 0.0), 1.0), 4),
        }
        if punctuate:
            entry["punctuated_word"] = token.text
        if token.speaker is not None:
            entry["speaker"] = token.speaker
            if token.speaker_confidence is not None:
                entry["speaker_confidence"] = round(token.speaker_confidence, 4)
        out.append(entry)
    return out


def transcript_of(entries: Sequence[dict[str, Any]], punctuate: bool) -> str:
    """Words joined by spaces, except between two words of a script written without spaces,
    so Japanese or Chinese transcripts read as written instead of one glyph per 'word'."""
    key = "punctuated_word" if punctuate else "word"
    return join([entry[key] for entry in entries])


def confidence_of(segments: Sequence[Segment]) -> float:
    """exp of the token-weighted mean log-probability: Whisper's own measure of certainty."""
    tokens = sum(max(s.tokens, 1) for s in segments)
    if not tokens:
        return 0.0
    mean = sum(s.avg_logprob * max(s.tokens, 1) for s in segments) / tokens
    return round(min(1.0, math.exp(mean)), 4)


def _sentences(entries: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    sentences: list[list[dict[str, Any]]] = [[]]
    for entry in entries:
        sentences[-1].append(entry)
        if entry.get("punctuated_word", "").rstrip().endswith(SENTENCE_END):
            sentences.append([])
    return [s for s in sentences if s]


def _speaker_runs(entries: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive words of one speaker (one run when there are no speakers)."""
    runs: list[list[dict[str, Any]]] = []
    for entry in entries:
        if not runs or entry.get("speaker") != runs[-1][-1].get("speaker"):
            runs.append([])
        runs[-1].append(entry)
    return runs


def paragraphs_of(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sentences grouped into paragraphs at long pauses, every few sentences, and wherever the
    speaker changes (a sentence is cut there too: a paragraph has one `speaker`)."""
    paragraphs: list[list[list[dict[str, Any]]]] = []
    for run in _speaker_runs(entries):
        first = True
        for sentence in _sentences(run):
            if (
                first
                or sentence[0]["start"] - paragraphs[-1][-1][-1]["end"] >= PARAGRAPH_GAP_S
                or len(paragraphs[-1]) >= PARAGRAPH_MAX_SENTENCES
            ):
                paragraphs.append([])
            first = False
            paragraphs[-1].append(sentence)
    body = []
    texts = []
    for para in paragraphs:
        sentences = [
            {"text": transcript_of(s, True), "start": s[0]["start"], "end": s[-1]["end"]}
            for s in para
        ]
        texts.append(" ".join(s["text"] for s in sentences))
        paragraph: dict[str, Any] = {
            "sentences": sentences,
            "start": para[0][0]["start"],
            "end": para[-1][-1]["end"],
            "num_words": sum(len(s) for s in para),
        }
        if "speaker" in para[0][0]:
            paragraph["speaker"] = para[0][0]["speaker"]
        body.append(paragraph)
    return {"transcript": "\n" + "\n\n".join(texts) if texts else "", "paragraphs": body}


def utterances_of(
    channel: int,
    entries: Sequence[dict[str, Any]],
    split_s: float,
    punctuate: bool,
) -> list[dict[str, Any]]:
    """Split a channel's words at pauses of at least `split_s` seconds (Deepgram's utt_split)
    and wherever the speaker changes."""
    groups: list[list[dict[str, Any]]] = []
    for entry in entries:
        if (
            not groups
            or entry["start"] - groups[-1][-1]["end"] >= split_s
            or entry.get("speaker") != groups[-1][-1].get("speaker")
        ):
            groups.append([])
        groups[-1].append(entry)
    return [
        {
            **({"speaker": group[0]["speaker"]} if "speaker" in group[0] else {}),
            "start": group[0]["start"],
            "end": group[-1]["end"],
            "confidence": round(sum(e["confidence"] for e in group) / len(group), 4),
            "channel": channel,
            "transcript": transcript_of(group, punctuate),
            "words": [{**e, "punctuated_word": e.get("punctuated_word", e["word"])} for e in group],
            "id": str(uuid.uuid4()),
        }
        for group in groups
    ]


def alternative(
    words: Iterable[Word],
    confidence: float,
    text: TextOptions,
    *,
    paragraphs: bool,
    context: Sequence[Word] = (),
    open_end: bool = False,
) -> tuple[dict[str, Any], list[Token]]:
    """One channel's (or one stream result's) alternative, shaped by `text` (`context` and
    `open_end`: see `shape`)."""
    tokens = shape(words, text, context, open_end)
    entries = word_entries(tokens, text.punctuate)
    alt: dict[str, Any] = {
        "transcript": transcript_of(entries, text.punctuate),
        "confidence": confidence if entries else 0.0,
        "words": entries,
    }
    if paragraphs and entries:
        alt["paragraphs"] = paragraphs_of(entries)
    return alt, tokens


def metadata(
    *,
    request_id: str,
    sha256: str,
    duration: float,
    channels: int,
    model: ModelInfo,
    created: str | None = None,
    warnings: Sequence[dict[str, str]] = (),
    tags: Sequence[str] = (),
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "transaction_key": "deprecated",
        "request_id": request_id,
        "sha256": sha256,
        "created": created or iso_now(),
        "duration": round(duration, 6),
        "channels": channels,
        "models": [model.uuid],
        "model_info": {model.uuid: model.as_deepgram()},
    }
    return with_echoes(meta, warnings=warnings, tags=tags, extra=extra)


def with_echoes(
    meta: dict[str, Any],
    *,
    warnings: Sequence[dict[str, str]] = (),
    tags: Sequence[str] = (),
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A request's warnings, `tag`s and `extra` pairs added to a metadata object, where set
    (REST bodies and a stream's closing Metadata alike)."""
    if warnings:
        meta["warnings"] = list(warnings)
    if tags:
        meta["tags"] = list(tags)
    if extra:
        meta["extra"] = dict(extra)
    return meta


def prerecorded(
    channels: Sequence[Any],
    meta: dict[str, Any],
    *,
    text: TextOptions,
    paragraphs: bool,
    utterances: bool,
    utt_split: float,
    detect_language: bool,
    search: Sequence[str] = (),
) -> dict[str, Any]:
    """The full REST body; `channels` are `prerecorded.ChannelTranscript`s. Each channel is
    shaped in its own language (detected or asked for)."""
    body_channels = []
    all_utterances: list[dict[str, Any]] = []
    for index, channel in enumerate(channels):
        shaping = replace(text, language=channel.language or text.language)
        alt, tokens = alternative(
            channel.words, confidence_of(channel.segments), shaping, paragraphs=paragraphs
        )
        entries = alt["words"]
        entry: dict[str, Any] = {"alternatives": [alt]}
        if search:
            entry["search"] = search_words(tokens, search)
        if detect_language:
            entry["detected_language"] = channel.language
            entry["language_confidence"] = round(
                channel.language_confidence if channel.language_confidence is not None else 1.0,
                4,
            )
        body_channels.append(entry)
        if utterances:
            all_utterances.extend(utterances_of(index, entries, utt_split, text.punctuate))
    results: dict[str, Any] = {"channels": body_channels}
    if utterances:
        results["utterances"] = sorted(all_utterances, key=lambda u: (u["start"], u["channel"]))
    return {"metadata": meta, "results": results}

"""Deepgram Flux (`/v2/listen`) messages, built by pure functions.

Only the types Flux clients know are built: Connected, TurnInfo, Warning, ConfigureSuccess,
ConfigureFailure, Error (the Python SDK's `listen.v2` types, Pipecat's `FluxMessageType`). The
runner's outbox stamps each with its `sequence_id`. A turn's words are shaped by the text
pipeline REST and v1 use (numerals, redaction, profanity filter), punctuated and cased as Flux
transcripts are; `words[].word` is the punctuated, cased word, as Flux sends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.deepgram import response
from server.deepgram.text import TextOptions
from server.engine import Word
from server.streaming.results import StreamWord
from server.turns.judge import Thresholds
from server.turns.state import TurnEvent

KNOWN_TYPES = frozenset(
    {"Connected", "TurnInfo", "Warning", "ConfigureSuccess", "ConfigureFailure", "Error"}
)


def _seconds(value: float) -> float:
    return round(max(value, 0.0), 3)


def shaped(
    words: Sequence[StreamWord], text: TextOptions, context: Sequence[StreamWord] = ()
) -> tuple[str, list[dict[str, Any]]]:
    """A turn's transcript and its word objects (`word`, `confidence`, `start`, `end`)."""
    alternative, _ = response.alternative(
        [_word(w) for w in words],
        0.0,
        text,
        paragraphs=False,
        context=[_word(w) for w in context],
        open_end=False,
    )
    entries = [
        {
            "word": entry.get("punctuated_word", entry["word"]),
            "confidence": entry["confidence"],
            "start": entry["start"],
            "end": entry["end"],
        }
        for entry in alternative["words"]
    ]
    return alternative["transcript"], entries


def _word(word: StreamWord) -> Word:
    return Word(word.text, word.start, word.end, word.confidence)


def connected(request_id: str) -> dict[str, Any]:
    return {"type": "Connected", "request_id": request_id}


def turn_info(
    event: TurnEvent,
    *,
    request_id: str,
    text: TextOptions,
    context: Sequence[StreamWord] = (),
    languages: Sequence[str] = (),
) -> dict[str, Any]:
    transcript, words = shaped(event.words, text, context)
    message: dict[str, Any] = {
        "type": "TurnInfo",
        "request_id": request_id,
        "event": event.event,
        "turn_index": event.turn_index,
        "audio_window_start": _seconds(event.start),
        "audio_window_end": _seconds(event.end),
        "transcript": transcript,
        "words": words,
        "end_of_turn_confidence": round(min(max(event.confidence, 0.0), 1.0), 4),
    }
    if event.trigger is not None:
        message["trigger"] = event.trigger
    if languages:
        message["languages"] = list(languages)
    return message


def warning(request_id: str, code: str, description: str) -> dict[str, Any]:
    return {"type": "Warning", "request_id": request_id, "code": code, "description": description}


def thresholds_of(thresholds: Thresholds) -> dict[str, Any]:
    out: dict[str, Any] = {
        "eot_threshold": thresholds.eot_threshold,
        "eot_timeout_ms": thresholds.eot_timeout_ms,
    }
    if thresholds.eager_eot_threshold is not None:
        out["eager_eot_threshold"] = thresholds.eager_eot_threshold
    return out


def configure_success(
    request_id: str,
    thresholds: Thresholds,
    keyterms: Sequence[str],
    numerals: bool,
    language_hints: Sequence[str] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "ConfigureSuccess",
        "request_id": request_id,
        "thresholds": thresholds_of(thresholds),
        "keyterms": list(keyterms),
        "numerals": numerals,
    }
    if language_hints is not None:
        message["language_hints"] = list(language_hints)
    return message


def error(code: str, description: str) -> dict[str, Any]:
    return {"type": "Error", "code": code, "description": description}

"""Deepgram live (WebSocket) messages, built by pure functions (contract §2.4).

Only the message types the SDKs know are ever built here: Results, Metadata, SpeechStarted,
UtteranceEnd, Error, ConfigureSuccess, ConfigureFailure. Python SDK 7.x hands any other type to
user callbacks as `None` and 6.0.0 stops listening, so nothing else may go on the wire.
Every field the SDKs' types require is always present, even when empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.deepgram import response
from server.deepgram.text import TextOptions, holdback
from server.deepgram.text import search as search_words
from server.engine import ModelInfo, Word
from server.streaming.results import (
    SpeechStarted,
    StreamEvent,
    StreamResult,
    StreamWord,
    UtteranceEnd,
)

KNOWN_TYPES = frozenset(
    {
        "Results",
        "Metadata",
        "SpeechStarted",
        "UtteranceEnd",
        "Error",
        "ConfigureSuccess",
        "ConfigureFailure",
    }
)


def _seconds(value: float) -> float:
    return round(max(value, 0.0), 3)


def results(
    result: StreamResult,
    *,
    channels: int,
    text: TextOptions,
    request_id: str,
    model: ModelInfo,
    search: Sequence[str] = (),
    context: Sequence[StreamWord] = (),
    extra: dict[str, str] | None = None,
    detected: str | None = None,
) -> dict[str, Any]:
    """One Results message; the result's words are already on the stream clock. They are shaped
    by the functions that shape a REST body, so a value reads the same either way; `context` is
    the channel's last final words, so a card number cut across results is still recognised
    (and any result may be continued by the next).

    `detected` is the language a stream chose by detection (`language=multi`,
    `detect_language=true`): Deepgram's multilingual Results say it in the alternative's
    `languages` and each word's `language`, the only place a live client can read it."""
    alternative, tokens = response.alternative(
        [_word(w) for w in result.words],
        result.confidence,
        text,
        paragraphs=False,
        context=[_word(w) for w in context],
        open_end=True,
    )
    if detected:
        words = alternative["words"]
        for word in words:
            word["language"] = detected
        alternative["languages"] = [detected] if words else []
    channel: dict[str, Any] = {"alternatives": [alternative]}
    if search:
        channel = {"search": search_words(tokens, search), **channel}
    return {
        "type": "Results",
        "channel_index": [result.channel, channels],
        "duration": _seconds(result.end - result.start),
        "start": _seconds(result.start),
        "is_final": result.is_final,
        "speech_final": result.speech_final,
        "from_finalize": result.from_finalize,
        "channel": channel,
        "metadata": {
            "request_id": request_id,
            "model_uuid": model.uuid,
            "model_info": model.as_deepgram(),
            **({"extra": dict(extra)} if extra else {}),
        },
    }


def undecided_from(
    words: Sequence[StreamWord], text: TextOptions, *, provisional: bool = False
) -> int | None:
    """Where a stream's words end inside a number redaction cannot judge yet (see
    `text.holdback`)."""
    return holdback.undecided_from([_word(w) for w in words], text, provisional=provisional)


def _word(word: StreamWord) -> Word:
    return Word(
        word.text,
        word.start,
        word.end,
        word.confidence,
        speaker=word.speaker,
        speaker_confidence=word.speaker_confidence,
    )


def message(
    event: StreamEvent,
    *,
    channels: int,
    text: TextOptions,
    request_id: str,
    model: ModelInfo,
    search: Sequence[str] = (),
    context: Sequence[StreamWord] = (),
    extra: dict[str, str] | None = None,
    detected: str | None = None,
) -> dict[str, Any]:
    """The Deepgram message for anything a stream produces."""
    match event:
        case StreamResult():
            return results(
                event,
                channels=channels,
                text=text,
                request_id=request_id,
                model=model,
                search=search,
                context=context,
                extra=extra,
                detected=detected,
            )
        case SpeechStarted(channel, timestamp):
            return speech_started(channel, channels, timestamp)
        case UtteranceEnd(channel, last_word_end):
            return utterance_end(channel, channels, last_word_end)
    raise TypeError(f"no Deepgram message for {event!r}")


def metadata(
    *,
    request_id: str,
    sha256: str,
    duration: float,
    channels: int,
    model: ModelInfo | None,
    created: str | None = None,
    tags: Sequence[str] = (),
    extra: dict[str, str] | None = None,
    warnings: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """The end-of-stream summary, sent once after CloseStream just before the close frame.

    With no audio at all Deepgram reports `duration: 0, channels: 0` and no model fields.
    `tags`, `extra` and `warnings` are as in a REST body's metadata.
    """
    meta: dict[str, Any] = {
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": request_id,
        "sha256": sha256,
        "created": created or response.iso_now(),
        "duration": round(duration, 6),
        "channels": channels,
    }
    if model is not None and channels:
        meta["models"] = [model.uuid]
        meta["model_info"] = {model.uuid: model.as_deepgram()}
    return response.with_echoes(meta, warnings=warnings, tags=tags, extra=extra)


def speech_started(channel: int, channels: int, timestamp: float) -> dict[str, Any]:
    return {
        "type": "SpeechStarted",
        "channel": [channel, channels],
        "timestamp": _seconds(timestamp),
    }


def utterance_end(channel: int, channels: int, last_word_end: float) -> dict[str, Any]:
    return {
        "type": "UtteranceEnd",
        "channel": [channel, channels],
        "last_word_end": _seconds(last_word_end),
    }


def error(description: str, message: str = "", variant: str = "SchemaError") -> dict[str, Any]:
    return {"type": "Error", "variant": variant, "description": description, "message": message}


def configure_success(request_id: str, keyterms: Sequence[str]) -> dict[str, Any]:
    return {"type": "ConfigureSuccess", "request_id": request_id, "keyterms": list(keyterms)}


def configure_failure(request_id: str, code: str, description: str) -> dict[str, Any]:
    """The same message on v1 and Flux (`/v2/listen`)."""
    return {
        "type": "ConfigureFailure",
        "request_id": request_id,
        "code": code,
        "description": description,
    }

"""From received audio bytes to a Deepgram body: the one path shared by REST, callbacks and CLI.

It maps domain failures (bad audio, too long, overload) to Deepgram-shaped `ApiError`s, so
every caller reports them alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from server import logs, metrics
from server.api.errors import ApiError, bad_request
from server.api.params import ListenParams
from server.audio.decode import (
    AudioError,
    AudioTooLong,
    DecodedAudio,
    RawFormat,
    check_encoding,
    decode,
)
from server.deepgram import response
from server.engine import Engine, ModelUnavailable, Overloaded, Segment
from server.prerecorded import ChannelTranscript, TranscribeRequest, transcribe


def raw_format(params: ListenParams) -> RawFormat | None:
    try:
        raw = check_encoding(params.encoding, params.sample_rate)
    except AudioError as exc:
        raise bad_request(str(exc), "INVALID_QUERY_PARAMETER") from exc
    if raw is not None:
        raw = RawFormat(raw.encoding, raw.sample_rate, params.channels)
    return raw


async def decode_input(
    engine: Engine, source: bytes | BinaryIO, raw: RawFormat | None = None
) -> DecodedAudio:
    """Decode received bytes off the event loop, within the duration limit."""
    try:
        return await asyncio.to_thread(
            decode, source, raw, max_duration_s=engine.settings.max_duration_s
        )
    except AudioTooLong as exc:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", str(exc)) from exc
    except AudioError as exc:
        raise bad_request(f"Bad Request: {exc}") from exc


async def run(
    engine: Engine,
    audio: DecodedAudio,
    request: TranscribeRequest,
    warnings: list[tuple[str, str]],
    on_segments: Callable[[int, list[Segment]], None] | None = None,
) -> list[ChannelTranscript]:
    """Transcribe decoded audio through the engine; overload and missing models become errors."""
    try:
        return await transcribe(engine, audio, request, warnings, on_segments)
    except Overloaded as exc:
        raise ApiError(
            503,
            "TOO_MANY_REQUESTS",
            f"Server busy: {exc}; retry later",
            retry_after=exc.retry_after,
        ) from exc
    except ModelUnavailable as exc:
        raise ApiError(503, "MODEL_UNAVAILABLE", str(exc), retry_after=30) from exc


def account(kind: str, model: str, audio: DecodedAudio, started: float) -> None:
    """Metrics and the access log's annotations for one finished transcription."""
    elapsed = time.monotonic() - started
    metrics.AUDIO_SECONDS.labels(kind).inc(audio.duration)
    logs.annotate(model=model, audio_seconds=round(audio.duration, 3))
    if audio.duration > 0:
        metrics.REAL_TIME_FACTOR.observe(elapsed / audio.duration)


async def transcribe_source(
    engine: Engine,
    source: bytes | BinaryIO,
    sha256: str,
    params: ListenParams,
    request_id: str,
) -> dict[str, Any]:
    """Decode, transcribe and shape one input; raises ApiError for anything the client did."""
    started = time.monotonic()
    raw = raw_format(params)
    resolution = engine.resolve_model(params.model)
    if resolution.warning:
        params.warn("model", resolution.warning, "model_fallback")
    audio = await decode_input(engine, source, raw)

    warnings: list[tuple[str, str]] = []
    if audio.truncated:
        params.warn(
            "audio",
            f"the audio ends early: its header declares {audio.declared_duration:.2f} s but only "
            f"{audio.duration:.2f} s could be decoded (truncated upload?); "
            "transcribed what arrived",
            "truncated_audio",
        )
    request = TranscribeRequest(
        model=resolution.name,
        language=None if params.detect_language else (params.language or "en"),
        detect_language=params.detect_language,
        keyterms=params.keyterms,
        multichannel=params.multichannel,
    )
    channels = await run(engine, audio, request, warnings)
    for parameter, message in warnings:
        params.warn(parameter, message, "parameter_adjusted")

    account("rest", resolution.name, audio, started)
    loaded = await engine.model(resolution.name)
    meta = response.metadata(
        request_id=request_id,
        sha256=sha256,
        duration=audio.duration,
        channels=audio.channels,
        model=loaded.info,
        warnings=[w.as_dict() for w in params.warnings],
        tags=params.tags,
        extra=params.extra,
    )
    return response.prerecorded(
        channels,
        meta,
        punctuate=params.punctuated,
        paragraphs=params.want_paragraphs,
        utterances=params.utterances,
        utt_split=params.utt_split,
        detect_language=params.detect_language,
    )

"""From received audio bytes to a Deepgram body: the one path shared by REST, callbacks and CLI.

Every failure leaves here as a domain error (`server.errors`), which the API layer maps to a
Deepgram (or OpenAI) error once; the CLI prints the same message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, BinaryIO

from server import logs, metrics
from server.api.params import ListenParams
from server.audio.decode import (
    AudioError,
    AudioTooLong,
    DecodedAudio,
    DecodeLimits,
    RawFormat,
    check_encoding,
    decode,
)
from server.deepgram import response
from server.deepgram.text import FILLER_PROMPT
from server.diarize import SpeakerHints
from server.engine import Engine
from server.engine.whisper import suppress_ids
from server.errors import InvalidParameter, InvalidRequest
from server.language import choose_language
from server.notices import Notices
from server.prerecorded import TranscribeRequest, transcribe


def raw_format(params: ListenParams) -> RawFormat | None:
    try:
        raw = check_encoding(params.encoding, params.sample_rate)
    except AudioError as exc:
        raise InvalidParameter(str(exc)) from exc
    if raw is not None:
        raw = RawFormat(raw.encoding, raw.sample_rate, params.channels)
    return raw


def decode_limits(engine: Engine) -> DecodeLimits:
    settings = engine.settings
    return DecodeLimits(max_duration_s=settings.max_duration_s, max_channels=settings.max_channels)


async def decode_input(
    engine: Engine,
    source: bytes | BinaryIO,
    raw: RawFormat | None = None,
    *,
    mono: bool = True,
) -> DecodedAudio:
    """Decode on a worker thread within the limits, holding one of the engine's decode slots.

    The slot is held until the thread is done even if the caller is cancelled (a client that
    hangs up cannot free a slot whose decode still runs).
    """
    async with engine.decode_slots.take():
        work = asyncio.ensure_future(
            asyncio.to_thread(decode, source, raw, limits=decode_limits(engine), mono=mono)
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait({work})
            raise
        except AudioTooLong:
            raise
        except AudioError as exc:  # Deepgram's wording for audio it cannot read
            raise InvalidRequest(f"Bad Request: {exc}") from exc


def account(kind: str, model: str, audio: DecodedAudio, started: float) -> None:
    """Metrics and the access log's annotations for one finished transcription."""
    elapsed = time.monotonic() - started
    metrics.AUDIO_SECONDS.labels(kind).inc(audio.duration)
    logs.annotate(model=model, audio_seconds=round(audio.duration, 3))
    if audio.duration > 0:
        metrics.REAL_TIME_FACTOR.observe(elapsed / audio.duration)


async def suppressed_tokens(engine: Engine, model: str, params: ListenParams) -> tuple[int, ...]:
    """Token ids for `keywords=word:-N`; a word no single token spells is refused, since
    suppressing its first token would suppress other words too."""
    if not params.suppress:
        return ()
    loaded = await engine.model(model)
    ids, unsupported = suppress_ids(loaded.model, params.suppress)
    if unsupported:
        raise InvalidParameter(
            "keywords with a negative intensifier can only suppress a word the model writes as "
            f"one token; cannot suppress: {', '.join(unsupported)}",
            param="keywords",
        )
    return ids


async def transcribe_source(
    engine: Engine,
    source: bytes | BinaryIO,
    sha256: str,
    params: ListenParams,
    request_id: str,
) -> dict[str, Any]:
    """Decode, transcribe and shape one input; raises a ServiceError for anything that fails."""
    started = time.monotonic()
    raw = raw_format(params)
    resolution = engine.resolve_model(params.model)
    loaded = await engine.model(resolution.name)
    language = choose_language(
        params.language,
        params.detect_language,
        model=resolution.name,
        multilingual=loaded.multilingual,
    )
    suppress = await suppressed_tokens(engine, resolution.name, params)
    audio = await decode_input(engine, source, raw, mono=not params.multichannel)
    transcript = await transcribe(
        engine,
        audio,
        TranscribeRequest(
            model=resolution.name,
            language=language,
            keyterms=params.keyterms,
            suppress_tokens=suppress,
            prompt=FILLER_PROMPT if params.filler_words else None,
            multichannel=params.multichannel,
            diarize=params.diarize,
            speakers=SpeakerHints(params.num_speakers, params.min_speakers, params.max_speakers),
        ),
    )
    notices = Notices()
    notices.extend(params.warnings)
    if resolution.warning:
        notices.add("model", resolution.warning, "model_fallback")
    notices.extend(transcript.notices)
    account("rest", resolution.name, audio, started)
    meta = response.metadata(
        request_id=request_id,
        sha256=sha256,
        duration=transcript.duration,
        channels=transcript.audio_channels,
        model=loaded.info,
        warnings=notices.as_dicts(),
        tags=params.tags,
        extra=params.extra,
    )
    if params.diarize:
        meta["diarize_info"] = engine.diarizer.info()
    return response.prerecorded(
        transcript.channels,
        meta,
        text=params.text_options(),
        search=params.search,
        paragraphs=params.want_paragraphs,
        utterances=params.utterances,
        utt_split=params.utt_split,
        detect_language=params.detect_language,
    )

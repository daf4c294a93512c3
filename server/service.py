"""From received audio bytes to a Deepgram body: the one path shared by REST, callbacks and CLI.

Every failure leaves here as a domain error (`server.errors`), which the API layer maps to a
Deepgram (or OpenAI) error once; the CLI prints the same message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, BinaryIO

from server import logs, metrics
from server.audio.decode import (
    AudioError,
    AudioTooLong,
    DecodedAudio,
    DecodeLimits,
    RawFormat,
    decode,
)
from server.deepgram import response
from server.deepgram.params import ListenParams
from server.deepgram.prepare import prepare, raw_format
from server.diarize import SpeakerHints
from server.engine import Engine
from server.errors import InvalidRequest
from server.notices import Notices
from server.prerecorded import TranscribeRequest, transcribe


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
    prepared = await prepare(engine, params)
    audio = await decode_input(engine, source, raw, mono=not params.multichannel)
    transcript = await transcribe(
        engine,
        audio,
        TranscribeRequest(
            model=prepared.model,
            language=prepared.language,
            keyterms=list(prepared.keyterms),
            suppress_tokens=prepared.suppress_tokens,
            prompt=prepared.prompt,
            multichannel=params.multichannel,
            diarize=params.diarize,
            speakers=SpeakerHints(params.num_speakers, params.min_speakers, params.max_speakers),
        ),
    )
    notices = Notices()
    notices.extend(prepared.notices)
    notices.extend(transcript.notices)
    account("rest", prepared.model, audio, started)
    meta = response.metadata(
        request_id=request_id,
        sha256=sha256,
        duration=transcript.duration,
        channels=transcript.audio_channels,
        model=prepared.info,
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

"""The WebSocket route `/v1/listen`: the handshake's checks, then a `Session` runs the stream.

Everything that can refuse a stream is decided before `accept`, so a refused client gets a real
HTTP status with a Deepgram JSON body (401 bad key, 400 bad parameter, 503 + Retry-After when
busy, loading or draining) instead of the 403 a close-before-accept would produce.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from fastapi import APIRouter, Depends, WebSocket

from server.api.auth import parse_subprotocols
from server.api.gate import admit
from server.deepgram.live_stream import LiveAdapter, LiveSpec
from server.deepgram.params import (
    ListenParams,
    ParamError,
    configure_features,
    configure_keyterms,
    param_limits,
    parse,
)
from server.deepgram.prepare import prepare, raw_format
from server.diarize import SpeakerHints
from server.engine import Engine
from server.errors import Busy
from server.settings import Settings
from server.streaming import policy
from server.streaming.config import StreamConfig
from server.streaming.session import Session, StreamSpec
from server.vad import SAMPLE_RATE

router = APIRouter()
log = logging.getLogger(__name__)


async def _speakers(params: ListenParams, engine: Engine) -> SpeakerHints | None:
    """diarize=true on a stream: Deepgram streams with its v1 diarizer only (v2 is refused),
    and a server without an embedding model refuses before the stream opens."""
    if not params.diarize:
        return None
    if params.diarize_model == "v2":
        raise ParamError(
            "Invalid value for 'diarize_model': v2 is not available for streaming "
            "(use latest or v1)"
        )
    await asyncio.to_thread(engine.diarizer.load)  # EmbedderUnavailable: a 400
    return SpeakerHints(params.num_speakers, params.min_speakers, params.max_speakers)


def admit_stream(ws: WebSocket, engine: Engine, settings: Settings) -> None:
    """Past the shared gate: a free stream slot and room in the inference queue."""
    if len(ws.app.state.streams) >= settings.ws_max_streams:
        raise Busy(
            f"Server busy: the limit of {settings.ws_max_streams} streams is reached",
            retry_after=5,
        )
    engine.scheduler.check_admission(1)


async def _spec(
    params: ListenParams, engine: Engine, settings: Settings, request_id: str
) -> tuple[StreamSpec, LiveAdapter]:
    prepared = await prepare(engine, params)
    final, interim = prepared.stream_options(settings.ws_beam_size)
    config = StreamConfig(
        model=prepared.model,
        interim_results=params.interim_results,
        endpoint_ms=policy.endpoint_silence_ms(
            params.endpointing_ms, settings.ws_min_endpointing_ms, settings.vad_min_silence_ms
        ),
        speech_final=params.endpointing_ms is not None,
        utterance_end_ms=params.utterance_end_ms,
        vad_events=params.vad_events,
        vad_threshold=settings.vad_threshold,
        interim_step_s=settings.ws_interim_step_s,
        max_utterance_s=settings.ws_max_utterance_s,
        silence_final_s=settings.ws_silence_final_s,
        final_options=final,
        interim_options=interim,
    )
    spec = StreamSpec(
        request_id=request_id,
        raw=raw_format(params),
        multichannel=params.multichannel,
        idle_timeout_s=settings.ws_idle_timeout_s,
        max_backlog_s=settings.ws_max_backlog_s,
        close_deadline_s=settings.shutdown_deadline_s,
        config=config,
        callback=params.callback,
        callback_method=params.callback_method,
        keepalive_only_timeout_s=settings.ws_keepalive_only_timeout_s,
        speakers=await _speakers(params, engine),
    )
    adapter = LiveAdapter(
        LiveSpec(
            request_id=request_id,
            model_info=prepared.info,
            text=params.text_options(prepared.language),
            search=tuple(params.search),
            extra=dict(params.extra),
            tags=tuple(params.tags),
            warnings=tuple(prepared.notices.as_dicts()),
            release_silence_s=settings.ws_redact_release_s,
            max_hold_s=settings.ws_redact_max_hold_s,
            reconfigure=configure_features,
            check_keyterms=partial(configure_keyterms, limits=param_limits(settings)),
        )
    )
    return spec, adapter


@router.websocket("/v1/listen", dependencies=[Depends(admit)])
async def listen(ws: WebSocket) -> None:
    """Refusals raised before `accept` become real HTTP replies (the app's error handler)."""
    app = ws.app
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine
    request_id: str = ws.scope.get("state", {}).get("request_id") or ""
    params = parse(ws.query_params, param_limits(settings))
    admit_stream(ws, engine, settings)
    if params.callback:  # refused at the handshake, as REST refuses it before the 200
        await app.state.callbacks.check_callback(params.callback)
    spec, adapter = await _spec(params, engine, settings, request_id)
    scheme = parse_subprotocols(list(ws.scope.get("subprotocols") or []))[0]
    await ws.accept(subprotocol=scheme, headers=[(b"dg-request-id", request_id.encode())])
    session = Session(ws, engine, spec, adapter, outbound=app.state.outbound)
    await run_session(ws, session, request_id, "stream")


async def run_session(ws: WebSocket, session: Session, request_id: str, kind: str) -> None:
    """Run an accepted stream (v1 or Flux) as one the server knows of, so shutdown can reach
    it, and log its life."""
    streams = ws.app.state.streams
    streams.add(session)
    log.info(f"{kind} opened", extra={"request_id": request_id, "model": session.config.model})
    try:
        await session.run()
    finally:
        streams.discard(session)
        log.info(
            f"{kind} closed",
            extra={
                "request_id": request_id,
                "audio_seconds": round(session.samples / SAMPLE_RATE, 3),
                "backlog_s": round(session.backlog_s, 3),
                "peak_backlog_s": round(session.peak_backlog_s, 3),
            },
        )

"""The WebSocket route `/v1/listen`: the handshake's checks, then a `Session` runs the stream.

Everything that can refuse a stream is decided before `accept`, so a refused client gets a real
HTTP status with a Deepgram JSON body (401 bad key, 400 bad parameter, 503 + Retry-After when
busy, loading or draining) instead of the 403 a close-before-accept would produce.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from fastapi import APIRouter, WebSocket

from server.api.auth import key_matches, parse_authorization, parse_subprotocols
from server.api.errors import ApiError, bad_request, error_response
from server.api.params import ListenParams, ParamError, parse
from server.engine import DecodeOptions, Engine, ModelUnavailable, Overloaded
from server.prerecorded import whisper_language
from server.service import raw_format
from server.settings import Settings
from server.streaming import policy
from server.streaming.config import StreamConfig
from server.streaming.session import Session, StreamSpec

router = APIRouter()
log = logging.getLogger(__name__)


def _authorize(ws: WebSocket, settings: Settings) -> str | None:
    """Check the key (header first, then browser subprotocol); return the scheme to echo."""
    scheme, proto_key = parse_subprotocols(list(ws.scope.get("subprotocols") or []))
    if settings.auth_enabled:
        header = ws.headers.get("authorization")
        key = parse_authorization(header) if header else proto_key
        if key is None:
            raise ApiError(401, "INVALID_AUTH", "Invalid credentials. No Authorization header.")
        if not key_matches(key, settings.key_digests):
            raise ApiError(401, "INVALID_AUTH", "Invalid credentials.")
    return scheme


def _admit(ws: WebSocket, engine: Engine, settings: Settings) -> None:
    state = ws.app.state
    if state.draining:
        raise ApiError(503, "SERVER_DRAINING", "Server is shutting down", retry_after=5)
    if not engine.ready:
        raise ApiError(503, "MODEL_LOADING", "Models are still loading", retry_after=5)
    if len(state.streams) >= settings.ws_max_streams:
        raise ApiError(
            503,
            "TOO_MANY_REQUESTS",
            f"Server busy: the limit of {settings.ws_max_streams} streams is reached",
            retry_after=5,
        )
    try:
        engine.scheduler.check_admission(1)
    except Overloaded as exc:
        raise ApiError(
            503, "TOO_MANY_REQUESTS", f"Server busy: {exc}", retry_after=exc.retry_after
        ) from exc


async def _spec(
    params: ListenParams, engine: Engine, settings: Settings, request_id: str
) -> StreamSpec:
    resolution = engine.resolve_model(params.model)
    try:
        loaded = await engine.model(resolution.name)
    except ModelUnavailable as exc:
        raise ApiError(503, "MODEL_UNAVAILABLE", str(exc), retry_after=30) from exc
    language = whisper_language(params.language or "en")
    if params.language and language is None:
        raise bad_request(
            f"Invalid value for 'language': '{params.language}'", "INVALID_QUERY_PARAMETER"
        )
    if not loaded.multilingual:
        language = "en"
    elif params.detect_language:
        language = ""  # detect on the first window
    hotwords = " ".join(params.keyterms) or None
    # Each window is decoded once, as REST decodes its windows: one segment, words from the
    # alignment (with timestamp tokens Whisper may stop early and leave words for a re-decode
    # from a later seek that never comes).
    final = DecodeOptions(
        language=language,
        beam_size=settings.ws_beam_size,
        hotwords=hotwords,
        without_timestamps=True,
    )
    interim = replace(final, beam_size=1, temperatures=(0.0,))
    config = StreamConfig(
        model=resolution.name,
        interim_results=params.interim_results,
        punctuate=params.punctuated,
        endpoint_ms=policy.endpoint_silence_ms(
            params.endpointing_ms, settings.ws_min_endpointing_ms, settings.vad_min_silence_ms
        ),
        speech_final=params.endpointing_ms is not None,
        utterance_end_ms=params.utterance_end_ms,
        vad_events=params.vad_events,
        vad_threshold=settings.vad_threshold,
        interim_step_s=settings.ws_interim_step_s,
        max_utterance_s=settings.ws_max_utterance_s,
        final_options=final,
        interim_options=interim,
    )
    return StreamSpec(
        request_id=request_id,
        model_info=loaded.info,
        raw=raw_format(params),
        multichannel=params.multichannel,
        idle_timeout_s=settings.ws_idle_timeout_s,
        max_backlog_s=settings.ws_max_backlog_s,
        close_deadline_s=settings.shutdown_deadline_s,
        config=config,
    )


@router.websocket("/v1/listen")
async def listen(ws: WebSocket) -> None:
    app = ws.app
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine
    request_id: str = ws.scope.get("state", {}).get("request_id") or ""
    try:
        scheme = _authorize(ws, settings)
        try:
            params = parse(ws.query_params)
        except ParamError as exc:
            raise bad_request(str(exc), "INVALID_QUERY_PARAMETER") from exc
        _admit(ws, engine, settings)
        spec = await _spec(params, engine, settings, request_id)
    except ApiError as exc:
        await ws.send_denial_response(error_response(exc, request_id))
        return
    await ws.accept(subprotocol=scheme, headers=[(b"dg-request-id", request_id.encode())])
    session = Session(ws, engine, spec)
    app.state.streams.add(session)
    log.info("stream opened", extra={"request_id": request_id, "model": spec.config.model})
    try:
        await session.run()
    finally:
        app.state.streams.discard(session)
        log.info(
            "stream closed",
            extra={
                "request_id": request_id,
                "audio_seconds": round(session.samples / 16000, 3),
                "backlog_s": round(session.backlog_s, 3),
            },
        )

"""The Flux WebSocket route `/v2/listen`: the handshake's checks, then a `Session` runs the
stream with the Flux adapter.

As on `/v1/listen`, everything that can refuse a stream is decided before `accept` (401 bad
key, 400 bad parameter or a missing end-of-turn model, 503 + Retry-After when busy), so a
refused client gets a real HTTP status and a Deepgram body, never a bare close.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, WebSocket

from server.api.auth import parse_subprotocols
from server.api.gate import admit
from server.api.ws import admit_stream, run_session
from server.deepgram.flux_params import FluxParams, parse_flux
from server.deepgram.flux_stream import FluxAdapter, FluxSpec
from server.deepgram.params import param_limits
from server.deepgram.prepare import Prepared, prepare, raw_format
from server.engine import Engine
from server.settings import Settings
from server.streaming.config import StreamConfig
from server.streaming.session import Session, StreamSpec
from server.turns.judge import JUDGE_EVERY_S, SCORE_AFTER_S
from server.turns.model import TurnModel
from server.vad import FRAME, SAMPLE_RATE

router = APIRouter()
log = logging.getLogger(__name__)
BACKSTOP_MS = 1000  # the endpointer closes a turn this long past eot_timeout_ms, should the
# judge not have (it always has: the judge owns the timeout)
RETAIN_S = 8.5  # audio kept behind the endpointer for smart-turn's 8 s


async def turn_model(app) -> TurnModel:
    """Loaded once per server, on first use; TurnModelUnavailable (a 400) when missing."""
    model = getattr(app.state, "turn_model", None)
    if model is None:
        settings: Settings = app.state.settings
        model = await asyncio.to_thread(
            TurnModel.load, settings.turn_model, settings.turn_model_threads
        )
        app.state.turn_model = model
    return model


def flux_config(prepared: Prepared, params: FluxParams, settings: Settings) -> StreamConfig:
    final, interim = prepared.stream_options(settings.ws_beam_size)
    return StreamConfig(
        model=prepared.model,
        interim_results=True,  # the Updates' words
        endpoint_ms=params.thresholds.eot_timeout_ms + BACKSTOP_MS,
        speech_final=True,
        utterance_end_ms=None,
        vad_events=False,
        vad_threshold=settings.vad_threshold,
        interim_step_s=settings.flux_interim_step_s,
        max_utterance_s=settings.ws_max_utterance_s,
        silence_final_s=0.0,
        final_options=final,
        interim_options=interim,
        pause_every_frames=max(1, round(JUDGE_EVERY_S * SAMPLE_RATE / FRAME)),
        decide_after_s=SCORE_AFTER_S,
    )


@router.websocket("/v2/listen", dependencies=[Depends(admit)])
async def listen_v2(ws: WebSocket) -> None:
    """Refusals raised before `accept` become real HTTP replies (the app's error handler)."""
    app = ws.app
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine
    request_id: str = ws.scope.get("state", {}).get("request_id") or ""
    limits = param_limits(settings)
    params = parse_flux(ws.query_params, limits)
    model = await turn_model(app)
    admit_stream(ws, engine, settings)
    listen = params.listen()
    prepared = await prepare(engine, listen)
    spec = StreamSpec(
        request_id=request_id,
        raw=raw_format(listen),
        multichannel=False,
        idle_timeout_s=settings.ws_idle_timeout_s,
        max_backlog_s=settings.ws_max_backlog_s,
        close_deadline_s=settings.shutdown_deadline_s,
        config=flux_config(prepared, params, settings),
        keepalive_only_timeout_s=settings.ws_keepalive_only_timeout_s,
        retain_s=RETAIN_S,
    )
    adapter = FluxAdapter(
        FluxSpec(
            request_id=request_id,
            model=params.model,
            text=listen.text_options(prepared.language),
            thresholds=params.thresholds,
            limits=limits,
            keyterms=tuple(params.keyterms),
            language_hints=tuple(params.language_hints),
            multilingual_model=prepared.multilingual,
            warnings=tuple(prepared.notices.as_dicts()),
            backstop_ms=BACKSTOP_MS,
        ),
        model,
    )
    scheme = parse_subprotocols(list(ws.scope.get("subprotocols") or []))[0]
    await ws.accept(subprotocol=scheme, headers=[(b"dg-request-id", request_id.encode())])
    session = Session(ws, engine, spec, adapter)
    await run_session(ws, session, request_id, "flux stream")

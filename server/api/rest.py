"""Thin REST routes for `POST /v1/listen` (raw body or JSON url) and `POST /v1/listen/url`."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, TypeVar

import httpx
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse

from server.api.disconnect import ClientGone, unless_disconnected
from server.api.errors import error_body, to_api_error
from server.api.gate import admit
from server.api.params import ListenParams, param_limits, parse
from server.audio.fetch import Payload, collect, fetch_url, too_large
from server.engine import Engine
from server.errors import (
    InvalidJson,
    InvalidParameter,
    InvalidRequest,
    ServiceError,
)
from server.service import transcribe_source

router = APIRouter(dependencies=[Depends(admit)])
T = TypeVar("T")
log = logging.getLogger(__name__)


def _params(request: Request) -> ListenParams:
    return parse(request.query_params, param_limits(request.app.state.settings))


async def _url_payload(request: Request, url: Any) -> Payload:
    settings = request.app.state.settings
    if not isinstance(url, str) or not url:
        raise InvalidJson('Invalid JSON: expected {"url": "https://..."}')
    return await fetch_url(
        url,
        timeout_s=settings.url_timeout_s,
        limit=settings.url_max_bytes,
        allow_private=settings.url_allow_private,
    )


async def _body_payload(request: Request) -> Payload:
    settings = request.app.state.settings
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("application/json"):
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            raise InvalidJson("Invalid JSON submitted.") from exc
        if not isinstance(body, dict) or "url" not in body:
            raise InvalidJson('Invalid JSON: expected {"url": "https://..."}')
        return await _url_payload(request, body["url"])
    payload = await collect(request.stream(), limit)
    if payload.size == 0:
        payload.close()
        raise InvalidRequest(
            "Bad Request: the request body is empty; send audio bytes or "
            'JSON {"url": ...} with Content-Type application/json'
        )
    return payload


async def _respond(request: Request, payload: Payload, params: ListenParams) -> JSONResponse:
    engine: Engine = request.app.state.engine
    request_id: str = request.state.request_id
    if params.callback:
        task = asyncio.create_task(_callback(request.app, payload, params, request_id))
        request.app.state.background.add(task)
        task.add_done_callback(request.app.state.background.discard)
        return JSONResponse({"request_id": request_id})
    try:
        body = await unless_disconnected(
            request, transcribe_source(engine, payload.file, payload.sha256, params, request_id)
        )
    except ClientGone:
        log.info(
            "client disconnected; its queued work was cancelled", extra={"request_id": request_id}
        )
        return JSONResponse({}, status_code=499)
    finally:
        payload.close()
    info = body["metadata"]["model_info"]
    model_uuid = next(iter(info))
    return JSONResponse(
        body, headers={"dg-model-name": info[model_uuid]["name"], "dg-model-uuid": model_uuid}
    )


async def _callback(app: Any, payload: Payload, params: ListenParams, request_id: str) -> None:
    """Deepgram's async mode: POST (or PUT) the body, or the error, to the callback URL."""
    settings = app.state.settings
    try:
        body = await transcribe_source(
            app.state.engine, payload.file, payload.sha256, params, request_id
        )
    except ServiceError as exc:
        body = error_body(to_api_error(exc), request_id)
    finally:
        payload.close()
    async with httpx.AsyncClient(timeout=30) as client:
        for attempt in range(settings.callback_retries + 1):
            try:
                reply = await client.request(params.callback_method, params.callback, json=body)
                if reply.is_success:
                    return
                error = f"the callback answered {reply.status_code}"
            except httpx.HTTPError as exc:
                error = str(exc) or type(exc).__name__
            log.warning(
                "callback failed",
                extra={"request_id": request_id, "error": error, "attempt": attempt},
            )
            if attempt < settings.callback_retries:  # no pointless wait after the last try
                await asyncio.sleep(settings.callback_retry_delay_s)
    log.error("callback gave up", extra={"request_id": request_id})


@router.post("/v1/listen")
async def listen(request: Request) -> JSONResponse:
    params = _params(request)
    payload = await _body_payload(request)
    return await _respond(request, payload, params)


@router.post("/v1/listen/url")
async def listen_url(request: Request) -> JSONResponse:
    """Shorthand some compatible servers offer: `?url=` in the query, answered like a JSON body."""
    params = _params(request)
    url = request.query_params.get("url")
    if not url:
        raise InvalidParameter("Missing the 'url' query parameter")
    payload = await _url_payload(request, url)
    return await _respond(request, payload, params)

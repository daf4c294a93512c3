"""Thin REST routes for `POST /v1/listen` (raw body or JSON url) and `POST /v1/listen/url`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse

from server.api.body import json_object
from server.api.disconnect import ClientGone, unless_disconnected
from server.api.gate import admit
from server.audio.fetch import Payload, collect, fetch_url, too_large
from server.deepgram.params import ListenParams, param_limits, parse
from server.engine import Engine
from server.errors import InvalidJson, InvalidParameter, InvalidRequest
from server.service import transcribe_source

router = APIRouter(dependencies=[Depends(admit)])
log = logging.getLogger(__name__)
URL_SHAPE = 'Invalid JSON: expected {"url": "https://..."}'


async def _params(request: Request) -> ListenParams:
    params = parse(request.query_params, param_limits(request.app.state.settings))
    if params.callback:  # refused before any body is read or fetched
        await request.app.state.callbacks.check_callback(params.callback)
    return params


async def _url_payload(request: Request, url: Any) -> Payload:
    settings = request.app.state.settings
    if not isinstance(url, str) or not url:
        raise InvalidJson(URL_SHAPE)
    return await fetch_url(
        url,
        outbound=request.app.state.outbound,
        timeout_s=settings.url_timeout_s,
        limit=settings.url_max_bytes,
    )


async def _body_payload(request: Request) -> Payload:
    settings = request.app.state.settings
    content_type = request.headers.get("content-type", "").lower()
    is_json = content_type.startswith("application/json")
    limit = settings.json_max_bytes if is_json else settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    # Chunked bodies too: never more than `limit` bytes are read, whatever the headers say.
    payload = await collect(request.stream(), limit)
    if is_json:
        with payload:
            body = json_object(payload.file.read())
        if "url" not in body:
            raise InvalidJson(URL_SHAPE)
        return await _url_payload(request, body["url"])
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
        with payload:
            await request.app.state.callbacks.submit(
                request_id,
                payload.file,
                payload.sha256,
                request.query_params.multi_items(),
                params.callback,
                params.callback_method,
            )
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


@router.post("/v1/listen")
async def listen(request: Request) -> JSONResponse:
    params = await _params(request)
    payload = await _body_payload(request)
    return await _respond(request, payload, params)


@router.post("/v1/listen/url")
async def listen_url(request: Request) -> JSONResponse:
    """Shorthand some compatible servers offer: `?url=` in the query, answered like a JSON body."""
    params = await _params(request)
    url = request.query_params.get("url")
    if not url:
        raise InvalidParameter("Missing the 'url' query parameter")
    payload = await _url_payload(request, url)
    return await _respond(request, payload, params)

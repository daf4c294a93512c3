"""Thin routes for OpenAI's `POST /v1/audio/transcriptions` and `/v1/audio/translations`.

Auth, draining and readiness are the shared gate (`server/api/gate.py`; Bearer keys work as
they do for Deepgram's `Token`); errors render in OpenAI's shape there too. The multipart body
is read under the same byte limit as `/v1/listen`, chunked or not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import BinaryIO

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import JSONResponse, Response, StreamingResponse

from server.api.disconnect import ClientGone, unless_disconnected
from server.api.errors import ApiError, openai_error_response
from server.api.gate import admit
from server.audio.fetch import too_large
from server.engine import Segment
from server.errors import ServiceError
from server.openai import response
from server.openai.params import AudioParams, parse
from server.openai.service import transcribe

router = APIRouter(dependencies=[Depends(admit)])
log = logging.getLogger(__name__)
MAX_FIELDS = 64


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        yield chunk


async def _form(request: Request, task: str) -> tuple[AudioParams, BinaryIO]:
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(
            400, "invalid_request", "Send the audio as multipart/form-data with a 'file' field",
            param="file",
        )  # fmt: skip
    parser = MultiPartParser(
        request.headers,
        _limited(request.stream(), limit),
        max_files=1,
        max_fields=MAX_FIELDS,
        max_part_size=64 * 1024,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise ApiError(400, "invalid_request", "Missing the 'file' field", param="file")
    try:
        fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        return parse(fields, task), upload.file
    except ServiceError:
        await form.close()
        raise


async def _handle(request: Request, task: str) -> Response:
    params, file = await _form(request, task)
    engine = request.app.state.engine
    request_id: str = request.state.request_id
    if params.stream:
        return await _stream(request, params, file)
    try:
        result = await unless_disconnected(request, transcribe(engine, file, params))
    except ClientGone:
        log.info("client disconnected; its work was cancelled", extra={"request_id": request_id})
        return JSONResponse({}, status_code=499)
    finally:
        file.close()
    body, media_type = response.render(result, params.response_format, params.granularities)
    return Response(body, media_type=media_type, headers={"x-request-id": request_id})


async def _stream(request: Request, params: AudioParams, file: BinaryIO) -> Response:
    """`stream=true`: a text delta per decoded window, in order, then the full text. Refusals
    that come before any text (bad audio, overload) are plain HTTP errors."""
    queue: asyncio.Queue[list[Segment] | None] = asyncio.Queue()
    work = asyncio.create_task(transcribe(request.app.state.engine, file, params, queue.put_nowait))
    work.add_done_callback(lambda _: queue.put_nowait(None))
    first = await queue.get()
    if first is None and work.exception() is not None:
        file.close()
        raise work.exception()  # type: ignore[misc]  # rendered by the app's handler

    async def events() -> AsyncIterator[bytes]:
        item = first
        try:
            while item is not None:
                text = "".join(s.text for s in item)
                if text:
                    yield response.delta(text)
                item = await queue.get()
            try:
                result = work.result()
            except (ServiceError, ApiError) as exc:
                body = openai_error_response(exc, request.state.request_id).body
                yield b"event: error\ndata: " + bytes(body) + b"\n\n"
                return
            yield response.done(result.text)
        finally:
            work.cancel()
            file.close()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "x-request-id": request.state.request_id},
    )


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request) -> Response:
    return await _handle(request, "transcribe")


@router.post("/v1/audio/translations")
async def translations(request: Request) -> Response:
    return await _handle(request, "translate")

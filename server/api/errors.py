"""Client-visible errors, rendered once: Deepgram's shape (`{err_code, err_msg, request_id}` plus
`dg-request-id`/`dg-error`) everywhere, OpenAI's (`{"error": {message, type, param, code}}`)
on its audio routes.

The one place where a failure becomes an HTTP status: `to_api_error` maps the domain errors of
`server.errors` (raised anywhere below `api/`) to status, `err_code` and `Retry-After`;
`render_error` renders the result for a REST reply or a refused WebSocket handshake alike.
"""

from __future__ import annotations

import re
import uuid

from starlette.responses import JSONResponse

from server import errors


class ApiError(Exception):
    """A failure already in HTTP terms: what the renderers below turn into a response."""

    def __init__(
        self,
        status: int,
        err_code: str,
        err_msg: str,
        *,
        retry_after: int | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(err_msg)
        self.status = status
        self.err_code = err_code
        self.err_msg = err_msg
        self.retry_after = retry_after
        self.param = param  # the request field at fault, where one is (OpenAI reports it)


# Most specific first: the first class an exception is an instance of decides.
_STATUS: list[tuple[type[errors.ServiceError], int, str]] = [
    (errors.PayloadTooLarge, 413, "PAYLOAD_TOO_LARGE"),
    (errors.InvalidParameter, 400, "INVALID_QUERY_PARAMETER"),
    (errors.InvalidJson, 400, "INVALID_JSON"),
    (errors.RemoteContentError, 400, "REMOTE_CONTENT_ERROR"),
    (errors.InvalidRequest, 400, "Bad Request"),
    (errors.Unauthorized, 401, "INVALID_AUTH"),
    (errors.RequestTimeout, 408, "REQUEST_TIMEOUT"),
]


def to_api_error(exc: errors.ServiceError | ApiError) -> ApiError:
    """The one mapping from a domain error to what the client sees."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, errors.Unavailable):
        return ApiError(503, exc.code, str(exc), retry_after=exc.retry_after, param=exc.param)
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc), param=exc.param)
    return ApiError(500, "INTERNAL_SERVER_ERROR", "Internal server error")


# Refusals the router makes itself (no such path, a method the path does not take).
_ROUTING_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def routing_error(status: int, detail: str) -> ApiError:
    """A refusal from the router, in the same shape as every other error: clients that parse
    `err_code` (Deepgram's SDKs) or `error.message` (OpenAI's) read these too."""
    code = _ROUTING_CODES.get(status, "Bad Request" if status < 500 else "INTERNAL_SERVER_ERROR")
    return ApiError(status, code, detail)


def new_request_id() -> str:
    return str(uuid.uuid4())


_UNSAFE = re.compile(r"[^\x20-\x7e]")


def header_safe(text: str, limit: int = 200) -> str:
    """Printable ASCII only: a header must never carry the client's CR/LF or non-Latin-1 text
    (the first splits the response, the second cannot be encoded and used to answer 500)."""
    return _UNSAFE.sub("?", text[:limit])


def error_body(error: ApiError, request_id: str) -> dict[str, str]:
    return {"err_code": error.err_code, "err_msg": error.err_msg, "request_id": request_id}


# Refused before the whole body was read: close the connection rather than read the rest.
CLOSE_AFTER = {408, 413}


def error_response(exc: errors.ServiceError | ApiError, request_id: str) -> JSONResponse:
    error = to_api_error(exc)
    headers = {"dg-request-id": request_id, "dg-error": header_safe(error.err_msg)}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.status in CLOSE_AFTER:
        headers["Connection"] = "close"
    return JSONResponse(error_body(error, request_id), status_code=error.status, headers=headers)


OPENAI_PREFIX = "/v1/audio/"
# OpenAI's own codes where one exists; otherwise our err_code, lower-cased.
_OPENAI_CODES = {
    "INVALID_AUTH": "invalid_api_key",
    "PAYLOAD_TOO_LARGE": "file_too_large",
    "INVALID_QUERY_PARAMETER": "invalid_value",
    "Bad Request": "invalid_request",
}


def openai_error_response(exc: errors.ServiceError | ApiError, request_id: str) -> JSONResponse:
    error = to_api_error(exc)
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    if error.status == 429 or error.err_code == "TOO_MANY_REQUESTS":
        kind = "rate_limit_error" if error.status == 429 else "server_error"
    headers = {"x-request-id": request_id}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.status in CLOSE_AFTER:
        headers["Connection"] = "close"
    body = {
        "error": {
            "message": error.err_msg,
            "type": kind,
            "param": error.param,
            "code": _OPENAI_CODES.get(error.err_code, error.err_code.lower().replace(" ", "_")),
        }
    }
    return JSONResponse(body, status_code=error.status, headers=headers)


def render_error(path: str, exc: errors.ServiceError | ApiError, request_id: str) -> JSONResponse:
    """A failure as a response, in the shape the route's clients read."""
    if path.startswith(OPENAI_PREFIX):
        return openai_error_response(exc, request_id)
    return error_response(exc, request_id)

"""Client-visible errors, rendered once: Deepgram's shape (`{err_code, err_msg, request_id}` plus
`dg-request-id`/`dg-error`) everywhere, OpenAI's (`{"error": {message, type, param, code}}`)
on its audio routes."""

from __future__ import annotations

import uuid

from starlette.responses import JSONResponse


class ApiError(Exception):
    """Raised anywhere below a route; rendered once, by the app's exception handler."""

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


def bad_request(msg: str, code: str = "Bad Request") -> ApiError:
    return ApiError(400, code, msg)


def new_request_id() -> str:
    return str(uuid.uuid4())


def error_response(error: ApiError, request_id: str) -> JSONResponse:
    headers = {"dg-request-id": request_id, "dg-error": error.err_msg[:200]}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse(
        {"err_code": error.err_code, "err_msg": error.err_msg, "request_id": request_id},
        status_code=error.status,
        headers=headers,
    )


OPENAI_PREFIX = "/v1/audio/"
# OpenAI's own codes where one exists; otherwise our err_code, lower-cased.
_OPENAI_CODES = {"INVALID_AUTH": "invalid_api_key", "PAYLOAD_TOO_LARGE": "file_too_large"}


def openai_error_response(error: ApiError, request_id: str) -> JSONResponse:
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    if error.status == 429 or error.err_code == "TOO_MANY_REQUESTS":
        kind = "rate_limit_error" if error.status == 429 else "server_error"
    headers = {"x-request-id": request_id}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    body = {
        "error": {
            "message": error.err_msg,
            "type": kind,
            "param": error.param,
            "code": _OPENAI_CODES.get(error.err_code, error.err_code.lower().replace(" ", "_")),
        }
    }
    return JSONResponse(body, status_code=error.status, headers=headers)


def render_error(path: str, error: ApiError, request_id: str) -> JSONResponse:
    """The one mapping from a domain error to a response, in the shape the route's clients read."""
    if path.startswith(OPENAI_PREFIX):
        return openai_error_response(error, request_id)
    return error_response(error, request_id)

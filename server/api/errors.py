"""Deepgram-shaped errors: `{err_code, err_msg, request_id}` plus `dg-request-id`/`dg-error`."""

from __future__ import annotations

import uuid

from starlette.responses import JSONResponse


class ApiError(Exception):
    """Raised anywhere below a route; rendered once, by the app's exception handler."""

    def __init__(
        self, status: int, err_code: str, err_msg: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(err_msg)
        self.status = status
        self.err_code = err_code
        self.err_msg = err_msg
        self.retry_after = retry_after


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

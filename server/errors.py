"""Domain errors: what went wrong, in terms of the service, never of HTTP.

Everything below `api/` (decoding, fetching, the pipeline, the engine) raises these; the API
layer maps them to Deepgram's error shape and status in one place (`server/api/errors.py`), so a
REST route, a WebSocket handshake, a callback job and the CLI all report a failure alike.
The message of every `ServiceError` is written for the client: it never carries a path, a
stack trace, or anything the client did not send.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A failure the client must be told about; `str(exc)` is safe to show. `param` names the
    request field at fault, where there is one (OpenAI's error shape reports it)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequest(ServiceError):
    """The request cannot be served as sent (bad audio, a missing piece)."""


class InvalidParameter(InvalidRequest):
    """A parameter (query string or JSON field) has a value that cannot be honoured."""


class KeytermLimitExceeded(InvalidParameter):
    """More keyterms, or longer ones, than the configured limits allow: a bad parameter (400)
    in a query string, Deepgram's `CONFIGURE_KEYTERM_LIMIT_EXCEEDED` in a stream's Configure."""


class InvalidJson(InvalidRequest):
    """A JSON body that is malformed, too deep, or not the expected shape."""


class RemoteContentError(InvalidRequest):
    """A `url=` source could not be fetched. One generic message, whatever the cause."""


class PayloadTooLarge(ServiceError):
    """More bytes, more seconds or more channels than a configured limit allows."""


class RequestTimeout(ServiceError):
    """The client sent its request (headers or body) too slowly."""


class Unauthorized(ServiceError):
    """No key, or a key that is not configured."""


class Unavailable(ServiceError):
    """The server cannot take this work now; the client should retry after `retry_after` s."""

    code = "SERVICE_UNAVAILABLE"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class Draining(Unavailable):
    code = "SERVER_DRAINING"


class Loading(Unavailable):
    code = "MODEL_LOADING"


class Busy(Unavailable):
    """Capacity (streams, decodes, queued windows, pending callbacks) is used up."""

    code = "TOO_MANY_REQUESTS"

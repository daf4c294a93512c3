"""The API layer's pure parts: one error mapping, one language rule, capped warnings, the gate.

No server: these are the functions REST, streaming, callbacks and the CLI all go through.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server import errors
from server.api.errors import error_response, header_safe, to_api_error
from server.api.gate import admit, authorize
from server.audio.decode import AudioError, AudioTooLong
from server.engine import ModelUnavailable, Overloaded
from server.language import choose_language
from server.notices import MAX_NOTICES, Notices
from server.settings import Settings


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.InvalidParameter("x"), 400, "INVALID_QUERY_PARAMETER"),
        (errors.InvalidJson("x"), 400, "INVALID_JSON"),
        (errors.RemoteContentError("x"), 400, "REMOTE_CONTENT_ERROR"),
        (AudioError("x"), 400, "Bad Request"),
        (AudioTooLong("x"), 413, "PAYLOAD_TOO_LARGE"),
        (errors.Unauthorized("x"), 401, "INVALID_AUTH"),
        (errors.RequestTimeout("x"), 408, "REQUEST_TIMEOUT"),
        (errors.Draining("x"), 503, "SERVER_DRAINING"),
        (errors.Loading("x"), 503, "MODEL_LOADING"),
        (Overloaded("queue full", 7), 503, "TOO_MANY_REQUESTS"),
        (ModelUnavailable("x"), 503, "MODEL_UNAVAILABLE"),
    ],
)
def test_one_mapping_from_domain_errors(exc, status, code):
    error = to_api_error(exc)
    assert (error.status, error.err_code) == (status, code)
    if status == 503:
        assert error.retry_after >= 1


def test_overloaded_keeps_its_retry_after():
    assert to_api_error(Overloaded("queue full", 7)).retry_after == 7


def test_error_header_never_carries_raw_input():
    hostile = errors.InvalidParameter("Invalid value: 'a\r\nSet-Cookie: x=1' and ünïcødé ☃")
    response = error_response(hostile, "rid")
    header = response.headers["dg-error"]
    assert "\r" not in header and "\n" not in header
    header.encode("ascii")  # never a 500 on non-Latin-1 text
    assert header_safe("x" * 1000) == "x" * 200


@pytest.mark.parametrize(
    ("requested", "detect", "multilingual", "expected"),
    [
        (None, False, False, "en"),
        (None, True, False, "en"),  # detection on an English-only model has one answer
        ("en-US", False, False, "en"),
        (None, False, True, "en"),  # Deepgram's default
        ("fr", False, True, "fr"),
        ("pt-BR", False, True, "pt"),
        (None, True, True, None),
        ("fr", True, True, None),  # detect wins
    ],
)
def test_language_rule(requested, detect, multilingual, expected):
    assert choose_language(requested, detect, model="m", multilingual=multilingual) == expected


@pytest.mark.parametrize(("requested", "multilingual"), [("xx", True), ("fr", False)])
def test_language_that_cannot_be_honoured_is_refused(requested, multilingual):
    with pytest.raises(errors.InvalidParameter, match="language"):
        choose_language(requested, False, model="tiny.en", multilingual=multilingual)


def test_notices_are_deduplicated_and_capped():
    notices = Notices()
    for index in range(5000):
        notices.add(f"p{index % 50}", "unknown parameter", "unknown_parameter")
        notices.add("model", "fallback", "model_fallback")
    sent = notices.as_dicts()
    assert len(sent) == MAX_NOTICES + 1
    assert sent[-1]["type"] == "warnings_truncated"
    assert len({(n["parameter"], n["type"]) for n in sent}) == len(sent)


def _conn(headers=None, *, keys=(), draining=False, ready=True, subprotocols=None):
    settings = Settings(api_key=list(keys))
    app = SimpleNamespace(
        state=SimpleNamespace(
            settings=settings, draining=draining, engine=SimpleNamespace(ready=ready)
        )
    )
    scope = {"type": "websocket" if subprotocols is not None else "http"}
    if subprotocols is not None:
        scope["subprotocols"] = subprotocols
    return SimpleNamespace(app=app, headers=headers or {}, scope=scope)


def test_gate_order_auth_then_draining_then_loading():
    with pytest.raises(errors.Unauthorized):
        admit(_conn(keys=["k"], draining=True))
    with pytest.raises(errors.Draining):
        admit(_conn({"authorization": "Token k"}, keys=["k"], draining=True, ready=False))
    with pytest.raises(errors.Loading):
        admit(_conn({"authorization": "Token k"}, keys=["k"], ready=False))
    admit(_conn({"authorization": "Token k"}, keys=["k"]))
    admit(_conn())  # auth off


def test_gate_reads_the_browser_subprotocol_only_on_websockets():
    authorize(_conn(keys=["k"], subprotocols=["token", "k"]))
    with pytest.raises(errors.Unauthorized):
        authorize(_conn(keys=["k"], subprotocols=["token", "wrong"]))
    with pytest.raises(errors.Unauthorized):
        authorize(_conn({"authorization": "Token wrong"}, keys=["k"], subprotocols=["token", "k"]))
